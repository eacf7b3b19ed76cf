-- "Check against Stripe" runs (ingestor/sources/reconcile.py): per connection, the range compared, why
-- it ran (on demand, after an import), whether everything matched, and the report (counts, ids missing
-- on either side, charge money per currency).
CREATE TABLE reconcile_runs (
    tenant_id     text NOT NULL REFERENCES tenants (tenant_id),
    connection_id text NOT NULL REFERENCES stripe_connections (connection_id),
    run_id        bigserial,
    window_start  bigint NOT NULL,
    window_end    bigint NOT NULL,
    reason        text NOT NULL,
    matches       boolean NOT NULL,
    report        jsonb NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, run_id)
);
CREATE INDEX reconcile_runs_latest ON reconcile_runs (tenant_id, connection_id, finished_at);
