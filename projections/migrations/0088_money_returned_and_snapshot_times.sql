-- A charge's amount_refunded is the money returned to the customer (schemas/stripe_objects.py): before API version
-- 2025-03-31.basil Stripe counted an authorisation cancelled, expired or captured in part as refunded, which the
-- projection now leaves out; and an import snapshot is dated two seconds before the request that read it. The views'
-- descriptions say so (what the AI layer reads of them). Rows projected before keep what they were written with
-- until the tenant's events are replayed.
SET LOCAL ROLE analytics_owner;
COMMENT ON COLUMN analytics.charges.amount_refunded IS 'Money refunded to the customer so far, minor units; never an authorisation released (cancelled, expired, or the part of a partial capture not captured).';
COMMENT ON COLUMN analytics.revenue_contributions.event_time IS 'When that event happened (for an import snapshot, two seconds before the request that read it).';
RESET ROLE;
