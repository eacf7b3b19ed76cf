-- revenue_kpis in one pass over the customers' monthly MRR: it joined three views (MRR, movements, 12-month
-- retention), each expanding every subscription state to the months it closes again — the Revenue page's
-- largest statement. Same columns, same definitions (0059): each customer-month movement row (customer_mrr_movements,
-- computed once here) also carries the customer's MRR twelve months back, and the month's figures are sums of those.
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

CREATE OR REPLACE VIEW revenue_kpis AS
WITH classified AS (
    SELECT tenant_id, livemode, month, customer_id, currency, opening, closing, closing - opening AS change, movement,
           lag(closing, 12) OVER (PARTITION BY tenant_id, livemode, customer_id, currency ORDER BY month) AS then_mrr
      FROM customer_mrr_movements
), monthly AS (
    SELECT tenant_id, livemode, month, currency,
           sum(closing) AS mrr, count(*) FILTER (WHERE closing > 0) AS subscribers,
           sum(opening) AS opening_mrr,
           coalesce(sum(change) FILTER (WHERE movement = 'new'), 0) AS new_mrr,
           coalesce(sum(change) FILTER (WHERE movement = 'expansion'), 0) AS expansion_mrr,
           coalesce(sum(change) FILTER (WHERE movement = 'contraction'), 0) AS contraction_mrr,
           coalesce(sum(change) FILTER (WHERE movement = 'churn'), 0) AS churned_mrr,
           coalesce(sum(change) FILTER (WHERE movement = 'reactivation'), 0) AS reactivation_mrr,
           sum(then_mrr) FILTER (WHERE then_mrr > 0) AS opening_mrr_12m,
           sum(closing) FILTER (WHERE then_mrr > 0) AS retained_mrr_12m,
           sum(least(closing, then_mrr)) FILTER (WHERE then_mrr > 0) AS gross_retained_mrr_12m
      FROM classified
     GROUP BY tenant_id, livemode, month, currency
)
SELECT tenant_id, livemode, month, currency, mrr, mrr * 12 AS arr, subscribers,
       round(mrr / nullif(subscribers, 0), 6) AS arpa,
       opening_mrr, new_mrr, expansion_mrr, contraction_mrr, churned_mrr, reactivation_mrr,
       round((opening_mrr + contraction_mrr + churned_mrr) / nullif(opening_mrr, 0), 6) AS gross_mrr_retention,
       round((opening_mrr + expansion_mrr + contraction_mrr + churned_mrr) / nullif(opening_mrr, 0), 6)
           AS net_mrr_retention,
       round((new_mrr + expansion_mrr + reactivation_mrr) / nullif(-(contraction_mrr + churned_mrr), 0), 6)
           AS quick_ratio,
       round(-(contraction_mrr + churned_mrr) / nullif(opening_mrr, 0), 6) AS mrr_churn_rate,
       round((mrr / nullif(subscribers, 0)) / nullif(-(contraction_mrr + churned_mrr) / nullif(opening_mrr, 0), 0), 6)
           AS ltv,
       opening_mrr_12m,
       round(gross_retained_mrr_12m / nullif(opening_mrr_12m, 0), 6) AS gross_mrr_retention_12m,
       round(retained_mrr_12m / nullif(opening_mrr_12m, 0), 6) AS net_mrr_retention_12m
  FROM monthly;
