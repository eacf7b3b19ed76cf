-- Request budgets lease ahead (ingestor/stripe_api/request_budget.py): a lease is granted at once and says when
-- its tokens are due, the time the bucket would have held them. The bucket's level may go below zero (tokens
-- promised ahead), at most `horizon_s` of refill below the reserve; past that the lease is refused with the
-- time to ask again. A process whose event loop runs late then only uses its tokens late, instead of the
-- bucket filling up unasked while it is busy and the tokens past its capacity being lost. Sends stay on the
-- bucket's schedule: no one-second window gets more than the budget plus the capacity.
-- The five-argument function stays for processes of the previous release, now this one with no horizon
-- (granted only when due at once: what it did before; a level below zero only makes them wait longer).
CREATE FUNCTION stripe_budget_take(key text, lease integer, per_second double precision,
                                   capacity double precision, reserve double precision, horizon_s double precision)
RETURNS TABLE (granted integer, wait_s double precision) LANGUAGE plpgsql AS $$
DECLARE
    now_ts timestamptz := clock_timestamp();
    bucket stripe_request_budgets%ROWTYPE;
    available double precision;
    due_s double precision;
BEGIN
    INSERT INTO stripe_request_budgets (budget_key, tokens, refilled_at) VALUES (key, 0, now_ts)
    ON CONFLICT (budget_key) DO NOTHING;
    SELECT * INTO bucket FROM stripe_request_budgets b WHERE b.budget_key = key FOR UPDATE;
    IF bucket.blocked_until IS NOT NULL AND bucket.blocked_until > now_ts THEN
        RETURN QUERY SELECT 0, extract(epoch FROM bucket.blocked_until - now_ts)::double precision;
        RETURN;
    END IF;
    available := LEAST(capacity, bucket.tokens + per_second * extract(epoch FROM now_ts - bucket.refilled_at));
    due_s := GREATEST(0, (reserve + lease - available) / per_second);
    IF due_s <= horizon_s THEN
        UPDATE stripe_request_budgets SET tokens = available - lease, refilled_at = now_ts WHERE budget_key = key;
        RETURN QUERY SELECT lease, due_s;
    ELSE
        UPDATE stripe_request_budgets SET tokens = available, refilled_at = now_ts WHERE budget_key = key;
        RETURN QUERY SELECT 0, due_s - horizon_s;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION stripe_budget_take(key text, lease integer, per_second double precision,
                                              capacity double precision, reserve double precision)
RETURNS TABLE (granted integer, wait_s double precision) LANGUAGE sql AS $$
    SELECT * FROM stripe_budget_take(key, lease, per_second, capacity, reserve, 0)
$$;
