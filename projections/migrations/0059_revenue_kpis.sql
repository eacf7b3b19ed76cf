-- The metrics revenue teams expect beside MRR: ARR, ARPA, MRR retention (monthly and trailing 12 months),
-- quick ratio, LTV, trial conversion, signup cohorts and failed-payment recovery. Definitions: the catalog
-- (docs/metrics.md), which names the alternatives other products use. All derived at read time from the
-- same state and history rows as MRR, so they agree with it by construction.
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

-- Customers' MRR at each month end beside their MRR twelve months earlier (those paying then). A customer
-- has a row in every month from their first subscription state on, so the row twelve back is lag(12).
CREATE OR REPLACE VIEW mrr_retention_12m AS
SELECT tenant_id, livemode, month, currency,
       sum(then_mrr) AS opening_mrr, sum(mrr) AS retained_mrr, sum(least(mrr, then_mrr)) AS gross_retained_mrr
  FROM (SELECT tenant_id, livemode, month, currency, mrr,
               lag(mrr, 12) OVER (PARTITION BY tenant_id, livemode, customer_id, currency ORDER BY month) AS then_mrr
          FROM customer_mrr_by_month) history
 WHERE then_mrr > 0
 GROUP BY tenant_id, livemode, month, currency;

-- Per month end and currency: MRR, ARR, ARPA, retention, quick ratio, MRR churn rate and LTV.
CREATE OR REPLACE VIEW revenue_kpis AS
SELECT b.tenant_id, b.livemode, b.month, b.currency, b.mrr, b.mrr * 12 AS arr, b.subscribers,
       round(b.mrr / nullif(b.subscribers, 0), 6) AS arpa,
       m.opening_mrr, m.new_mrr, m.expansion_mrr, m.contraction_mrr, m.churned_mrr, m.reactivation_mrr,
       round((m.opening_mrr + m.contraction_mrr + m.churned_mrr) / nullif(m.opening_mrr, 0), 6) AS gross_mrr_retention,
       round((m.opening_mrr + m.expansion_mrr + m.contraction_mrr + m.churned_mrr) / nullif(m.opening_mrr, 0), 6)
           AS net_mrr_retention,
       round((m.new_mrr + m.expansion_mrr + m.reactivation_mrr) / nullif(-(m.contraction_mrr + m.churned_mrr), 0), 6)
           AS quick_ratio,
       round(-(m.contraction_mrr + m.churned_mrr) / nullif(m.opening_mrr, 0), 6) AS mrr_churn_rate,
       round((b.mrr / nullif(b.subscribers, 0)) / nullif(-(m.contraction_mrr + m.churned_mrr) / nullif(m.opening_mrr, 0), 0), 6)
           AS ltv,
       t.opening_mrr AS opening_mrr_12m,
       round(t.gross_retained_mrr / nullif(t.opening_mrr, 0), 6) AS gross_mrr_retention_12m,
       round(t.retained_mrr / nullif(t.opening_mrr, 0), 6) AS net_mrr_retention_12m
  FROM mrr_by_month b
  JOIN mrr_movements m ON m.tenant_id = b.tenant_id AND m.livemode = b.livemode AND m.month = b.month
                      AND m.currency = b.currency
  LEFT JOIN mrr_retention_12m t ON t.tenant_id = b.tenant_id AND t.livemode = b.livemode AND t.month = b.month
                               AND t.currency = b.currency;

