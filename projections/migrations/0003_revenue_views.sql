-- Revenue aggregates, derived at read time from the current state and the history rows, so any
-- delivery order and any number of duplicates give the same figures. Definitions are in
-- docs/metrics.md (generated from projections/metrics.py, which holds the same text).
SET LOCAL search_path TO projection;

-- Every refund with its date: the refunds Stripe listed on a charge; for a charge whose refunds
-- were not listed, each step up of its refunded amount, dated when that amount was first seen.
CREATE VIEW refund_facts AS
SELECT r.tenant_id, c.livemode, r.charge_id, r.currency, r.amount, r.created AS refunded_at
  FROM refunds r JOIN charges c ON c.tenant_id = r.tenant_id AND c.id = r.charge_id
 WHERE r.status = 'succeeded'
UNION ALL
SELECT l.tenant_id, c.livemode, l.charge_id, c.currency,
       l.amount_refunded - coalesce(lag(l.amount_refunded) OVER steps, 0),
       to_timestamp(l.first_seen / 1000.0)
  FROM charge_refund_levels l JOIN charges c ON c.tenant_id = l.tenant_id AND c.id = l.charge_id
 WHERE NOT EXISTS (SELECT 1 FROM refunds r WHERE r.tenant_id = l.tenant_id AND r.charge_id = l.charge_id)
WINDOW steps AS (PARTITION BY l.tenant_id, l.charge_id ORDER BY l.amount_refunded);

-- Daily gross (captured amount of succeeded charges, by the charge's UTC day), refunded (by the
-- refund's UTC day), net = gross - refunded, and failed payments (count, amount) by UTC day.
CREATE VIEW daily_revenue AS
SELECT tenant_id, livemode, day, currency,
       sum(gross)::bigint AS gross, sum(refunded)::bigint AS refunded, (sum(gross) - sum(refunded))::bigint AS net,
       sum(failed_count)::bigint AS failed_count, sum(failed_amount)::bigint AS failed_amount
  FROM (
        SELECT tenant_id, livemode, (created AT TIME ZONE 'UTC')::date AS day, currency,
               amount_captured AS gross, 0 AS refunded, 0 AS failed_count, 0 AS failed_amount
          FROM charges WHERE status = 'succeeded' AND captured
        UNION ALL
        SELECT tenant_id, livemode, (refunded_at AT TIME ZONE 'UTC')::date, currency, 0, amount, 0, 0
          FROM refund_facts
        UNION ALL
        SELECT tenant_id, livemode, (created AT TIME ZONE 'UTC')::date, currency, 0, 0, 1, amount
          FROM charges WHERE status = 'failed'
       ) facts
 GROUP BY tenant_id, livemode, day, currency;

-- Month ends per tenant, from the month of its first subscription state to the current month.
-- A month's figures are as of its last instant (the current month's: as of now).
CREATE VIEW subscription_months AS
SELECT b.tenant_id, m::date AS month,
       (extract(epoch FROM least((m + interval '1 month') AT TIME ZONE 'UTC', now())) * 1000)::bigint AS end_ms
  FROM (SELECT tenant_id, date_trunc('month', to_timestamp(min(state_time) / 1000.0) AT TIME ZONE 'UTC') AS first_month
          FROM subscription_versions GROUP BY tenant_id) b,
       generate_series(b.first_month, date_trunc('month', now() AT TIME ZONE 'UTC'), interval '1 month') m;

-- Each customer's MRR at each month end, per currency: the sum over their subscriptions of the
-- MRR of each subscription's newest state before the month's end.
CREATE VIEW customer_mrr_by_month AS
SELECT m.tenant_id, s.livemode, m.month, v.customer_id, v.currency, sum(v.mrr) AS mrr
  FROM subscription_months m
  JOIN LATERAL (
        SELECT DISTINCT ON (sv.subscription_id) sv.subscription_id, sv.customer_id, sv.currency, sv.mrr
          FROM subscription_versions sv
         WHERE sv.tenant_id = m.tenant_id AND sv.state_time < m.end_ms
         ORDER BY sv.subscription_id, sv.state_time DESC, sv.state_rank DESC, sv.state_event_id DESC
       ) v ON true
  JOIN subscriptions s ON s.tenant_id = m.tenant_id AND s.id = v.subscription_id
 GROUP BY m.tenant_id, s.livemode, m.month, v.customer_id, v.currency;

-- MRR per month end and currency, with the number of paying customers in that currency.
CREATE VIEW mrr_by_month AS
SELECT tenant_id, livemode, month, currency, sum(mrr) AS mrr, count(*) FILTER (WHERE mrr > 0) AS subscribers
  FROM customer_mrr_by_month
 GROUP BY tenant_id, livemode, month, currency;

