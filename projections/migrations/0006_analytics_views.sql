-- rerun-after-replay: re-applied after a replay swaps in a rebuilt projection schema (views bind to
-- tables, not names). Everything here is idempotent.
--
-- The analytics schema: what the AI query layer reads. Every view shows only the rows of the
-- transaction's tenant (analytics.current_tenant(); row-level security on the tables underneath
-- enforces the same), drops tenant_id, and has a comment on itself and each column.
-- Amounts are integer minor units of the row's currency (see analytics.currency_units).

CREATE TABLE IF NOT EXISTS analytics_private.metrics_catalog (
    name text PRIMARY KEY, question text NOT NULL, definition text NOT NULL, sql text NOT NULL,
    unit text NOT NULL, min_level text NOT NULL CHECK (min_level IN ('summary', 'standard', 'full'))
);
GRANT SELECT ON analytics_private.metrics_catalog TO analytics_owner;
GRANT CREATE ON SCHEMA analytics TO analytics_owner;

SET LOCAL ROLE analytics_owner;

-- Summary level: aggregates only.
CREATE OR REPLACE VIEW analytics.daily_revenue WITH (security_barrier) AS
SELECT day, currency, livemode, gross, refunded, net, failed_count, failed_amount
  FROM projection.daily_revenue WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.daily_revenue IS 'Revenue per UTC day and currency: gross (captured succeeded charges, by charge day), refunded (by refund day), net = gross - refunded, and failed payments. Integer minor units. Filter livemode = true for real money. Use for "revenue in October", "net revenue last week".';
COMMENT ON COLUMN analytics.daily_revenue.day IS 'UTC calendar day.';
COMMENT ON COLUMN analytics.daily_revenue.currency IS 'ISO currency code, lower case (usd, eur, jpy). Never add amounts of different currencies.';
COMMENT ON COLUMN analytics.daily_revenue.livemode IS 'true for live-mode (real) data, false for Stripe test mode.';
COMMENT ON COLUMN analytics.daily_revenue.gross IS 'Captured amount of succeeded charges created this day, minor units.';
COMMENT ON COLUMN analytics.daily_revenue.refunded IS 'Refunds made this day (whatever the charge day), minor units.';
COMMENT ON COLUMN analytics.daily_revenue.net IS 'gross - refunded, minor units; can be negative.';
COMMENT ON COLUMN analytics.daily_revenue.failed_count IS 'Number of failed charges created this day.';
COMMENT ON COLUMN analytics.daily_revenue.failed_amount IS 'Amount of failed charges created this day, minor units.';

CREATE OR REPLACE VIEW analytics.mrr_by_month WITH (security_barrier) AS
SELECT month, currency, livemode, mrr, round(mrr)::bigint AS mrr_rounded, subscribers
  FROM projection.mrr_by_month WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.mrr_by_month IS 'Monthly recurring revenue at each month end (the current month: as of now), per currency, by Stripe Billing-analytics rules (active + past_due subscriptions, monthly-normalised, trials/unpaid/metered/free and taxes out, only forever coupons reduce it). Use for "what is our MRR", "MRR by month".';
COMMENT ON COLUMN analytics.mrr_by_month.month IS 'First day of the month; the figure is as of the month''s last instant.';
COMMENT ON COLUMN analytics.mrr_by_month.currency IS 'ISO currency code, lower case.';
COMMENT ON COLUMN analytics.mrr_by_month.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.mrr_by_month.mrr IS 'MRR in minor units per month, exact (may carry fractions of a minor unit from yearly/weekly normalisation).';
COMMENT ON COLUMN analytics.mrr_by_month.mrr_rounded IS 'mrr rounded to a whole minor unit, for display.';
COMMENT ON COLUMN analytics.mrr_by_month.subscribers IS 'Customers with MRR > 0 in this currency at the month end.';

CREATE OR REPLACE VIEW analytics.mrr_movements WITH (security_barrier) AS
SELECT month, currency, livemode, opening_mrr, new_mrr, expansion_mrr, contraction_mrr, churned_mrr, reactivation_mrr, closing_mrr
  FROM projection.mrr_movements WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.mrr_movements IS 'How MRR changed in each month, per currency: opening + new + expansion + contraction + churned + reactivation = closing. Customer-level: cancelling one of two subscriptions is contraction, the last one is churn. Use for "MRR movements in October", "how much MRR did we lose".';
