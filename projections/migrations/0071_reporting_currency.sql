-- Revenue in one reporting currency, from the rates the operator loads (fx_rates, 0070). Nothing is converted
-- without a rate: a month (or day) whose figures need a rate that is missing shows which currencies lack one
-- (missing_rates) and NULL amounts, never a partial total.
--
-- A month's amounts are converted at the month-end rate: the latest rate on or before the tenant's last day of
-- the month (today for the current month), at most 31 days older. Movements use the month's rate too, the opening
-- MRR the previous month's (so it equals last month's converted closing MRR), and what remains is the FX effect:
--   opening + new + expansion + contraction + churn + reactivation + fx_effect = closing   (exactly)
-- — a currency's MRR that did not move still changes the total when its rate did, and that is not a movement
-- (as ChartMogul and Stripe's Billing analytics show it). A day's revenue uses that day's rate.
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

-- The factor that turns minor units of `currency` into minor units of `reporting` at the rate in force on `as_of`
-- (NULL without one), with Stripe's decimals per currency (as projections/read/money.py: zero-decimal,
-- three-decimal, else two). Runs as analytics_owner with a fixed search_path, so a reader role needs no access to
-- fx_rates and the body resolves the same names whatever the caller's path or the schema a replay builds.
CREATE OR REPLACE FUNCTION fx_factor(currency text, reporting text, as_of date) RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT CASE WHEN currency = reporting THEN 1::numeric
                ELSE (SELECT r.rate FROM public.fx_rates r
                       WHERE r.reporting_currency = reporting AND r.currency = fx_factor.currency
                         AND r.rate_date <= as_of AND r.rate_date >= as_of - 31
                       ORDER BY r.rate_date DESC LIMIT 1)
                     * power(10::numeric, d.reporting_decimals - d.currency_decimals) END
      FROM (SELECT CASE WHEN reporting IN ('bif', 'clp', 'djf', 'gnf', 'jpy', 'kmf', 'krw', 'mga', 'pyg', 'rwf', 'ugx', 'vnd', 'vuv', 'xaf', 'xof', 'xpf') THEN 0
                        WHEN reporting IN ('bhd', 'jod', 'kwd', 'omr', 'tnd') THEN 3 ELSE 2 END AS reporting_decimals,
                   CASE WHEN currency IN ('bif', 'clp', 'djf', 'gnf', 'jpy', 'kmf', 'krw', 'mga', 'pyg', 'rwf', 'ugx', 'vnd', 'vuv', 'xaf', 'xof', 'xpf') THEN 0
                        WHEN currency IN ('bhd', 'jod', 'kwd', 'omr', 'tnd') THEN 3 ELSE 2 END AS currency_decimals) d
$$;
ALTER FUNCTION fx_factor(text, text, date) OWNER TO analytics_owner;