-- Per customer and month: MRR at the previous month end (opening) and this one (closing), and
-- which movement the change is. Customer-level, so cancelling one of two subscriptions is a
-- contraction and cancelling the last one is churn.
CREATE VIEW customer_mrr_movements AS
SELECT tenant_id, livemode, month, customer_id, currency, opening, closing,
       CASE WHEN opening = 0 AND closing > 0 AND NOT had_before THEN 'new'
            WHEN opening = 0 AND closing > 0 THEN 'reactivation'
            WHEN opening > 0 AND closing = 0 THEN 'churn'
            WHEN closing > opening THEN 'expansion'
            WHEN closing < opening THEN 'contraction'
       END AS movement
  FROM (SELECT tenant_id, livemode, month, customer_id, currency, mrr AS closing,
               coalesce(lag(mrr) OVER w, 0) AS opening,
               coalesce(bool_or(mrr > 0) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), false) AS had_before
          FROM customer_mrr_by_month
        WINDOW w AS (PARTITION BY tenant_id, livemode, customer_id, currency ORDER BY month)) x;

-- Monthly MRR movements per currency: opening + new + expansion + contraction + churn + reactivation = closing.
CREATE VIEW mrr_movements AS
SELECT tenant_id, livemode, month, currency,
       sum(opening) AS opening_mrr,
       coalesce(sum(closing - opening) FILTER (WHERE movement = 'new'), 0) AS new_mrr,
       coalesce(sum(closing - opening) FILTER (WHERE movement = 'expansion'), 0) AS expansion_mrr,
       coalesce(sum(closing - opening) FILTER (WHERE movement = 'contraction'), 0) AS contraction_mrr,
       coalesce(sum(closing - opening) FILTER (WHERE movement = 'churn'), 0) AS churned_mrr,
       coalesce(sum(closing - opening) FILTER (WHERE movement = 'reactivation'), 0) AS reactivation_mrr,
       sum(closing) AS closing_mrr
  FROM customer_mrr_movements
 GROUP BY tenant_id, livemode, month, currency;

-- Subscribers (customers with MRR > 0 in any currency) per month: active at the month end, new,
-- churned, and subscriber churn rate = churned / (active at the start + new), denominators kept.
-- Revenue churn rate = (churned + contraction MRR) / opening MRR, per currency.
CREATE VIEW subscriber_churn AS
SELECT tenant_id, livemode, month,
       count(*) FILTER (WHERE closing_any) AS active_end,
       count(*) FILTER (WHERE opening_any) AS active_start,
       count(*) FILTER (WHERE closing_any AND NOT opening_any) AS new_subscribers,
       count(*) FILTER (WHERE opening_any AND NOT closing_any) AS churned_subscribers,
       count(*) FILTER (WHERE opening_any) + count(*) FILTER (WHERE closing_any AND NOT opening_any) AS churn_denominator,
       round(count(*) FILTER (WHERE opening_any AND NOT closing_any)::numeric
             / nullif(count(*) FILTER (WHERE opening_any) + count(*) FILTER (WHERE closing_any AND NOT opening_any), 0), 6)
             AS subscriber_churn_rate
  FROM (SELECT tenant_id, livemode, month, customer_id, bool_or(opening > 0) AS opening_any, bool_or(closing > 0) AS closing_any
          FROM customer_mrr_movements GROUP BY tenant_id, livemode, month, customer_id) c
 GROUP BY tenant_id, livemode, month;

CREATE VIEW revenue_churn AS
SELECT tenant_id, livemode, month, currency, opening_mrr, -churned_mrr AS churned_mrr, -contraction_mrr AS contraction_mrr,
       round((-churned_mrr - contraction_mrr) / nullif(opening_mrr, 0), 6) AS revenue_churn_rate
  FROM mrr_movements;

-- Invoices per month of creation and currency: billed (finalized: open, paid, uncollectible),
-- paid, outstanding (still open) and uncollectible amounts. Drafts, voided and deleted are out.
CREATE VIEW invoice_summary AS
SELECT tenant_id, livemode, date_trunc('month', created AT TIME ZONE 'UTC')::date AS month, currency,
       count(*) AS invoices,
       sum(total)::bigint AS billed,
       sum(amount_paid)::bigint AS paid,
       coalesce(sum(amount_remaining) FILTER (WHERE status = 'open'), 0)::bigint AS outstanding,
       coalesce(sum(amount_remaining) FILTER (WHERE status = 'uncollectible'), 0)::bigint AS uncollectible
  FROM invoices
 WHERE NOT deleted AND status IN ('open', 'paid', 'uncollectible')
 GROUP BY tenant_id, livemode, date_trunc('month', created AT TIME ZONE 'UTC')::date, currency;
