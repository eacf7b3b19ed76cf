-- rerun-after-replay: re-applied after a replay swaps in a rebuilt projection schema. Idempotent.
--
-- The revenue KPIs in the analytics schema (summary level: aggregates only). Definitions: docs/metrics.md.

SET LOCAL ROLE analytics_owner;

CREATE OR REPLACE VIEW analytics.revenue_kpis WITH (security_barrier) AS
SELECT month, currency, livemode, mrr, arr, subscribers, arpa, opening_mrr, new_mrr, expansion_mrr, contraction_mrr,
       churned_mrr, reactivation_mrr, gross_mrr_retention, net_mrr_retention, quick_ratio, mrr_churn_rate, ltv,
       opening_mrr_12m, gross_mrr_retention_12m, net_mrr_retention_12m
  FROM projection.revenue_kpis WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.revenue_kpis IS 'Revenue KPIs per month end and currency: MRR, ARR, ARPA, gross and net MRR retention (monthly and trailing 12 months), quick ratio, MRR churn rate and LTV. Amounts in minor units of currency (may carry fractions of a minor unit); ratios 0–1 (retention may exceed 1). Use for "what is our ARR", "NRR", "quick ratio", "LTV".';
COMMENT ON COLUMN analytics.revenue_kpis.month IS 'First day of the month; figures as of its last instant (the current month: now).';
COMMENT ON COLUMN analytics.revenue_kpis.currency IS 'ISO currency code, lower case. Never add amounts of different currencies.';
COMMENT ON COLUMN analytics.revenue_kpis.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.revenue_kpis.mrr IS 'MRR at the month end, minor units (as analytics.mrr_by_month).';
COMMENT ON COLUMN analytics.revenue_kpis.arr IS 'Annual run rate: mrr × 12, minor units.';
COMMENT ON COLUMN analytics.revenue_kpis.subscribers IS 'Customers with MRR > 0 in this currency at the month end.';
COMMENT ON COLUMN analytics.revenue_kpis.arpa IS 'Average revenue per account: mrr / subscribers, minor units per month; NULL without subscribers.';
COMMENT ON COLUMN analytics.revenue_kpis.opening_mrr IS 'MRR at the previous month end, minor units (the retention denominator).';
COMMENT ON COLUMN analytics.revenue_kpis.new_mrr IS 'MRR from new customers this month (as analytics.mrr_movements), minor units.';
COMMENT ON COLUMN analytics.revenue_kpis.expansion_mrr IS 'MRR added by paying customers this month, minor units.';
COMMENT ON COLUMN analytics.revenue_kpis.contraction_mrr IS 'MRR lost by customers who still pay (negative), minor units.';
COMMENT ON COLUMN analytics.revenue_kpis.churned_mrr IS 'MRR lost from customers who stopped paying (negative), minor units.';
COMMENT ON COLUMN analytics.revenue_kpis.reactivation_mrr IS 'MRR from returning customers, minor units.';
COMMENT ON COLUMN analytics.revenue_kpis.gross_mrr_retention IS '(opening + contraction + churn) / opening: the share of last month''s MRR kept, expansion not counted; NULL when opening is 0.';
COMMENT ON COLUMN analytics.revenue_kpis.net_mrr_retention IS '(opening + expansion + contraction + churn) / opening: last month''s customers'' MRR now against then, new and reactivated customers not counted; NULL when opening is 0.';
COMMENT ON COLUMN analytics.revenue_kpis.quick_ratio IS '(new + expansion + reactivation) / (contraction + churn), as positive amounts; NULL in a month that lost no MRR.';
COMMENT ON COLUMN analytics.revenue_kpis.mrr_churn_rate IS '(churned + contraction MRR) / opening MRR, as in analytics.revenue_churn; NULL when opening is 0.';
COMMENT ON COLUMN analytics.revenue_kpis.ltv IS 'Lifetime value: arpa / mrr_churn_rate, minor units; NULL when the month lost no MRR (a rate of 0 gives no finite lifetime) or had no opening MRR.';
COMMENT ON COLUMN analytics.revenue_kpis.opening_mrr_12m IS 'MRR twelve month ends earlier of the customers paying then, minor units (the trailing-12-month denominator).';
COMMENT ON COLUMN analytics.revenue_kpis.gross_mrr_retention_12m IS 'Those customers'' MRR now, each capped at what it was then, / opening_mrr_12m; NULL without a year of history.';
COMMENT ON COLUMN analytics.revenue_kpis.net_mrr_retention_12m IS 'Those customers'' MRR now / opening_mrr_12m (expansion counts, new customers do not); NULL without a year of history.';

CREATE OR REPLACE VIEW analytics.trial_conversions WITH (security_barrier) AS
SELECT month, livemode, trial_starts, converted, still_trialing, trial_conversion_rate
  FROM projection.trial_conversions WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.trial_conversions IS 'Trials by the month they started: how many started, converted to paid (active at or after the trial end), are still trialing (current status trialing), and the conversion rate over trials that have ended. Use for "trial conversion".';
