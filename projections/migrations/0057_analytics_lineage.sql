-- rerun-after-replay: re-applied after a replay swaps in a rebuilt projection schema. Idempotent.
--
-- Lineage in the analytics schema: which charges, refunds and subscription changes make up a figure,
-- and the Stripe event behind each. Per-row views are standard level (they name customers); the
-- summary level gets counts and amounts only.

SET LOCAL ROLE analytics_owner;

CREATE OR REPLACE VIEW analytics.revenue_contributions WITH (security_barrier) AS
SELECT day, currency, livemode, kind, charge_id, refund_id, customer_id, amount,
       split_part(event_id, ':', 1) AS event_id,
       CASE WHEN event_id IS NULL THEN 'unknown' WHEN event_id LIKE 'snap\_%' THEN 'import_snapshot'
            ELSE 'stripe_event' END AS source,
       event_time
  FROM projection.revenue_contributions WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.revenue_contributions IS 'Lineage of analytics.daily_revenue: one row per succeeded charge (kind charge: its captured amount counts as gross on its day), refund (kind refund: counts as refunded on its day) and failed charge (kind failed_charge), with the Stripe event behind it. Summed per day, currency and kind these give daily_revenue (gross, refunded, failed_amount). Use to explain a day''s or a period''s revenue.';
COMMENT ON COLUMN analytics.revenue_contributions.day IS 'UTC day the amount counts on.';
COMMENT ON COLUMN analytics.revenue_contributions.currency IS 'ISO currency code, lower case.';
COMMENT ON COLUMN analytics.revenue_contributions.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.revenue_contributions.kind IS 'charge (gross), refund (refunded) or failed_charge (failed payments).';
COMMENT ON COLUMN analytics.revenue_contributions.charge_id IS 'Stripe charge id (the refunded charge, for a refund).';
COMMENT ON COLUMN analytics.revenue_contributions.refund_id IS 'Stripe refund id (re_…) when Stripe listed the refund; NULL for a refund known only from the charge''s refunded amount.';
COMMENT ON COLUMN analytics.revenue_contributions.customer_id IS 'Stripe customer id of the charge, if any.';
COMMENT ON COLUMN analytics.revenue_contributions.amount IS 'Amount this row adds, minor units, positive (a refund subtracts it from net).';
COMMENT ON COLUMN analytics.revenue_contributions.event_id IS 'The Stripe event (evt_…) whose object state is counted, or the import snapshot (snap_…) for history older than Stripe''s 30-day events window.';
COMMENT ON COLUMN analytics.revenue_contributions.source IS 'stripe_event, import_snapshot, or unknown (projected before lineage was stored; a replay fills it).';
COMMENT ON COLUMN analytics.revenue_contributions.event_time IS 'When that event happened (the snapshot''s fetch time for an import).';

CREATE OR REPLACE VIEW analytics.revenue_contribution_counts WITH (security_barrier) AS
SELECT day, currency, livemode, kind, count(*) AS items, count(DISTINCT event_id) AS events, sum(amount)::bigint AS amount
  FROM projection.revenue_contributions WHERE tenant_id = (SELECT analytics.current_tenant())
 GROUP BY day, currency, livemode, kind;
COMMENT ON VIEW analytics.revenue_contribution_counts IS 'Lineage of analytics.daily_revenue at summary level: per day, currency and kind, how many charges or refunds make up the amount and how many Stripe events they come from. No ids.';
COMMENT ON COLUMN analytics.revenue_contribution_counts.day IS 'UTC day.';
COMMENT ON COLUMN analytics.revenue_contribution_counts.currency IS 'ISO currency code, lower case.';
COMMENT ON COLUMN analytics.revenue_contribution_counts.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.revenue_contribution_counts.kind IS 'charge (gross), refund (refunded) or failed_charge.';
COMMENT ON COLUMN analytics.revenue_contribution_counts.items IS 'Number of charges or refunds.';
COMMENT ON COLUMN analytics.revenue_contribution_counts.events IS 'Number of distinct events (or import snapshots) behind them.';
COMMENT ON COLUMN analytics.revenue_contribution_counts.amount IS 'Their sum, minor units.';

