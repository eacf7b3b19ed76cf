-- rerun-after-replay: re-applied after a replay swaps in a rebuilt projection schema. Idempotent.
--
-- MRR, its movements with the FX effect apart, and daily revenue in one reporting currency (summary level), from
-- the operator's rates (0070, 0071). Amounts in minor units of the reporting currency.
SET LOCAL ROLE analytics_owner;

CREATE OR REPLACE VIEW analytics.mrr_reporting WITH (security_barrier) AS
SELECT month, reporting_currency, livemode, currencies, missing_rates, mrr, arr, subscribers, arpa, opening_mrr, new_mrr,
       expansion_mrr, contraction_mrr, churned_mrr, reactivation_mrr, fx_effect, closing_mrr, mrr_churn_rate,
       gross_mrr_retention, net_mrr_retention, quick_ratio, ltv
  FROM projection.mrr_reporting WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.mrr_reporting IS 'MRR and its movements converted to one reporting currency at each month-end rate the operator loaded, with the FX effect apart from the movements: opening + new + expansion + contraction + churn + reactivation + fx_effect = closing. A month whose figures need a missing rate has NULL amounts and names the currencies in missing_rates. Use for "total MRR in USD", "how much did exchange rates move our MRR".';
COMMENT ON COLUMN analytics.mrr_reporting.month IS 'First day of the month (the tenant''s time zone); figures as of its last instant.';
COMMENT ON COLUMN analytics.mrr_reporting.reporting_currency IS 'The currency every amount of the row is in (lower case); one row per reporting currency with rates.';
COMMENT ON COLUMN analytics.mrr_reporting.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.mrr_reporting.currencies IS 'The currencies of the tenant''s MRR history that were converted.';
COMMENT ON COLUMN analytics.mrr_reporting.missing_rates IS 'Currencies with MRR this month (or last) but no rate within 31 days before the month end; empty when every amount was converted. Amounts are NULL unless empty.';
COMMENT ON COLUMN analytics.mrr_reporting.mrr IS 'MRR at the month end converted at the month-end rate, minor units of reporting_currency.';
COMMENT ON COLUMN analytics.mrr_reporting.arr IS 'mrr × 12.';
COMMENT ON COLUMN analytics.mrr_reporting.subscribers IS 'Customers with MRR > 0 in any currency at the month end.';
COMMENT ON COLUMN analytics.mrr_reporting.arpa IS 'mrr / subscribers; NULL without subscribers.';
COMMENT ON COLUMN analytics.mrr_reporting.opening_mrr IS 'Last month''s MRR at last month''s rate (= last month''s mrr).';
COMMENT ON COLUMN analytics.mrr_reporting.new_mrr IS 'New MRR at this month''s rate.';
COMMENT ON COLUMN analytics.mrr_reporting.expansion_mrr IS 'Expansion MRR at this month''s rate.';
COMMENT ON COLUMN analytics.mrr_reporting.contraction_mrr IS 'Contraction MRR (negative) at this month''s rate.';
COMMENT ON COLUMN analytics.mrr_reporting.churned_mrr IS 'Churned MRR (negative) at this month''s rate.';
COMMENT ON COLUMN analytics.mrr_reporting.reactivation_mrr IS 'Reactivation MRR at this month''s rate.';
COMMENT ON COLUMN analytics.mrr_reporting.fx_effect IS 'The change of MRR that exchange rates made, not customers: closing - opening - the movements (the opening MRR of each currency times its rate change).';
COMMENT ON COLUMN analytics.mrr_reporting.closing_mrr IS 'Same as mrr.';
COMMENT ON COLUMN analytics.mrr_reporting.mrr_churn_rate IS '-(contraction + churn) / opening, in the reporting currency; NULL when opening is 0.';
COMMENT ON COLUMN analytics.mrr_reporting.gross_mrr_retention IS '(opening + contraction + churn) / opening; NULL when opening is 0.';
COMMENT ON COLUMN analytics.mrr_reporting.net_mrr_retention IS '(opening + expansion + contraction + churn) / opening; the FX effect is not retention; NULL when opening is 0.';
COMMENT ON COLUMN analytics.mrr_reporting.quick_ratio IS '(new + expansion + reactivation) / -(contraction + churn); NULL in a month that lost no MRR.';
COMMENT ON COLUMN analytics.mrr_reporting.ltv IS 'arpa / mrr_churn_rate; NULL when the month lost no MRR or had no opening MRR.';

CREATE OR REPLACE VIEW analytics.daily_revenue_reporting WITH (security_barrier) AS
SELECT day, reporting_currency, livemode, currencies, missing_rates, gross, refunded, net
  FROM projection.daily_revenue_reporting WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.daily_revenue_reporting IS 'Daily gross, refunded and net revenue converted to one reporting currency at each day''s rate (the latest on or before the day, at most 31 days older), rounded to whole minor units (a half away from zero). NULL amounts and missing_rates set on a day a needed rate is missing. Use for "revenue last month in EUR" across currencies.';
COMMENT ON COLUMN analytics.daily_revenue_reporting.day IS 'Calendar day in the tenant''s time zone.';
COMMENT ON COLUMN analytics.daily_revenue_reporting.reporting_currency IS 'The currency the amounts are in (lower case).';
COMMENT ON COLUMN analytics.daily_revenue_reporting.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.daily_revenue_reporting.currencies IS 'The currencies of the day''s revenue that were converted.';
COMMENT ON COLUMN analytics.daily_revenue_reporting.missing_rates IS 'Currencies of the day without a rate; empty when all were converted.';
COMMENT ON COLUMN analytics.daily_revenue_reporting.gross IS 'Gross revenue converted, minor units of reporting_currency.';
COMMENT ON COLUMN analytics.daily_revenue_reporting.refunded IS 'Refunds converted, minor units of reporting_currency.';
COMMENT ON COLUMN analytics.daily_revenue_reporting.net IS 'gross - refunded.';

RESET ROLE;

GRANT SELECT ON analytics.mrr_reporting, analytics.daily_revenue_reporting
   TO revenue_reader_summary, revenue_reader_standard, revenue_reader_full;

SET LOCAL ROLE analytics_owner;

CREATE OR REPLACE VIEW analytics.reporting_currencies WITH (security_barrier) AS
SELECT DISTINCT reporting_currency FROM public.fx_rates;
COMMENT ON VIEW analytics.reporting_currencies IS 'The currencies revenue can be reported in: those the operator loaded exchange rates to (one row each). Read analytics.mrr_reporting and analytics.daily_revenue_reporting with one of them.';
COMMENT ON COLUMN analytics.reporting_currencies.reporting_currency IS 'ISO currency code, lower case.';

CREATE OR REPLACE VIEW analytics.tenant_settings WITH (security_barrier) AS
SELECT time_zone FROM public.tenants WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.tenant_settings IS 'This tenant''s settings that shape the figures: the time zone whose days and months every view uses.';
COMMENT ON COLUMN analytics.tenant_settings.time_zone IS 'IANA time zone name (UTC unless the tenant set one); days and months of every view are in it.';

RESET ROLE;

GRANT SELECT ON analytics.reporting_currencies, analytics.tenant_settings
   TO revenue_reader_summary, revenue_reader_standard, revenue_reader_full;
