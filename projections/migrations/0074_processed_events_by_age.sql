-- The dedupe table is pruned by age (projections/projector/dedupe_pruning.py): per tenant, oldest first.
-- Led by tenant_id like every index here, so the table can be distributed by tenant.
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

CREATE INDEX IF NOT EXISTS processed_events_by_age ON processed_events (tenant_id, applied_at);
