-- Reader roles run without JIT compilation. The MRR views' row estimates are large enough to trigger it,
-- and compiling took ~0.5 s of a 0.6 s query (the query itself: ~80 ms) on a 1,000-customer tenant; the
-- AI layer's queries are short, so JIT never pays for itself there. Set on each tenant's login role
-- (settings of the level group roles are not inherited), for new roles by ensure_reader_role.
CREATE OR REPLACE FUNCTION analytics_private.ensure_reader_role(
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
    EXECUTE format('ALTER ROLE %I SET jit = off', role);
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

DO $$
DECLARE
    role text;
BEGIN
    FOR role IN SELECT role_name FROM analytics_private.reader_roles LOOP
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = role) THEN
            EXECUTE format('ALTER ROLE %I SET jit = off', role);
        END IF;
    END LOOP;
END $$;
