-- Mode-bound reader roles (see the control plane's 0063): a tenant's role of one level may be bound to live or
-- test data; analytics.current_livemodes() says which livemode values the session's role may see, and the
-- row-level security of the projection tables (0065) applies it, so no SQL reaches the other mode's rows.
ALTER TABLE analytics_private.reader_roles ADD COLUMN mode text NOT NULL DEFAULT 'all'
    CHECK (mode IN ('all', 'live', 'test'));
ALTER TABLE analytics_private.reader_roles DROP CONSTRAINT reader_roles_pkey;
ALTER TABLE analytics_private.reader_roles ADD PRIMARY KEY (tenant_id, level, mode);

CREATE OR REPLACE FUNCTION analytics.current_livemodes() RETURNS boolean[]
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, analytics_private AS $$
    SELECT CASE (SELECT r.mode FROM analytics_private.reader_roles r WHERE r.role_name = session_user)
               WHEN 'live' THEN ARRAY[true] WHEN 'test' THEN ARRAY[false] ELSE ARRAY[true, false] END
$$;
REVOKE ALL ON FUNCTION analytics.current_livemodes() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION analytics.current_livemodes()
    TO analytics_owner, revenue_reader_summary, revenue_reader_standard, revenue_reader_full;

CREATE FUNCTION analytics_private.ensure_reader_role(
    tenant text, reader_level text, reader_mode text, reader_password text, connection_limit integer,
    statement_timeout_ms integer, idle_timeout_ms integer, temp_file_limit_kb integer
) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, analytics_private AS $$
DECLARE
    role text := 'rdr_' || substr(encode(sha256(convert_to(tenant, 'UTF8')), 'hex'), 1, 24) || '_' || reader_level
                 || CASE WHEN reader_mode = 'all' THEN '' ELSE '_' || reader_mode END;
BEGIN
    IF reader_mode NOT IN ('all', 'live', 'test') THEN
        RAISE EXCEPTION 'unknown mode %', reader_mode;
    END IF;
    IF reader_level NOT IN ('summary', 'standard', 'full') THEN
        RAISE EXCEPTION 'unknown permission level %', reader_level;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role) THEN
        EXECUTE format('CREATE ROLE %I LOGIN INHERIT NOCREATEDB NOCREATEROLE NOREPLICATION IN ROLE %I',
                       role, 'revenue_reader_' || reader_level);
        EXECUTE format('GRANT %I TO CURRENT_USER', role);  -- so this role can drop it again (DROP OWNED)
    END IF;
    -- A mode-bound role shares the tenant's budget: half the connections (at least two, what a pool holds), so
    -- a tenant's roles of one level hold twice the limit at most (all + live + test), not three times.
    EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L CONNECTION LIMIT %s', role, reader_password,
                   CASE WHEN reader_mode = 'all' THEN connection_limit ELSE greatest(2, connection_limit / 2) END);
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
    INSERT INTO analytics_private.reader_roles (tenant_id, level, mode, role_name) VALUES (tenant, reader_level, reader_mode, role)
    ON CONFLICT (tenant_id, level, mode) DO NOTHING;
    RETURN role;
END $$;
REVOKE ALL ON FUNCTION analytics_private.ensure_reader_role(text, text, text, text, integer, integer, integer, integer) FROM PUBLIC;

-- The function without a mode (every caller so far) makes the role that reads both modes.
CREATE OR REPLACE FUNCTION analytics_private.ensure_reader_role(
    tenant text, reader_level text, reader_password text, connection_limit integer,
    statement_timeout_ms integer, idle_timeout_ms integer, temp_file_limit_kb integer
) RETURNS text LANGUAGE sql SET search_path = pg_catalog, analytics_private AS $$
    SELECT analytics_private.ensure_reader_role(tenant, reader_level, 'all', reader_password, connection_limit,
                                                statement_timeout_ms, idle_timeout_ms, temp_file_limit_kb)
$$;
REVOKE ALL ON FUNCTION analytics_private.ensure_reader_role(text, text, text, integer, integer, integer, integer) FROM PUBLIC;
