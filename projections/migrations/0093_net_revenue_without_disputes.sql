-- rerun-after-replay: re-applied after a replay swaps in a rebuilt projection schema. Idempotent.
-- Net revenue is gross less refunds only: the connector reads no disputes or balance transactions, so a charge lost
-- to a dispute and Stripe's fees stay in. Said where a reader of the views looks (the catalog says it too).
COMMENT ON VIEW analytics.daily_revenue IS 'Revenue per day (the tenant''s time zone) and currency: gross (captured succeeded charges, by charge day), refunded (by refund day), net = gross - refunded, and failed payments. Disputes (chargebacks) and Stripe''s fees are not subtracted. Integer minor units. Filter livemode = true for real money. Use for "revenue in October", "net revenue last week".';
COMMENT ON COLUMN analytics.daily_revenue.net IS 'gross - refunded, minor units; can be negative. Disputes (chargebacks) and Stripe''s fees are not subtracted: no dispute or balance transaction is read, so a charge lost to a dispute still counts.';
COMMENT ON COLUMN analytics.daily_revenue_reporting.net IS 'gross - refunded. Disputes (chargebacks) and Stripe''s fees are not subtracted.';
COMMENT ON COLUMN analytics.customer_revenue.net IS 'gross - refunded, minor units. Disputes (chargebacks) and Stripe''s fees are not subtracted.';
