-- A new bucket starts with the tokens its first lease asks for above the reserve, so that lease is due at once.
-- Starting empty made every new connection's first requests wait for the refill of the interactive reserve and
-- a lease, in the account's bucket and then in the endpoint's: 0.16 s before the first page of an import was
-- asked for (request_budget.py). A bucket idle for longer than its capacity's refill is full anyway; this only
-- changes a connection's very first requests, and within the schedule's bound (level + rate per second).
CREATE OR REPLACE FUNCTION stripe_budget_take(key text, lease integer, per_second double precision,
                                              capacity double precision, reserve double precision,
                                              horizon_s double precision)
RETURNS TABLE (granted integer, wait_s double precision) LANGUAGE plpgsql AS $$
DECLARE
    now_ts timestamptz := clock_timestamp();
    bucket stripe_request_budgets%ROWTYPE;
    available double precision;
    due_s double precision;
BEGIN
    INSERT INTO stripe_request_budgets (budget_key, tokens, refilled_at) VALUES (key, LEAST(capacity, reserve + lease), now_ts)
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
