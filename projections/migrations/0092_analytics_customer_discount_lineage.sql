-- rerun-after-replay: re-applied after a replay swaps in a rebuilt projection schema. Idempotent.
-- A point where a customer's own discount changed (0091) says so in the lineage of MRR changes.
COMMENT ON COLUMN analytics.mrr_changes.derived_as IS 'NULL for a state Stripe sent; for a point derived from a snapshot or an update: start, trial_end, since_period_start, end, or before (the state before an update, from previous_attributes); customer_discount: the customer''s discount changed while the subscription stayed as it was (event_id is the customer''s event).';
