-- A page of this tenant's import killed the process reading it alone (ingestor/sources/page_pool.py): from then
-- on every worker, and every worker started later, reads the tenant's import pages alone, one slice at a time,
-- so its data never takes the shared page pool (and the other tenants' pages in it) down again. Set on each of
-- the tenant's connections (the page pool tells tenants apart). Cleared by an operator once the cause is fixed
-- (docs/operating.md, `unreadable_page`); a worker that learnt it keeps it until it restarts.
ALTER TABLE stripe_connections ADD COLUMN pages_read_alone_since timestamptz;