COMMENT ON COLUMN analytics.mrr_movements.month IS 'First day of the month.';
COMMENT ON COLUMN analytics.mrr_movements.currency IS 'ISO currency code, lower case.';
COMMENT ON COLUMN analytics.mrr_movements.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.mrr_movements.opening_mrr IS 'MRR at the end of the previous month, minor units.';
COMMENT ON COLUMN analytics.mrr_movements.new_mrr IS 'MRR from customers paying for the first time (positive).';
COMMENT ON COLUMN analytics.mrr_movements.expansion_mrr IS 'MRR added by paying customers (upgrades, more seats; positive).';
COMMENT ON COLUMN analytics.mrr_movements.contraction_mrr IS 'MRR lost by customers who still pay (downgrades; negative).';
COMMENT ON COLUMN analytics.mrr_movements.churned_mrr IS 'MRR lost from customers who stopped paying (negative).';
COMMENT ON COLUMN analytics.mrr_movements.reactivation_mrr IS 'MRR from returning customers who had paid before (positive).';
COMMENT ON COLUMN analytics.mrr_movements.closing_mrr IS 'MRR at the end of this month, minor units.';

CREATE OR REPLACE VIEW analytics.subscriber_churn WITH (security_barrier) AS
SELECT month, livemode, active_start, new_subscribers, churned_subscribers, churn_denominator, subscriber_churn_rate, active_end
  FROM projection.subscriber_churn WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.subscriber_churn IS 'Subscriber churn per month (a subscriber = a customer with MRR > 0 in any currency; churned = all their subscriptions ended). Rate = churned / (active at start + new). Use for "what was churn in October".';
COMMENT ON COLUMN analytics.subscriber_churn.month IS 'First day of the month.';
COMMENT ON COLUMN analytics.subscriber_churn.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.subscriber_churn.active_start IS 'Subscribers at the end of the previous month.';
COMMENT ON COLUMN analytics.subscriber_churn.new_subscribers IS 'Customers who became subscribers during the month (new or returning).';
COMMENT ON COLUMN analytics.subscriber_churn.churned_subscribers IS 'Subscribers at the start who are not at the end.';
COMMENT ON COLUMN analytics.subscriber_churn.churn_denominator IS 'active_start + new_subscribers.';
COMMENT ON COLUMN analytics.subscriber_churn.subscriber_churn_rate IS 'churned_subscribers / churn_denominator (0 to 1); NULL when the denominator is 0.';
COMMENT ON COLUMN analytics.subscriber_churn.active_end IS 'Subscribers at the end of the month.';

CREATE OR REPLACE VIEW analytics.revenue_churn WITH (security_barrier) AS
SELECT month, currency, livemode, opening_mrr, churned_mrr, contraction_mrr, revenue_churn_rate
  FROM projection.revenue_churn WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.revenue_churn IS 'Revenue churn per month and currency: (MRR lost to churn + contraction) / opening MRR.';
COMMENT ON COLUMN analytics.revenue_churn.month IS 'First day of the month.';
COMMENT ON COLUMN analytics.revenue_churn.currency IS 'ISO currency code, lower case.';
COMMENT ON COLUMN analytics.revenue_churn.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.revenue_churn.opening_mrr IS 'MRR at the start of the month (the denominator), minor units.';
COMMENT ON COLUMN analytics.revenue_churn.churned_mrr IS 'MRR lost from churned customers, as a positive amount.';
COMMENT ON COLUMN analytics.revenue_churn.contraction_mrr IS 'MRR lost from downgrades, as a positive amount.';
COMMENT ON COLUMN analytics.revenue_churn.revenue_churn_rate IS '(churned_mrr + contraction_mrr) / opening_mrr; NULL when opening is 0.';

CREATE OR REPLACE VIEW analytics.invoice_summary WITH (security_barrier) AS
SELECT month, currency, livemode, invoices, billed, paid, outstanding, uncollectible
  FROM projection.invoice_summary WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.invoice_summary IS 'Finalized invoices (open, paid, uncollectible) by month of creation and currency: billed, paid, outstanding, uncollectible. Drafts, voided and deleted invoices are excluded.';
COMMENT ON COLUMN analytics.invoice_summary.month IS 'First day of the month the invoices were created in.';
COMMENT ON COLUMN analytics.invoice_summary.currency IS 'ISO currency code, lower case.';
COMMENT ON COLUMN analytics.invoice_summary.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.invoice_summary.invoices IS 'Number of finalized invoices.';
COMMENT ON COLUMN analytics.invoice_summary.billed IS 'Sum of invoice totals, minor units.';
COMMENT ON COLUMN analytics.invoice_summary.paid IS 'Sum paid on these invoices, minor units.';
COMMENT ON COLUMN analytics.invoice_summary.outstanding IS 'Amount still due on open invoices, minor units.';
COMMENT ON COLUMN analytics.invoice_summary.uncollectible IS 'Amount due on invoices marked uncollectible, minor units.';