CREATE OR REPLACE VIEW mrr_reporting AS
WITH rated AS (
    SELECT mv.tenant_id, mv.livemode, mv.month, mv.currency, t.reporting_currency,
           mv.opening_mrr, mv.new_mrr, mv.expansion_mrr, mv.contraction_mrr, mv.churned_mrr, mv.reactivation_mrr,
           mv.closing_mrr,
           fx_factor(mv.currency, t.reporting_currency,
                     least((mv.month + interval '1 month' - interval '1 day')::date,
                           (now() AT TIME ZONE coalesce(z.time_zone, 'UTC'))::date)) AS factor,
           fx_factor(mv.currency, t.reporting_currency, (mv.month - interval '1 day')::date) AS opening_factor
      FROM mrr_movements mv
      CROSS JOIN (SELECT DISTINCT reporting_currency FROM public.fx_rates) t
      LEFT JOIN public.tenants z ON z.tenant_id = mv.tenant_id
), summed AS (
    SELECT tenant_id, livemode, month, reporting_currency,
           array_agg(currency ORDER BY currency) AS currencies,
           coalesce(array_agg(currency ORDER BY currency) FILTER (
               WHERE (factor IS NULL AND (closing_mrr <> 0 OR new_mrr <> 0 OR expansion_mrr <> 0 OR contraction_mrr <> 0
                                          OR churned_mrr <> 0 OR reactivation_mrr <> 0))
                  OR (opening_factor IS NULL AND opening_mrr <> 0)), '{}') AS missing_rates,
           round(sum(opening_mrr * opening_factor) FILTER (WHERE opening_mrr <> 0), 6) AS opening_mrr,
           round(sum(new_mrr * factor) FILTER (WHERE new_mrr <> 0), 6) AS new_mrr,
           round(sum(expansion_mrr * factor) FILTER (WHERE expansion_mrr <> 0), 6) AS expansion_mrr,
           round(sum(contraction_mrr * factor) FILTER (WHERE contraction_mrr <> 0), 6) AS contraction_mrr,
           round(sum(churned_mrr * factor) FILTER (WHERE churned_mrr <> 0), 6) AS churned_mrr,
           round(sum(reactivation_mrr * factor) FILTER (WHERE reactivation_mrr <> 0), 6) AS reactivation_mrr,
           round(sum(closing_mrr * factor) FILTER (WHERE closing_mrr <> 0), 6) AS closing_mrr
      FROM rated
     GROUP BY tenant_id, livemode, month, reporting_currency
), amounts AS (
    SELECT s.tenant_id, s.livemode, s.month, s.reporting_currency, s.currencies, s.missing_rates,
           CASE WHEN s.missing_rates = '{}' THEN coalesce(s.opening_mrr, 0) END AS opening_mrr,
           CASE WHEN s.missing_rates = '{}' THEN coalesce(s.new_mrr, 0) END AS new_mrr,
           CASE WHEN s.missing_rates = '{}' THEN coalesce(s.expansion_mrr, 0) END AS expansion_mrr,
           CASE WHEN s.missing_rates = '{}' THEN coalesce(s.contraction_mrr, 0) END AS contraction_mrr,
           CASE WHEN s.missing_rates = '{}' THEN coalesce(s.churned_mrr, 0) END AS churned_mrr,
           CASE WHEN s.missing_rates = '{}' THEN coalesce(s.reactivation_mrr, 0) END AS reactivation_mrr,
           CASE WHEN s.missing_rates = '{}' THEN coalesce(s.closing_mrr, 0) END AS closing_mrr
      FROM summed s
)
SELECT a.tenant_id, a.livemode, a.month, a.reporting_currency, a.currencies, a.missing_rates,
       a.closing_mrr AS mrr, a.closing_mrr * 12 AS arr, coalesce(c.active_end, 0) AS subscribers,
       round(a.closing_mrr / nullif(c.active_end, 0), 6) AS arpa,
       a.opening_mrr, a.new_mrr, a.expansion_mrr, a.contraction_mrr, a.churned_mrr, a.reactivation_mrr,
       a.closing_mrr - a.opening_mrr - a.new_mrr - a.expansion_mrr - a.contraction_mrr - a.churned_mrr
           - a.reactivation_mrr AS fx_effect,
       a.closing_mrr,
       round(-(a.contraction_mrr + a.churned_mrr) / nullif(a.opening_mrr, 0), 6) AS mrr_churn_rate,
       round((a.opening_mrr + a.contraction_mrr + a.churned_mrr) / nullif(a.opening_mrr, 0), 6) AS gross_mrr_retention,
       round((a.opening_mrr + a.expansion_mrr + a.contraction_mrr + a.churned_mrr) / nullif(a.opening_mrr, 0), 6)
           AS net_mrr_retention,
       round((a.new_mrr + a.expansion_mrr + a.reactivation_mrr) / nullif(-(a.contraction_mrr + a.churned_mrr), 0), 6)
           AS quick_ratio,
       round((a.closing_mrr / nullif(c.active_end, 0))
             / nullif(-(a.contraction_mrr + a.churned_mrr) / nullif(a.opening_mrr, 0), 0), 6) AS ltv
  FROM amounts a
  LEFT JOIN subscriber_churn c ON c.tenant_id = a.tenant_id AND c.livemode = a.livemode AND c.month = a.month;

CREATE OR REPLACE VIEW daily_revenue_reporting AS
WITH rated AS (
    SELECT d.tenant_id, d.livemode, d.day, d.currency, t.reporting_currency, d.gross, d.refunded, d.net,
           fx_factor(d.currency, t.reporting_currency, d.day) AS factor
      FROM daily_revenue d CROSS JOIN (SELECT DISTINCT reporting_currency FROM public.fx_rates) t
     WHERE d.gross <> 0 OR d.refunded <> 0
)
SELECT tenant_id, livemode, day, reporting_currency, array_agg(currency ORDER BY currency) AS currencies,
       coalesce(array_agg(currency ORDER BY currency) FILTER (WHERE factor IS NULL), '{}') AS missing_rates,
       CASE WHEN bool_and(factor IS NOT NULL) THEN round(sum(gross * factor))::bigint END AS gross,
       CASE WHEN bool_and(factor IS NOT NULL) THEN round(sum(refunded * factor))::bigint END AS refunded,
       CASE WHEN bool_and(factor IS NOT NULL) THEN round(sum(gross * factor))::bigint - round(sum(refunded * factor))::bigint END
           AS net
  FROM rated
 GROUP BY tenant_id, livemode, day, reporting_currency;

ALTER VIEW mrr_reporting OWNER TO analytics_owner;
ALTER VIEW daily_revenue_reporting OWNER TO analytics_owner;
