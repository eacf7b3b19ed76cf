-- Refunds Stripe does not list (a charge.refunded webhook since 2022-11-15 carries no refund objects) are read
-- from the charge's amount_refunded, state by state in time order, not by level. Levels kept the first day a
-- level was seen: a refund that failed (Stripe takes it back out of amount_refunded) followed by a new one of
-- the same amount was counted on the failed refund's day. Now what counts on a state's day is what stayed
-- refunded from that state on: the least amount_refunded of that state and every later one (a suffix
-- minimum), so a level dropped and reached again counts from when it was reached again, and a refund that
-- failed counts nowhere. As before, the total is the charge's newest amount_refunded, beyond what its
-- listed refunds hold, and states may arrive in any order.
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

-- Each charge state's amount_refunded (zero too: a drop matters), at its state time and rank.
CREATE TABLE IF NOT EXISTS charge_refund_states (
    tenant_id text NOT NULL, charge_id text NOT NULL,
    state_time bigint NOT NULL, state_rank bigint NOT NULL, amount_refunded bigint NOT NULL,
    event_id text NOT NULL,
    PRIMARY KEY (tenant_id, charge_id, state_time, state_rank, amount_refunded)
);
ALTER TABLE charge_refund_states ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON charge_refund_states;
CREATE POLICY tenant_isolation ON charge_refund_states USING (tenant_id = (SELECT analytics.current_tenant()));
GRANT SELECT ON charge_refund_states TO analytics_owner;

-- What was projected before: each level at the first time it was seen, and each charge's newest state.
INSERT INTO charge_refund_states (tenant_id, charge_id, state_time, state_rank, amount_refunded, event_id)
SELECT tenant_id, charge_id, first_seen, 0, amount_refunded, coalesce(event_id, '')
  FROM charge_refund_levels
ON CONFLICT DO NOTHING;
INSERT INTO charge_refund_states (tenant_id, charge_id, state_time, state_rank, amount_refunded, event_id)
SELECT tenant_id, id, state_time, state_rank, amount_refunded, state_event_id
  FROM charges
ON CONFLICT DO NOTHING;

CREATE OR REPLACE VIEW refund_facts AS
WITH listed AS (
    SELECT tenant_id, charge_id, sum(amount) AS total
      FROM refunds WHERE status = 'succeeded' GROUP BY tenant_id, charge_id
), stayed AS (  -- per state: the refunded amount that stayed from it on, and beyond the listed refunds
    SELECT s.tenant_id, s.charge_id, s.state_time, s.state_rank, s.event_id,
           greatest(min(s.amount_refunded) OVER (PARTITION BY s.tenant_id, s.charge_id
                                                  ORDER BY s.state_time DESC, s.state_rank DESC, s.amount_refunded DESC
                                                  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                    - coalesce(l.total, 0), 0) AS unlisted
      FROM charge_refund_states s
      LEFT JOIN listed l ON l.tenant_id = s.tenant_id AND l.charge_id = s.charge_id
), steps AS (
    SELECT tenant_id, charge_id, state_time, event_id,
           unlisted - coalesce(lag(unlisted) OVER (PARTITION BY tenant_id, charge_id
                                                   ORDER BY state_time, state_rank, unlisted), 0) AS amount
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
