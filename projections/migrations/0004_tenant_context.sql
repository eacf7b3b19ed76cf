-- The AI query layer's identity: read-only login roles per permission level, and a tenant context
-- that a reader sets per transaction but cannot forge.
--
-- A reader runs `SELECT set_config('app.tenant_id', <id>, true), set_config('app.tenant_sig', <sig>, true)`
-- where <sig> is HMAC-SHA256(tenant id) under a key only the owner can read
-- (analytics_private.tenant_signature, called by the trusted read client). analytics.current_tenant()
-- returns the tenant only when the signature matches, so set_config games with another tenant's
-- id yield nothing, and without a context a reader sees nothing.

CREATE SCHEMA IF NOT EXISTS analytics_private;
REVOKE ALL ON SCHEMA analytics_private FROM PUBLIC;
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA analytics_private;

CREATE TABLE analytics_private.context_key (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    key      bytea NOT NULL
);
INSERT INTO analytics_private.context_key (key) VALUES (analytics_private.gen_random_bytes(32));
REVOKE ALL ON analytics_private.context_key FROM PUBLIC;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'analytics_owner') THEN
        CREATE ROLE analytics_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'revenue_reader_summary') THEN
        CREATE ROLE revenue_reader_summary LOGIN NOINHERIT CONNECTION LIMIT 50;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'revenue_reader_standard') THEN
        CREATE ROLE revenue_reader_standard LOGIN NOINHERIT CONNECTION LIMIT 50;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'revenue_reader_full') THEN
        CREATE ROLE revenue_reader_full LOGIN NOINHERIT CONNECTION LIMIT 50;
    END IF;
END $$;
-- The migrating role must be able to hand views to analytics_owner.
GRANT analytics_owner TO CURRENT_USER;

CREATE SCHEMA IF NOT EXISTS analytics;
REVOKE ALL ON SCHEMA analytics FROM PUBLIC;
GRANT USAGE ON SCHEMA analytics TO analytics_owner, revenue_reader_summary, revenue_reader_standard, revenue_reader_full;
-- Readers only read: no objects of their own anywhere.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

CREATE FUNCTION analytics_private.tenant_signature(tenant text) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, analytics_private AS $$
    SELECT encode(analytics_private.hmac(convert_to(tenant, 'UTF8'), (SELECT key FROM analytics_private.context_key), 'sha256'), 'hex')
$$;
REVOKE ALL ON FUNCTION analytics_private.tenant_signature(text) FROM PUBLIC;

CREATE FUNCTION analytics.current_tenant() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, analytics_private AS $$
    SELECT c.t
      FROM (SELECT nullif(current_setting('app.tenant_id', true), '') AS t,
                   current_setting('app.tenant_sig', true) AS s) c
     WHERE c.t IS NOT NULL AND c.s = analytics_private.tenant_signature(c.t)
$$;
COMMENT ON FUNCTION analytics.current_tenant() IS
    'The tenant this transaction is bound to (app.tenant_id, verified by app.tenant_sig), or NULL: every analytics view shows only this tenant''s rows.';
REVOKE ALL ON FUNCTION analytics.current_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION analytics.current_tenant() TO analytics_owner, revenue_reader_summary, revenue_reader_standard, revenue_reader_full;
GRANT USAGE ON SCHEMA analytics_private TO analytics_owner;
