-- rerun-after-replay: re-applied after a replay swaps in a rebuilt projection schema. Idempotent.
SET LOCAL ROLE analytics_owner;

CREATE OR REPLACE VIEW analytics.subscriber_churn_30d WITH (security_barrier) AS
SELECT day, livemode, churned_30d, active_30d_ago, new_30d, subscriber_churn_rate_30d
  FROM projection.subscriber_churn_30d WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.subscriber_churn_30d IS 'Stripe''s rolling subscriber churn rate, as of the end of each UTC day (today: now): subscribers who churned in the past 30 days / (subscribers 30 days earlier + new subscribers in those 30 days). A subscriber is a customer with MRR > 0 in any currency. Use for "what is our churn rate" as Stripe''s Billing dashboard shows it.';
COMMENT ON COLUMN analytics.subscriber_churn_30d.day IS 'The UTC day, measured at its end.';
COMMENT ON COLUMN analytics.subscriber_churn_30d.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.subscriber_churn_30d.churned_30d IS 'Subscribers whose last paid subscription ended in the 30 days up to then.';
COMMENT ON COLUMN analytics.subscriber_churn_30d.active_30d_ago IS 'Subscribers 30 days before.';
COMMENT ON COLUMN analytics.subscriber_churn_30d.new_30d IS 'Customers who became subscribers (again) in those 30 days.';
COMMENT ON COLUMN analytics.subscriber_churn_30d.subscriber_churn_rate_30d IS 'churned_30d / (active_30d_ago + new_30d), 0 to 1; NULL when both are 0.';

RESET ROLE;

GRANT SELECT ON analytics.subscriber_churn_30d TO revenue_reader_summary, revenue_reader_standard, revenue_reader_full;