COMMENT ON COLUMN analytics.trial_conversions.month IS 'First day of the month the trials started in (UTC).';
COMMENT ON COLUMN analytics.trial_conversions.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.trial_conversions.trial_starts IS 'Subscriptions that started with a trial this month.';
COMMENT ON COLUMN analytics.trial_conversions.converted IS 'Of those, how many became active (paid) at or after their trial end.';
COMMENT ON COLUMN analytics.trial_conversions.still_trialing IS 'Of those, how many are still in their trial.';
COMMENT ON COLUMN analytics.trial_conversions.trial_conversion_rate IS 'converted / (trials that converted or whose trial has ended), 0 to 1; NULL when none has ended.';

CREATE OR REPLACE VIEW analytics.cohort_logo_retention WITH (security_barrier) AS
SELECT cohort, month, months_since, livemode, customers, retained, logo_retention
  FROM projection.cohort_logo_retention WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.cohort_logo_retention IS 'Monthly signup cohorts (a customer''s cohort is the month they first had MRR) and how many of each are still paying at each later month end. Use for "how did the March cohort retain".';
COMMENT ON COLUMN analytics.cohort_logo_retention.cohort IS 'First day of the cohort''s month.';
COMMENT ON COLUMN analytics.cohort_logo_retention.month IS 'First day of the month measured (at its end).';
COMMENT ON COLUMN analytics.cohort_logo_retention.months_since IS 'Months from the cohort month (0 = the cohort month itself).';
COMMENT ON COLUMN analytics.cohort_logo_retention.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.cohort_logo_retention.customers IS 'Customers in the cohort.';
COMMENT ON COLUMN analytics.cohort_logo_retention.retained IS 'Of them, customers with MRR > 0 (any currency) at this month end.';
COMMENT ON COLUMN analytics.cohort_logo_retention.logo_retention IS 'retained / customers, 0 to 1.';

CREATE OR REPLACE VIEW analytics.cohort_mrr_retention WITH (security_barrier) AS
SELECT cohort, month, months_since, currency, livemode, starting_mrr, mrr, mrr_retention
  FROM projection.cohort_mrr_retention WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.cohort_mrr_retention IS 'Monthly signup cohorts'' MRR per currency at each later month end against their MRR in the cohort month (expansion counts, so it may exceed 1).';
COMMENT ON COLUMN analytics.cohort_mrr_retention.cohort IS 'First day of the cohort''s month.';
COMMENT ON COLUMN analytics.cohort_mrr_retention.month IS 'First day of the month measured (at its end).';
COMMENT ON COLUMN analytics.cohort_mrr_retention.months_since IS 'Months from the cohort month.';
COMMENT ON COLUMN analytics.cohort_mrr_retention.currency IS 'ISO currency code, lower case.';
COMMENT ON COLUMN analytics.cohort_mrr_retention.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.cohort_mrr_retention.starting_mrr IS 'The cohort''s MRR in this currency at the end of its cohort month, minor units.';
COMMENT ON COLUMN analytics.cohort_mrr_retention.mrr IS 'The cohort''s MRR in this currency at this month end, minor units.';
COMMENT ON COLUMN analytics.cohort_mrr_retention.mrr_retention IS 'mrr / starting_mrr; NULL when the cohort started with no MRR in this currency.';

CREATE OR REPLACE VIEW analytics.failed_payment_recovery WITH (security_barrier) AS
SELECT month, currency, livemode, failed_invoices, recovered_invoices, failed_amount, recovered_amount, recovery_rate
  FROM projection.failed_payment_recovery WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.failed_payment_recovery IS 'Invoices whose payment failed at least once, by month of creation and currency, and how many were paid later (recovered by retries or the customer). Use for "failed-payment recovery", "dunning".';
COMMENT ON COLUMN analytics.failed_payment_recovery.month IS 'First day of the month the invoices were created in.';
COMMENT ON COLUMN analytics.failed_payment_recovery.currency IS 'ISO currency code, lower case.';
COMMENT ON COLUMN analytics.failed_payment_recovery.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.failed_payment_recovery.failed_invoices IS 'Invoices with a failed payment attempt (more than one attempt, or attempted and still open or uncollectible).';
COMMENT ON COLUMN analytics.failed_payment_recovery.recovered_invoices IS 'Of them, invoices paid since.';
COMMENT ON COLUMN analytics.failed_payment_recovery.failed_amount IS 'Amount due on the failed invoices, minor units.';
COMMENT ON COLUMN analytics.failed_payment_recovery.recovered_amount IS 'Amount paid on the recovered invoices, minor units.';
COMMENT ON COLUMN analytics.failed_payment_recovery.recovery_rate IS 'recovered_invoices / failed_invoices, 0 to 1.';

RESET ROLE;

GRANT SELECT ON analytics.revenue_kpis, analytics.trial_conversions, analytics.cohort_logo_retention,
                analytics.cohort_mrr_retention, analytics.failed_payment_recovery
    TO revenue_reader_summary, revenue_reader_standard, revenue_reader_full;
