-- rerun-after-replay: re-applied after a replay swaps in a rebuilt projection schema. Idempotent.
--
-- Customers beside subscribers (summary level), and the views' descriptions say whose calendar their days and
-- months are: the tenant's time zone (tenants.time_zone, UTC unless set), not UTC (0066, 0067).
SET LOCAL ROLE analytics_owner;

CREATE OR REPLACE VIEW analytics.customer_counts WITH (security_barrier) AS
SELECT month, livemode, customers, new_customers, subscribers, paying_share
  FROM projection.customer_counts WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.customer_counts IS 'Customers and subscribers at each month end: every customer of the Stripe account (paying or not) and those with MRR > 0. Use for "how many customers do we have", "how many of them pay".';
COMMENT ON COLUMN analytics.customer_counts.month IS 'First day of the month (the tenant''s time zone); figures as of its last instant (the current month: now).';
COMMENT ON COLUMN analytics.customer_counts.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.customer_counts.customers IS 'Customer objects created by the month end and not deleted by then, paying or not (trialing, free, lapsed, never subscribed).';
COMMENT ON COLUMN analytics.customer_counts.new_customers IS 'Customer objects created in the month.';
COMMENT ON COLUMN analytics.customer_counts.subscribers IS 'Customers with MRR > 0 in any currency at the month end (as analytics.subscriber_churn.active_end).';
COMMENT ON COLUMN analytics.customer_counts.paying_share IS 'subscribers / customers; NULL without customers. A subscriber whose customer object was deleted still counts, so it can exceed 1.';

COMMENT ON VIEW analytics.daily_revenue IS 'Revenue per day (the tenant''s time zone) and currency: gross (captured succeeded charges, by charge day), refunded (by refund day), net = gross - refunded, and failed payments. Integer minor units. Filter livemode = true for real money. Use for "revenue in October", "net revenue last week".';
COMMENT ON COLUMN analytics.daily_revenue.day IS 'Calendar day in the tenant''s time zone (UTC unless the tenant set one).';
COMMENT ON COLUMN analytics.revenue_contributions.day IS 'Day the amount counts on, in the tenant''s time zone.';
COMMENT ON COLUMN analytics.revenue_contribution_counts.day IS 'Day, in the tenant''s time zone.';
COMMENT ON COLUMN analytics.mrr_by_month.month IS 'First day of the month in the tenant''s time zone; the figure is as of the month''s last instant there.';
COMMENT ON COLUMN analytics.trial_conversions.month IS 'First day of the month the trials started in (the tenant''s time zone).';
COMMENT ON VIEW analytics.subscriber_churn_30d IS 'Stripe''s rolling subscriber churn rate, as of the end of each day in the tenant''s time zone (today: now): subscribers who churned in the past 30 days / (subscribers 30 days earlier + new subscribers in those 30 days). A subscriber is a customer with MRR > 0 in any currency. Use for "what is our churn rate" as Stripe''s Billing dashboard shows it.';
COMMENT ON COLUMN analytics.subscriber_churn_30d.day IS 'The day (the tenant''s time zone), measured at its end.';

RESET ROLE;

GRANT SELECT ON analytics.customer_counts TO revenue_reader_summary, revenue_reader_standard, revenue_reader_full;
