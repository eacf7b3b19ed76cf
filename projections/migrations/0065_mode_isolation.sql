-- Row-level security keeps a mode-bound reader (0064) to its mode: on every projection table with a livemode
-- column, rows of the other mode are not there for it. The set of modes is one InitPlan per query, not a
-- call per row. Tables without livemode (refunds, refunded levels, subscription versions) are read only
-- through their charge or subscription, whose rows this filters.
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

DO $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relrowsecurity
                AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'livemode'
                            AND NOT a.attisdropped)
    LOOP
        EXECUTE format('ALTER POLICY tenant_isolation ON %I.%I USING (tenant_id = (SELECT analytics.current_tenant()) '
                       'AND livemode = ANY (CAST((SELECT analytics.current_livemodes()) AS boolean[])))', current_schema(), t);
    END LOOP;
END $$;
