-- Row-level security on every projection table the analytics views read: rows are visible only
-- for the tenant of the transaction (analytics.current_tenant()). The projector owns the tables
-- and is not subject to it; analytics_owner is. The aggregate views here are handed to
-- analytics_owner, so whoever reads them (the analytics views, an operator) sees one tenant's rows:
-- the one bound to the transaction.
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

DO $$
DECLARE
    t text;
BEGIN
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO analytics_owner', current_schema());
    FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = current_schema() AND c.relkind = 'r'
                AND c.relname NOT IN ('processed_events', 'consumer_positions')
    LOOP
        EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', current_schema(), t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I.%I USING (tenant_id = (SELECT analytics.current_tenant()))',
                       current_schema(), t);
        EXECUTE format('GRANT SELECT ON %I.%I TO analytics_owner', current_schema(), t);
    END LOOP;
    FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = current_schema() AND c.relkind = 'v'
    LOOP
        EXECUTE format('ALTER VIEW %I.%I OWNER TO analytics_owner', current_schema(), t);
    END LOOP;
END $$;
