-- Lineage: every MRR change and every daily revenue contribution names the Stripe event that caused it,
-- so the AI layer's `explain` is a query, not a replay. Subscription versions and object states already
-- keep their event (state_event_id); the refunds and refunded levels now keep the event that first
-- showed them (earliest seen, then the smallest id: the same whatever order events arrive in).
-- Rows written before this migration have no event (NULL, shown as unknown); a replay fills them.
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

ALTER TABLE refunds ADD COLUMN IF NOT EXISTS first_seen bigint;
ALTER TABLE refunds ADD COLUMN IF NOT EXISTS event_id text;
ALTER TABLE charge_refund_levels ADD COLUMN IF NOT EXISTS event_id text;

-- refund_facts with the event behind each refund (appended column: the view's other columns stay).
CREATE OR REPLACE VIEW refund_facts AS
WITH listed AS (
    SELECT tenant_id, charge_id, sum(amount) AS total
      FROM refunds WHERE status = 'succeeded' GROUP BY tenant_id, charge_id
), steps AS (
    SELECT l.tenant_id, l.charge_id, l.amount_refunded, l.first_seen, l.event_id,
           coalesce(lag(l.amount_refunded) OVER (PARTITION BY l.tenant_id, l.charge_id ORDER BY l.amount_refunded), 0)
               AS previous,
           coalesce(s.total, 0) AS listed_total
      FROM charge_refund_levels l
      LEFT JOIN listed s ON s.tenant_id = l.tenant_id AND s.charge_id = l.charge_id
)
SELECT r.tenant_id, c.livemode, r.charge_id, r.currency, r.amount, r.created AS refunded_at, r.id AS refund_id,
       r.event_id, c.customer_id
  FROM refunds r JOIN charges c ON c.tenant_id = r.tenant_id AND c.id = r.charge_id
 WHERE r.status = 'succeeded'
UNION ALL
SELECT s.tenant_id, c.livemode, s.charge_id, c.currency,
       (s.amount_refunded - greatest(s.previous, s.listed_total))::bigint,
       to_timestamp(s.first_seen / 1000.0), NULL, s.event_id, c.customer_id
  FROM steps s JOIN charges c ON c.tenant_id = s.tenant_id AND c.id = s.charge_id
 WHERE s.amount_refunded > s.listed_total;

-- Every contribution to daily_revenue, one row each, with the event behind it: a succeeded charge's
-- captured amount (the event whose state of the charge is counted), a refund (the event that first
-- showed it), a failed charge. Summed per day, currency and kind these are daily_revenue's figures.
CREATE OR REPLACE VIEW revenue_contributions AS
SELECT tenant_id, livemode, (created AT TIME ZONE 'UTC')::date AS day, currency, 'charge'::text AS kind,
       id AS charge_id, NULL::text AS refund_id, customer_id, amount_captured AS amount,
       state_event_id AS event_id, to_timestamp(state_time / 1000.0) AS event_time
  FROM charges WHERE status = 'succeeded' AND captured
UNION ALL
SELECT f.tenant_id, f.livemode, (f.refunded_at AT TIME ZONE 'UTC')::date, f.currency, 'refund',
       f.charge_id, f.refund_id, f.customer_id, f.amount, f.event_id, f.refunded_at
  FROM refund_facts f
UNION ALL
SELECT tenant_id, livemode, (created AT TIME ZONE 'UTC')::date, currency, 'failed_charge',
       id, NULL, customer_id, amount, state_event_id, to_timestamp(state_time / 1000.0)
  FROM charges WHERE status = 'failed';

-- Each subscription's MRR at each month end (the current month: now), with the state (and so the event)
-- that set it. A state is a month's closing state from the month it starts in up to the month before its
-- successor (in last-writer-wins order) starts, so each state expands to the months it closes: one pass
-- over the versions, no months × versions comparison. A successor from now on does not count yet.
CREATE OR REPLACE VIEW subscription_mrr_by_month AS
SELECT v.tenant_id, s.livemode, m::date AS month, v.subscription_id, v.customer_id, v.currency, v.mrr,
       v.state_time, v.state_event_id
  FROM (SELECT sv.tenant_id, sv.subscription_id, sv.customer_id, sv.currency, sv.mrr, sv.state_time, sv.state_event_id,
               lead(sv.state_time) OVER (PARTITION BY sv.tenant_id, sv.subscription_id
                                         ORDER BY sv.state_time, sv.state_rank, sv.state_event_id) AS next_time
          FROM subscription_versions sv) v
  JOIN subscriptions s ON s.tenant_id = v.tenant_id AND s.id = v.subscription_id
  CROSS JOIN LATERAL generate_series(
        date_trunc('month', to_timestamp(v.state_time / 1000.0) AT TIME ZONE 'UTC'),
        CASE WHEN v.next_time IS NULL OR v.next_time >= extract(epoch FROM now()) * 1000
             THEN date_trunc('month', now() AT TIME ZONE 'UTC')
             ELSE date_trunc('month', to_timestamp(v.next_time / 1000.0) AT TIME ZONE 'UTC') - interval '1 month'
        END,
        interval '1 month') m
 WHERE v.state_time < extract(epoch FROM now()) * 1000;

-- Each customer's MRR per month end and currency, now summed from the view above (same rows as before,
-- computed in one pass; every MRR view reads this one).
CREATE OR REPLACE VIEW customer_mrr_by_month AS
SELECT tenant_id, livemode, month, customer_id, currency, sum(mrr) AS mrr
  FROM subscription_mrr_by_month
 GROUP BY tenant_id, livemode, month, customer_id, currency;

-- Every subscription whose MRR differs between two month ends, with its customer's movement that month
-- and the state that set the closing value. Per customer and currency the changes add up to
-- closing - opening of customer_mrr_movements, so per movement they add up to mrr_movements.
-- state_event_id is the Stripe event id, or an import snapshot's (snap_…), with a suffix for a point
-- derived from it (":start", ":trial_end", ":since_period_start", ":end") or the state before an
-- update read from previous_attributes (":before").
CREATE OR REPLACE VIEW subscription_mrr_changes AS
SELECT c.tenant_id, c.livemode, c.month, c.customer_id, c.currency, c.subscription_id, m.movement,
       c.opening, c.closing, c.closing - c.opening AS change, c.state_time, c.state_event_id
  FROM (SELECT tenant_id, livemode, month, customer_id, currency, subscription_id, mrr AS closing,
               coalesce(lag(mrr) OVER w, 0) AS opening, state_time, state_event_id
          FROM subscription_mrr_by_month
        WINDOW w AS (PARTITION BY tenant_id, subscription_id ORDER BY month)) c
  JOIN customer_mrr_movements m ON m.tenant_id = c.tenant_id AND m.livemode = c.livemode AND m.month = c.month
                               AND m.customer_id = c.customer_id AND m.currency = c.currency
 WHERE c.closing <> c.opening AND m.movement IS NOT NULL;

-- Read through analytics_owner like the other aggregate views (0005), so row-level security applies.
ALTER VIEW revenue_contributions OWNER TO analytics_owner;
ALTER VIEW subscription_mrr_by_month OWNER TO analytics_owner;
ALTER VIEW subscription_mrr_changes OWNER TO analytics_owner;