CREATE OR REPLACE VIEW analytics.currency_units WITH (security_barrier) AS
SELECT code AS currency, CASE WHEN code IN ('bif', 'clp', 'djf', 'gnf', 'jpy', 'kmf', 'krw', 'mga', 'pyg', 'rwf',
                                            'ugx', 'vnd', 'vuv', 'xaf', 'xof', 'xpf') THEN 0 ELSE 2 END AS decimals
  FROM (SELECT DISTINCT currency AS code FROM projection.daily_revenue WHERE tenant_id = (SELECT analytics.current_tenant())
        UNION SELECT DISTINCT currency FROM projection.mrr_by_month WHERE tenant_id = (SELECT analytics.current_tenant())) c;
COMMENT ON VIEW analytics.currency_units IS 'How to display amounts: divide a minor-unit amount by 10^decimals (usd: 1099 → 10.99; jpy has 0 decimals: 1099 → ¥1099).';
COMMENT ON COLUMN analytics.currency_units.currency IS 'ISO currency code, lower case, as used by this tenant.';
COMMENT ON COLUMN analytics.currency_units.decimals IS 'Digits after the decimal point in the major unit (0 for zero-decimal currencies).';

CREATE OR REPLACE VIEW analytics.metrics_catalog WITH (security_barrier) AS
SELECT name, question, definition, sql, unit, min_level FROM analytics_private.metrics_catalog;
COMMENT ON VIEW analytics.metrics_catalog IS 'Every revenue metric: the question it answers, its definition, example SQL, unit, and the lowest permission level (summary < standard < full) that may read it. Start here.';
COMMENT ON COLUMN analytics.metrics_catalog.name IS 'Stable metric name.';
COMMENT ON COLUMN analytics.metrics_catalog.question IS 'A question this metric answers, in plain words.';
COMMENT ON COLUMN analytics.metrics_catalog.definition IS 'Exactly how it is computed.';
COMMENT ON COLUMN analytics.metrics_catalog.sql IS 'Example SQL over the analytics views (:name marks a parameter).';
COMMENT ON COLUMN analytics.metrics_catalog.unit IS 'Unit of the figures.';
COMMENT ON COLUMN analytics.metrics_catalog.min_level IS 'Lowest permission level that can read it: summary, standard or full.';

-- Standard level: per-customer and per-transaction rows, no card details.
CREATE OR REPLACE VIEW analytics.customers WITH (security_barrier) AS
SELECT id AS customer_id, email, name, created, deleted, livemode
  FROM projection.customers WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.customers IS 'Stripe customers (current state). Deleted customers stay, with deleted = true.';
COMMENT ON COLUMN analytics.customers.customer_id IS 'Stripe customer id (cus_…).';
COMMENT ON COLUMN analytics.customers.email IS 'Customer email as in Stripe.';
COMMENT ON COLUMN analytics.customers.name IS 'Customer name as in Stripe.';
COMMENT ON COLUMN analytics.customers.created IS 'When the customer was created in Stripe.';
COMMENT ON COLUMN analytics.customers.deleted IS 'true once the customer was deleted in Stripe.';
COMMENT ON COLUMN analytics.customers.livemode IS 'true for live-mode data.';

CREATE OR REPLACE VIEW analytics.charges WITH (security_barrier) AS
SELECT id AS charge_id, created, customer_id, invoice_id, payment_intent_id, currency, amount, amount_captured,
       amount_refunded, status, captured, failure_code, description, livemode
  FROM projection.charges WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.charges IS 'Every charge (payment attempt) in its current state, without card details. Use for payment history and failed payments.';
COMMENT ON COLUMN analytics.charges.charge_id IS 'Stripe charge id (ch_/py_…).';
COMMENT ON COLUMN analytics.charges.created IS 'When the charge was made.';
COMMENT ON COLUMN analytics.charges.customer_id IS 'Stripe customer id, if any.';
COMMENT ON COLUMN analytics.charges.invoice_id IS 'Invoice the charge paid, if any.';
COMMENT ON COLUMN analytics.charges.payment_intent_id IS 'Payment intent the charge belongs to, if any.';
COMMENT ON COLUMN analytics.charges.currency IS 'ISO currency code, lower case.';
COMMENT ON COLUMN analytics.charges.amount IS 'Amount attempted, minor units.';
COMMENT ON COLUMN analytics.charges.amount_captured IS 'Amount captured (the revenue), minor units.';
COMMENT ON COLUMN analytics.charges.amount_refunded IS 'Amount refunded so far, minor units.';
COMMENT ON COLUMN analytics.charges.status IS 'succeeded, failed or pending.';
COMMENT ON COLUMN analytics.charges.captured IS 'true when the amount was captured.';
COMMENT ON COLUMN analytics.charges.failure_code IS 'Why a failed charge failed (e.g. card_declined).';
COMMENT ON COLUMN analytics.charges.description IS 'Charge description (card-number-like digits are masked).';
COMMENT ON COLUMN analytics.charges.livemode IS 'true for live-mode data.';

