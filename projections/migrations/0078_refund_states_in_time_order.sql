-- Refunds Stripe does not list (a charge.refunded webhook since 2022-11-15 carries no refund objects) are read
-- from the charge's amount_refunded, state by state in time order, not by level. Levels kept the first day a
-- level was seen: a refund that failed (Stripe takes it back out of amount_refunded) followed by a new one of
-- the same amount was counted on the failed refund's day. Now what counts on a state's day is what stayed
-- refunded from that state on: the least amount_refunded of that state and every later one (a suffix
-- minimum). A drop is taken from the latest increases, so a refund that failed, when it was the latest,
-- counts on no day, and a level reached again counts from when it was reached again. As before, only what
-- the charge's listed succeeded refunds do not hold is counted this way, the total is the charge's newest
-- amount_refunded, and states may arrive in any order. The charge's newest state (in `charges`) is always
-- one of the states, so a charge written by a projector older than this migration still counts in full.
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

-- Each charge state's amount_refunded (zero too: a drop matters), at its state time and rank; the event is
-- the smallest id among the events of that state (lineage, whatever order they arrive in).
CREATE TABLE IF NOT EXISTS charge_refund_states (
    tenant_id text NOT NULL, charge_id text NOT NULL,
    state_time bigint NOT NULL, state_rank bigint NOT NULL, amount_refunded bigint NOT NULL,
    event_id text,
    PRIMARY KEY (tenant_id, charge_id, state_time, state_rank, amount_refunded)
);
-- The view dates refunds of charges refunded at some state only: found without reading every state.
CREATE INDEX IF NOT EXISTS charge_refund_states_refunded ON charge_refund_states (tenant_id, charge_id)
    WHERE amount_refunded > 0;
ALTER TABLE charge_refund_states ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON charge_refund_states;
CREATE POLICY tenant_isolation ON charge_refund_states USING (tenant_id = (SELECT analytics.current_tenant()));
GRANT SELECT ON charge_refund_states TO analytics_owner;

-- What was projected before: each level at the first time it was seen (charges' newest states are read from
-- `charges` by the view).
INSERT INTO charge_refund_states (tenant_id, charge_id, state_time, state_rank, amount_refunded, event_id)
SELECT tenant_id, charge_id, first_seen, 0, amount_refunded, event_id
  FROM charge_refund_levels
ON CONFLICT DO NOTHING;

CREATE OR REPLACE VIEW refund_facts AS
WITH listed AS (
    SELECT tenant_id, charge_id, sum(amount) AS total
      FROM refunds WHERE status = 'succeeded' GROUP BY tenant_id, charge_id
), refunded AS (  -- charges with a refunded amount at some state: the only ones with refunds to date
    SELECT tenant_id, charge_id FROM charge_refund_states WHERE amount_refunded > 0
    UNION
    SELECT tenant_id, id FROM charges WHERE amount_refunded > 0
), states AS (
    SELECT s.tenant_id, s.charge_id, s.state_time, s.state_rank, s.amount_refunded, s.event_id
      FROM charge_refund_states s
      JOIN refunded r ON r.tenant_id = s.tenant_id AND r.charge_id = s.charge_id
    UNION ALL
    SELECT c.tenant_id, c.id, c.state_time, c.state_rank, c.amount_refunded, c.state_event_id
      FROM charges c
      JOIN refunded r ON r.tenant_id = c.tenant_id AND r.charge_id = c.id
), stayed AS (  -- per state: the refunded amount that stayed from it on, beyond the listed refunds
    SELECT s.tenant_id, s.charge_id, s.state_time, s.state_rank, s.event_id,
           greatest(min(s.amount_refunded) OVER (PARTITION BY s.tenant_id, s.charge_id
                                                  ORDER BY s.state_time DESC, s.state_rank DESC, s.amount_refunded DESC
                                                  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                    - coalesce(l.total, 0), 0) AS unlisted
      FROM states s
      LEFT JOIN listed l ON l.tenant_id = s.tenant_id AND l.charge_id = s.charge_id
), steps AS (  -- a state seen twice (stored, and as the charge's newest) steps once, with the smaller event id
    SELECT tenant_id, charge_id, state_time, event_id,
           unlisted - coalesce(lag(unlisted) OVER (PARTITION BY tenant_id, charge_id
                                                   ORDER BY state_time, state_rank, unlisted, event_id), 0) AS amount
      FROM stayed
)
SELECT r.tenant_id, c.livemode, r.charge_id, r.currency, r.amount, r.created AS refunded_at, r.id AS refund_id,
       r.event_id, c.customer_id
  FROM refunds r JOIN charges c ON c.tenant_id = r.tenant_id AND c.id = r.charge_id
 WHERE r.status = 'succeeded'
UNION ALL
SELECT s.tenant_id, c.livemode, s.charge_id, c.currency, s.amount::bigint,
       to_timestamp(s.state_time / 1000.0), NULL, s.event_id, c.customer_id
  FROM steps s JOIN charges c ON c.tenant_id = s.tenant_id AND c.id = s.charge_id
 WHERE s.amount > 0;
