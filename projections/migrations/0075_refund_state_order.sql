-- A refund's stored state (amount, status) is its newest, by the order of the charge states that listed it —
-- (state time, rank, event id), the charges' own last-writer-wins order — not the last to arrive: a refund listed
-- "pending" by an older charge event and "succeeded" by a newer one stays succeeded whatever order the events
-- come in, and however often (a redelivery after its dedupe row was pruned). Rows from before have no order (NULL)
-- and yield to the next state seen.
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

ALTER TABLE refunds ADD COLUMN IF NOT EXISTS state_time bigint;
ALTER TABLE refunds ADD COLUMN IF NOT EXISTS state_rank bigint;
ALTER TABLE refunds ADD COLUMN IF NOT EXISTS state_event_id text;