CREATE OR REPLACE VIEW analytics.failed_payments WITH (security_barrier) AS
SELECT id AS charge_id, created, customer_id, invoice_id, currency, amount, failure_code, livemode
  FROM projection.charges WHERE status = 'failed' AND tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.failed_payments IS 'Failed charges, one row each. For counts per day see analytics.daily_revenue.failed_count.';
COMMENT ON COLUMN analytics.failed_payments.charge_id IS 'Stripe charge id.';
COMMENT ON COLUMN analytics.failed_payments.created IS 'When the payment was attempted.';
COMMENT ON COLUMN analytics.failed_payments.customer_id IS 'Stripe customer id, if any.';
COMMENT ON COLUMN analytics.failed_payments.invoice_id IS 'Invoice the payment was for, if any.';
COMMENT ON COLUMN analytics.failed_payments.currency IS 'ISO currency code, lower case.';
COMMENT ON COLUMN analytics.failed_payments.amount IS 'Amount attempted, minor units.';
COMMENT ON COLUMN analytics.failed_payments.failure_code IS 'Stripe failure code (e.g. card_declined, insufficient_funds).';
COMMENT ON COLUMN analytics.failed_payments.livemode IS 'true for live-mode data.';

CREATE OR REPLACE VIEW analytics.customer_revenue WITH (security_barrier) AS
SELECT c.customer_id, cu.email, cu.name, c.currency, c.livemode, c.gross, c.refunded, c.gross - c.refunded AS net,
       c.payments, c.first_payment, c.last_payment
  FROM (SELECT customer_id, currency, livemode,
               sum(amount_captured) FILTER (WHERE status = 'succeeded')::bigint AS gross,
               sum(amount_refunded) FILTER (WHERE status = 'succeeded')::bigint AS refunded,
               count(*) FILTER (WHERE status = 'succeeded') AS payments,
               min(created) FILTER (WHERE status = 'succeeded') AS first_payment,
               max(created) FILTER (WHERE status = 'succeeded') AS last_payment
          FROM projection.charges
         WHERE customer_id IS NOT NULL AND tenant_id = (SELECT analytics.current_tenant())
         GROUP BY customer_id, currency, livemode) c
  LEFT JOIN projection.customers cu ON cu.tenant_id = (SELECT analytics.current_tenant()) AND cu.id = c.customer_id
 WHERE c.gross IS NOT NULL;
COMMENT ON VIEW analytics.customer_revenue IS 'Revenue per customer and currency over all time. Use for "top customers by revenue".';
COMMENT ON COLUMN analytics.customer_revenue.customer_id IS 'Stripe customer id.';
COMMENT ON COLUMN analytics.customer_revenue.email IS 'Customer email.';
COMMENT ON COLUMN analytics.customer_revenue.name IS 'Customer name.';
COMMENT ON COLUMN analytics.customer_revenue.currency IS 'ISO currency code, lower case.';
COMMENT ON COLUMN analytics.customer_revenue.livemode IS 'true for live-mode data.';
COMMENT ON COLUMN analytics.customer_revenue.gross IS 'Captured amount of the customer''s succeeded charges, minor units.';
COMMENT ON COLUMN analytics.customer_revenue.refunded IS 'Refunded on those charges, minor units.';
COMMENT ON COLUMN analytics.customer_revenue.net IS 'gross - refunded, minor units.';
COMMENT ON COLUMN analytics.customer_revenue.payments IS 'Number of succeeded charges.';
COMMENT ON COLUMN analytics.customer_revenue.first_payment IS 'Time of the first succeeded charge.';
COMMENT ON COLUMN analytics.customer_revenue.last_payment IS 'Time of the latest succeeded charge.';

CREATE OR REPLACE VIEW analytics.subscriptions WITH (security_barrier) AS
SELECT id AS subscription_id, customer_id, status, currency, created, current_period_end, cancel_at_period_end,
       canceled_at, ended_at, mrr, livemode
  FROM projection.subscriptions WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.subscriptions IS 'Subscriptions in their current state with their current MRR contribution.';