-- Trials by the month they started (Stripe's trial_start; the start date before it had one): started, converted (active — paid — at or after the trial's end),
-- still trialing (its current status says so: Stripe's word, not our clock), and the conversion rate over
-- trials that have ended.
CREATE OR REPLACE VIEW trial_conversions AS
SELECT tenant_id, livemode, date_trunc('month', trial_start AT TIME ZONE 'UTC')::date AS month,
       count(*) AS trial_starts,
       count(*) FILTER (WHERE converted) AS converted,
       count(*) FILTER (WHERE NOT converted AND trialing) AS still_trialing,
       round(count(*) FILTER (WHERE converted)::numeric
             / nullif(count(*) FILTER (WHERE converted OR NOT trialing), 0), 6) AS trial_conversion_rate
  FROM (SELECT s.tenant_id, s.livemode, s.status = 'trialing' AS trialing,
               coalesce(CASE WHEN s.data ->> 'trial_start' ~ '^[0-9]{1,12}$' THEN to_timestamp((s.data ->> 'trial_start')::bigint) END,
                        s.start_date, s.created) AS trial_start,
               EXISTS (SELECT 1 FROM subscription_versions v
                        WHERE v.tenant_id = s.tenant_id AND v.subscription_id = s.id AND v.status = 'active'
                          AND v.state_time >= extract(epoch FROM s.trial_end) * 1000) AS converted
          FROM subscriptions s
         WHERE s.trial_end IS NOT NULL AND s.trial_end > coalesce(s.start_date, s.created)) t
 GROUP BY tenant_id, livemode, date_trunc('month', trial_start AT TIME ZONE 'UTC')::date;

-- Signup cohorts: a customer's cohort is the month they first had MRR (any currency).
CREATE OR REPLACE VIEW customer_cohorts AS
SELECT tenant_id, livemode, customer_id, min(month) AS cohort
  FROM customer_mrr_by_month WHERE mrr > 0
 GROUP BY tenant_id, livemode, customer_id;

-- Each cohort's customers still paying (MRR > 0 in any currency) at each later month end.
CREATE OR REPLACE VIEW cohort_logo_retention AS
SELECT c.tenant_id, c.livemode, c.cohort, p.month,
       ((extract(year FROM p.month) - extract(year FROM c.cohort)) * 12
        + extract(month FROM p.month) - extract(month FROM c.cohort))::int AS months_since,
       count(DISTINCT c.customer_id) AS customers,
       count(DISTINCT c.customer_id) FILTER (WHERE p.paying) AS retained,
       round(count(DISTINCT c.customer_id) FILTER (WHERE p.paying)::numeric / count(DISTINCT c.customer_id), 6)
           AS logo_retention
  FROM customer_cohorts c
  JOIN (SELECT tenant_id, livemode, customer_id, month, bool_or(mrr > 0) AS paying
          FROM customer_mrr_by_month GROUP BY tenant_id, livemode, customer_id, month) p
    ON p.tenant_id = c.tenant_id AND p.livemode = c.livemode AND p.customer_id = c.customer_id AND p.month >= c.cohort
 GROUP BY c.tenant_id, c.livemode, c.cohort, p.month;

-- Each cohort's MRR per currency at each later month end, against its MRR in its first month.
CREATE OR REPLACE VIEW cohort_mrr_retention AS
SELECT c.tenant_id, c.livemode, c.cohort, p.month,
       ((extract(year FROM p.month) - extract(year FROM c.cohort)) * 12
        + extract(month FROM p.month) - extract(month FROM c.cohort))::int AS months_since,
       p.currency, sum(s.mrr) AS starting_mrr, sum(p.mrr) AS mrr,
       round(sum(p.mrr) / nullif(sum(s.mrr), 0), 6) AS mrr_retention
  FROM customer_cohorts c
  JOIN customer_mrr_by_month p ON p.tenant_id = c.tenant_id AND p.livemode = c.livemode
                              AND p.customer_id = c.customer_id AND p.month >= c.cohort
  LEFT JOIN customer_mrr_by_month s ON s.tenant_id = c.tenant_id AND s.livemode = c.livemode
                                   AND s.customer_id = c.customer_id AND s.currency = p.currency AND s.month = c.cohort
 GROUP BY c.tenant_id, c.livemode, c.cohort, p.month, p.currency;

-- Invoices whose payment failed at least once, by month of creation and currency, and how many of them
-- were paid later (recovered). A failed attempt: more than one attempt, or attempted and still open or
-- uncollectible. Read from `attempt_count`/`attempted`, which every API version since 2015 has.
CREATE OR REPLACE VIEW failed_payment_recovery AS
SELECT tenant_id, livemode, date_trunc('month', created AT TIME ZONE 'UTC')::date AS month, currency,
       count(*) AS failed_invoices,
       count(*) FILTER (WHERE status = 'paid') AS recovered_invoices,
       sum(amount_due)::bigint AS failed_amount,
       coalesce(sum(amount_paid) FILTER (WHERE status = 'paid'), 0)::bigint AS recovered_amount,
       round(count(*) FILTER (WHERE status = 'paid')::numeric / count(*), 6) AS recovery_rate
  FROM invoices
 WHERE NOT deleted AND amount_due > 0
   AND (CASE WHEN data ->> 'attempt_count' ~ '^[0-9]{1,9}$' THEN (data ->> 'attempt_count')::int ELSE 0 END > 1
        OR (data ->> 'attempted' = 'true' AND status IN ('open', 'uncollectible')))
 GROUP BY tenant_id, livemode, date_trunc('month', created AT TIME ZONE 'UTC')::date, currency;

ALTER VIEW mrr_retention_12m OWNER TO analytics_owner;
ALTER VIEW revenue_kpis OWNER TO analytics_owner;
ALTER VIEW trial_conversions OWNER TO analytics_owner;
ALTER VIEW customer_cohorts OWNER TO analytics_owner;
ALTER VIEW cohort_logo_retention OWNER TO analytics_owner;
ALTER VIEW cohort_mrr_retention OWNER TO analytics_owner;
ALTER VIEW failed_payment_recovery OWNER TO analytics_owner;
