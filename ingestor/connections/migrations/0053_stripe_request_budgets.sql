-- One request budget per Stripe account (a connection, or key:<digest> before one) and per endpoint of it
-- ("<account> GET /v1/charges"), shared by every process and machine (ingestor/stripe_api/request_budget.py):
-- a token bucket refilled at the budget's rate, and a block Stripe's 429 sets for everyone.
CREATE TABLE stripe_request_budgets (
    budget_key    text PRIMARY KEY,
    tokens        double precision NOT NULL,
    refilled_at   timestamptz NOT NULL,
    blocked_until timestamptz
);

-- Takes `lease` tokens if the bucket holds that many above `reserve` (else none), refilling it first at
-- `per_second` up to `capacity`; returns how many it took and, if none, how long until enough are there.
-- One row lock per call; a new bucket starts empty (no burst).
CREATE FUNCTION stripe_budget_take(key text, lease integer, per_second double precision,
                                   capacity double precision, reserve double precision)
RETURNS TABLE (granted integer, wait_s double precision) LANGUAGE plpgsql AS $$
DECLARE
    now_ts timestamptz := clock_timestamp();
    bucket stripe_request_budgets%ROWTYPE;
    available double precision;
BEGIN
    INSERT INTO stripe_request_budgets (budget_key, tokens, refilled_at) VALUES (key, 0, now_ts)
    ON CONFLICT (budget_key) DO NOTHING;
    SELECT * INTO bucket FROM stripe_request_budgets b WHERE b.budget_key = key FOR UPDATE;
    IF bucket.blocked_until IS NOT NULL AND bucket.blocked_until > now_ts THEN
        RETURN QUERY SELECT 0, extract(epoch FROM bucket.blocked_until - now_ts)::double precision;
        RETURN;
    END IF;
    available := LEAST(capacity, bucket.tokens + per_second * extract(epoch FROM now_ts - bucket.refilled_at));
    IF available - reserve >= lease THEN
        UPDATE stripe_request_budgets SET tokens = available - lease, refilled_at = now_ts WHERE budget_key = key;
        RETURN QUERY SELECT lease, 0::double precision;
    ELSE
        UPDATE stripe_request_budgets SET tokens = available, refilled_at = now_ts WHERE budget_key = key;
        RETURN QUERY SELECT 0, (reserve + lease - available) / per_second;
    END IF;
END $$;