COMMENT ON COLUMN analytics.subscriptions.subscription_id IS 'Stripe subscription id (sub_…).';
COMMENT ON COLUMN analytics.subscriptions.customer_id IS 'Stripe customer id.';
COMMENT ON COLUMN analytics.subscriptions.status IS 'Stripe status: trialing, active, past_due, unpaid, canceled, incomplete, …';
COMMENT ON COLUMN analytics.subscriptions.currency IS 'ISO currency code, lower case.';
COMMENT ON COLUMN analytics.subscriptions.created IS 'When the subscription was created.';
COMMENT ON COLUMN analytics.subscriptions.current_period_end IS 'End of the current billing period.';
COMMENT ON COLUMN analytics.subscriptions.cancel_at_period_end IS 'true when set to cancel at the end of the period (still counts in MRR until then).';
COMMENT ON COLUMN analytics.subscriptions.canceled_at IS 'When cancellation was requested.';
COMMENT ON COLUMN analytics.subscriptions.ended_at IS 'When the subscription ended.';
COMMENT ON COLUMN analytics.subscriptions.mrr IS 'This subscription''s MRR now, minor units per month (0 unless active or past_due).';
COMMENT ON COLUMN analytics.subscriptions.livemode IS 'true for live-mode data.';

CREATE OR REPLACE VIEW analytics.invoices WITH (security_barrier) AS
SELECT id AS invoice_id, number, created, customer_id, subscription_id, status, currency, total, amount_due,
       amount_paid, amount_remaining, period_start, period_end, paid_at, livemode
  FROM projection.invoices WHERE NOT deleted AND tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.invoices IS 'Invoices in their current state (deleted drafts excluded).';
COMMENT ON COLUMN analytics.invoices.invoice_id IS 'Stripe invoice id (in_…).';
COMMENT ON COLUMN analytics.invoices.number IS 'Invoice number shown to the customer.';
COMMENT ON COLUMN analytics.invoices.created IS 'When the invoice was created.';
COMMENT ON COLUMN analytics.invoices.customer_id IS 'Stripe customer id.';
COMMENT ON COLUMN analytics.invoices.subscription_id IS 'Subscription the invoice bills, if any (both API versions).';
COMMENT ON COLUMN analytics.invoices.status IS 'draft, open, paid, uncollectible or void.';
COMMENT ON COLUMN analytics.invoices.currency IS 'ISO currency code, lower case.';
COMMENT ON COLUMN analytics.invoices.total IS 'Invoice total after discounts and tax, minor units.';
COMMENT ON COLUMN analytics.invoices.amount_due IS 'Amount due, minor units.';
COMMENT ON COLUMN analytics.invoices.amount_paid IS 'Amount paid, minor units.';
COMMENT ON COLUMN analytics.invoices.amount_remaining IS 'Amount still due, minor units.';
COMMENT ON COLUMN analytics.invoices.period_start IS 'Start of the billed period.';
COMMENT ON COLUMN analytics.invoices.period_end IS 'End of the billed period.';
COMMENT ON COLUMN analytics.invoices.paid_at IS 'When the invoice was paid.';
COMMENT ON COLUMN analytics.invoices.livemode IS 'true for live-mode data.';

-- Full level: card brand and last four digits (never more: full numbers are never stored).
CREATE OR REPLACE VIEW analytics.charge_cards WITH (security_barrier) AS
SELECT id AS charge_id, card_brand, card_last4, livemode
  FROM projection.charges WHERE tenant_id = (SELECT analytics.current_tenant());
COMMENT ON VIEW analytics.charge_cards IS 'The card of each charge: brand and last four digits only. Join to analytics.charges on charge_id.';
COMMENT ON COLUMN analytics.charge_cards.charge_id IS 'Stripe charge id.';
COMMENT ON COLUMN analytics.charge_cards.card_brand IS 'Card brand (visa, mastercard, amex, …).';
COMMENT ON COLUMN analytics.charge_cards.card_last4 IS 'Last four digits of the card number.';
COMMENT ON COLUMN analytics.charge_cards.livemode IS 'true for live-mode data.';

RESET ROLE;

GRANT SELECT ON analytics.daily_revenue, analytics.mrr_by_month, analytics.mrr_movements, analytics.subscriber_churn,
                analytics.revenue_churn, analytics.invoice_summary, analytics.currency_units, analytics.metrics_catalog
    TO revenue_reader_summary, revenue_reader_standard, revenue_reader_full;
GRANT SELECT ON analytics.customers, analytics.charges, analytics.failed_payments, analytics.customer_revenue,
                analytics.subscriptions, analytics.invoices
    TO revenue_reader_standard, revenue_reader_full;
GRANT SELECT ON analytics.charge_cards TO revenue_reader_full;
