-- No silent default for money, in the database too: a currency is three lowercase letters, never ''
-- (a subscription's currency used to default to '' when it sat on its items, summing currencies into
-- one row). The canonical model refuses such objects first; these make any slip fail loudly, per
-- record (the projector dead-letters what Postgres refuses and applies the rest). NOT VALID: rows
-- written before are not re-checked (a replay rebuilds them through the canonical model).
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

ALTER TABLE customers ADD CONSTRAINT customers_currency_iso CHECK (currency ~ '^[a-z]{3}$') NOT VALID;
ALTER TABLE charges ADD CONSTRAINT charges_currency_iso CHECK (currency ~ '^[a-z]{3}$') NOT VALID;
ALTER TABLE refunds ADD CONSTRAINT refunds_currency_iso CHECK (currency ~ '^[a-z]{3}$') NOT VALID;
ALTER TABLE subscriptions ADD CONSTRAINT subscriptions_currency_iso CHECK (currency ~ '^[a-z]{3}$') NOT VALID;
ALTER TABLE subscription_versions ADD CONSTRAINT subscription_versions_currency_iso
    CHECK (currency ~ '^[a-z]{3}$') NOT VALID;
ALTER TABLE invoices ADD CONSTRAINT invoices_currency_iso CHECK (currency ~ '^[a-z]{3}$') NOT VALID;
ALTER TABLE payment_intents ADD CONSTRAINT payment_intents_currency_iso CHECK (currency ~ '^[a-z]{3}$') NOT VALID;
-- Amounts are never negative (a refund is its own row, not a negative charge).
ALTER TABLE charges ADD CONSTRAINT charges_amounts_not_negative
    CHECK (amount >= 0 AND amount_captured >= 0 AND amount_refunded >= 0) NOT VALID;
ALTER TABLE payment_intents ADD CONSTRAINT payment_intents_amounts_not_negative
    CHECK (amount >= 0 AND amount_received >= 0) NOT VALID;
