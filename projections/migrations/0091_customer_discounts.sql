-- A customer's own discount (`customer.discount`) reduces the MRR of each of its subscriptions that has no discounts
-- of its own (Stripe: a subscription's discounts, "if not specified or empty, inherit the discount from the
-- subscription's customer"). The customer's discount has its own history, which the subscription's events do not
-- show: `customer_discounts` keeps it (one row per customer state; coupon NULL when it has no forever coupon), and
-- each subscription version keeps what such a discount would reduce (`customer_discount_basis`, NULL when none can:
-- not in an MRR status, or discounts of its own). The projector joins the two per customer (the versions' `mrr`
-- with the discount in effect at their time, `customer_discount_event_id` the customer state whose coupon reduced it),
-- and adds a version where the discount changed between two of the subscription's own
-- (`derived_from_customer_discount`; its `customer_discount_event_id` the customer state that changed it).
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;
CREATE TABLE customer_discounts (
    tenant_id text NOT NULL, customer_id text NOT NULL,
    state_time bigint NOT NULL, state_rank bigint NOT NULL, state_event_id text NOT NULL,
    coupon jsonb,
    PRIMARY KEY (tenant_id, customer_id, state_time, state_rank, state_event_id)
);
ALTER TABLE subscription_versions
    ADD COLUMN customer_discount_basis jsonb,
    ADD COLUMN customer_discount_event_id text,
    ADD COLUMN derived_from_customer_discount boolean NOT NULL DEFAULT false;
CREATE INDEX subscription_versions_by_customer ON subscription_versions (tenant_id, customer_id);
-- Versions projected before: whether a customer's discount could reduce them (no discounts of their own) was not
-- kept. Under a customer's forever coupon they keep the MRR they were projected with and a health row names them,
-- until the tenant is replayed; under none they count as they are.
UPDATE subscription_versions SET customer_discount_basis = '{"unknown": true}' WHERE status IN ('active', 'past_due');
-- Customers projected before with a discount that may last for ever: no history of it was kept, so their
-- subscriptions' MRR does not count it until the tenant is replayed. Health says so, once per customer state.
INSERT INTO public.dead_lettered_events (tenant_id, topic, partition, "offset", event_id, reason, message)
SELECT c.tenant_id, 'projection-customer-discounts', -1,
       hashtextextended(c.id || ':' || c.state_event_id, 0) & 9223372036854775807, c.state_event_id,
       'UnreadableObjectError',
       'customer ' || c.id || ': discount projected before customers'' discounts were read: its subscriptions'' '
       || 'MRR does not count it until the tenant is replayed (ingestor replay --tenant)'
  FROM customers c
 WHERE json_typeof(c.data -> 'discount') = 'object'
   AND coalesce(c.data -> 'discount' -> 'coupon' ->> 'duration', 'forever') = 'forever'
ON CONFLICT DO NOTHING;
-- Like every projection table: a tenant's readers see its rows only.
ALTER TABLE customer_discounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON customer_discounts USING (tenant_id = (SELECT analytics.current_tenant()));
GRANT SELECT ON customer_discounts TO analytics_owner;
