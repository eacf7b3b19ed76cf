-- Reader credentials per tenant: each tenant's readers log in with login roles of their own, one per
-- permission level, so the tenant a session reads is the role it logged in as: no context to forge,
-- no other tenant's query text in pg_stat_activity, no other tenant's session to cancel, and a
-- connection limit of its own. The level roles (revenue_reader_summary, _standard, _full) hold the
-- grants and become NOLOGIN groups; a tenant's role inherits exactly one of them.
--
-- The control plane decides when (tenant created, deleted) and keeps the passwords (encrypted by the
-- key vault); these functions define what a reader role is. docs/security.md says why it holds.

ALTER ROLE revenue_reader_summary NOLOGIN;
ALTER ROLE revenue_reader_standard NOLOGIN;
ALTER ROLE revenue_reader_full NOLOGIN;

CREATE TABLE analytics_private.reader_roles (
    tenant_id  text NOT NULL,
    level      text NOT NULL CHECK (level IN ('summary', 'standard', 'full')),
    role_name  text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, level)
);
REVOKE ALL ON analytics_private.reader_roles FROM PUBLIC;

-- The tenant of this session: its login role's, when it is a tenant reader (nothing can change
-- session_user but a superuser); otherwise a context bound with a signature that expires, for
-- trusted owner sessions (operators, tests). A tenant reader's own context settings are ignored.
CREATE FUNCTION analytics_private.tenant_signature(tenant text, expires bigint) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, analytics_private AS $$
    SELECT encode(analytics_private.hmac(convert_to(tenant || '|' || expires::text, 'UTF8'),
                                         (SELECT key FROM analytics_private.context_key), 'sha256'), 'hex')
$$;
REVOKE ALL ON FUNCTION analytics_private.tenant_signature(text, bigint) FROM PUBLIC;
DROP FUNCTION analytics_private.tenant_signature(text);

CREATE OR REPLACE FUNCTION analytics.current_tenant() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, analytics_private AS $$
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM analytics_private.reader_roles r WHERE r.role_name = session_user)
            THEN (SELECT r.tenant_id FROM analytics_private.reader_roles r WHERE r.role_name = session_user)
        ELSE (SELECT c.t
                FROM (SELECT nullif(current_setting('app.tenant_id', true), '') AS t,
                             nullif(current_setting('app.tenant_expires', true), '') AS e,
                             current_setting('app.tenant_sig', true) AS s) c
               WHERE c.t IS NOT NULL AND c.e ~ '^[0-9]{1,12}$'
                 AND c.e::bigint > extract(epoch FROM now())
                 AND c.s = analytics_private.tenant_signature(c.t, c.e::bigint))
    END
$$;

-- Creates (or updates) the tenant's reader role of one level, with the limits the database enforces
-- whatever the client does: read-only transactions by default, statement and idle-in-transaction
-- timeouts, a temp-file limit the role cannot raise, a connection limit. Returns the role's name.
CREATE FUNCTION analytics_private.ensure_reader_role(
    tenant text, reader_level text, reader_password text, connection_limit integer,
    statement_timeout_ms integer, idle_timeout_ms integer, temp_file_limit_kb integer
) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, analytics_private AS $$
DECLARE
    role text := 'rdr_' || substr(encode(sha256(convert_to(tenant, 'UTF8')), 'hex'), 1, 24) || '_' || reader_level;
BEGIN
    IF reader_level NOT IN ('summary', 'standard', 'full') THEN
        RAISE EXCEPTION 'unknown permission level %', reader_level;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role) THEN
        EXECUTE format('CREATE ROLE %I LOGIN INHERIT NOCREATEDB NOCREATEROLE NOREPLICATION IN ROLE %I',
                       role, 'revenue_reader_' || reader_level);
        EXECUTE format('GRANT %I TO CURRENT_USER', role);  -- so this role can drop it again (DROP OWNED)
    END IF;
    EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L CONNECTION LIMIT %s', role, reader_password, connection_limit);
    EXECUTE format('ALTER ROLE %I SET default_transaction_read_only = on', role);
    EXECUTE format('ALTER ROLE %I SET statement_timeout = %L', role, statement_timeout_ms || 'ms');
    EXECUTE format('ALTER ROLE %I SET idle_in_transaction_session_timeout = %L', role, idle_timeout_ms || 'ms');
    EXECUTE format('ALTER ROLE %I SET lock_timeout = %L', role, statement_timeout_ms || 'ms');
    BEGIN
        EXECUTE format('ALTER ROLE %I SET temp_file_limit = %L', role, temp_file_limit_kb || 'kB');
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'cannot set temp_file_limit on reader roles: a superuser must run service/sql/database_setup.sql';
    END;
    INSERT INTO analytics_private.reader_roles (tenant_id, level, role_name) VALUES (tenant, reader_level, role)
    ON CONFLICT (tenant_id, level) DO NOTHING;
    RETURN role;
END $$;
REVOKE ALL ON FUNCTION analytics_private.ensure_reader_role(text, text, text, integer, integer, integer, integer) FROM PUBLIC;

-- Drops the tenant's reader roles and whatever they own (large objects, if a superuser did not revoke
-- them) and ends their sessions.
CREATE FUNCTION analytics_private.drop_reader_roles(tenant text) RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, analytics_private AS $$
DECLARE
    role text;
    dropped integer := 0;
BEGIN
    FOR role IN SELECT role_name FROM analytics_private.reader_roles WHERE tenant_id = tenant LOOP
        PERFORM pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = role;
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = role) THEN
            EXECUTE format('DROP OWNED BY %I', role);
            EXECUTE format('DROP ROLE %I', role);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    DELETE FROM analytics_private.reader_roles WHERE tenant_id = tenant;
    RETURN dropped;
END $$;
REVOKE ALL ON FUNCTION analytics_private.drop_reader_roles(text) FROM PUBLIC;

-- Readers create nothing, not even temporary tables.
DO $$ BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END $$;