CREATE OR REPLACE VIEW analytics.mrr_changes WITH (security_barrier) AS
SELECT month, currency, livemode, movement, customer_id, subscription_id, opening AS opening_mrr, closing AS closing_mrr,
       change, split_part(state_event_id, ':', 1) AS event_id,
       nullif(split_part(state_event_id, ':', 2), '') AS derived_as,
       CASE WHEN state_event_id LIKE 'snap\_%' THEN 'import_snapshot' ELSE 'stripe_event' END AS source,
       to_timestamp(state_time / 1000.0) AS event_time
  FROM projection.subscription_mrr_changes WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.mrr_changes IS 'Lineage of analytics.mrr_movements: every subscription whose MRR differs between the previous month end and this one, with its customer''s movement that month and the Stripe event that set its closing MRR. Per month, currency and movement the changes add up to mrr_movements (new_mrr, expansion_mrr, contraction_mrr, churned_mrr, reactivation_mrr). Use to explain why MRR moved.';
COMMENT ON COLUMN analytics.mrr_changes.month IS 'First day of the month.';
COMMENT ON COLUMN analytics.mrr_changes.currency IS 'ISO currency code, lower case.';
COMMENT ON COLUMN analytics.mrr_changes.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.mrr_changes.movement IS 'The customer''s movement this month: new, expansion, contraction, churn or reactivation.';
COMMENT ON COLUMN analytics.mrr_changes.customer_id IS 'Stripe customer id.';
COMMENT ON COLUMN analytics.mrr_changes.subscription_id IS 'Stripe subscription id.';
COMMENT ON COLUMN analytics.mrr_changes.opening_mrr IS 'The subscription''s MRR at the previous month end, minor units.';
COMMENT ON COLUMN analytics.mrr_changes.closing_mrr IS 'Its MRR at this month end, minor units.';
COMMENT ON COLUMN analytics.mrr_changes.change IS 'closing_mrr - opening_mrr (negative for churn and contraction).';
COMMENT ON COLUMN analytics.mrr_changes.event_id IS 'The Stripe event (evt_…) whose state of the subscription set closing_mrr, or the import snapshot (snap_…) it was derived from.';
COMMENT ON COLUMN analytics.mrr_changes.derived_as IS 'NULL for a state Stripe sent; for a point derived from a snapshot or an update: start, trial_end, since_period_start, end, or before (the state before an update, from previous_attributes).';
COMMENT ON COLUMN analytics.mrr_changes.source IS 'stripe_event or import_snapshot.';
COMMENT ON COLUMN analytics.mrr_changes.event_time IS 'When that state took effect.';

CREATE OR REPLACE VIEW analytics.mrr_change_counts WITH (security_barrier) AS
SELECT month, currency, livemode, movement, count(DISTINCT customer_id) AS customers, count(*) AS subscriptions,
       count(DISTINCT split_part(state_event_id, ':', 1)) AS events, sum(change) AS amount
  FROM projection.subscription_mrr_changes WHERE tenant_id = (SELECT analytics.current_tenant())
 GROUP BY month, currency, livemode, movement;
COMMENT ON VIEW analytics.mrr_change_counts IS 'Lineage of analytics.mrr_movements at summary level: per month, currency and movement, how many customers, subscriptions and Stripe events moved MRR and by how much. No ids.';
COMMENT ON COLUMN analytics.mrr_change_counts.month IS 'First day of the month.';
COMMENT ON COLUMN analytics.mrr_change_counts.currency IS 'ISO currency code, lower case.';
COMMENT ON COLUMN analytics.mrr_change_counts.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.mrr_change_counts.movement IS 'new, expansion, contraction, churn or reactivation.';
COMMENT ON COLUMN analytics.mrr_change_counts.customers IS 'Customers with this movement.';
COMMENT ON COLUMN analytics.mrr_change_counts.subscriptions IS 'Subscriptions whose MRR changed.';
COMMENT ON COLUMN analytics.mrr_change_counts.events IS 'Distinct events (or import snapshots) that set their closing MRR.';
COMMENT ON COLUMN analytics.mrr_change_counts.amount IS 'Sum of the changes, minor units per month (equals the movement''s column in mrr_movements).';

RESET ROLE;

GRANT SELECT ON analytics.revenue_contribution_counts, analytics.mrr_change_counts
    TO revenue_reader_summary, revenue_reader_standard, revenue_reader_full;
GRANT SELECT ON analytics.revenue_contributions, analytics.mrr_changes TO revenue_reader_standard, revenue_reader_full;
