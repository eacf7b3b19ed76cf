-- The processes importing each connection now (ingestor/sources/importer.py), so they share its slices. Each
-- pass renews its row every second with how many slices it pages and whether it waits for one (it has none and
-- another process pages some of the import). A process takes what the budget can use beyond what the others
-- page, and only its share while one waits; for a waiting one, a holder lets slices over its share go and
-- splits one off at a checkpoint, so a process that joins an import another holds gets work within seconds
-- instead of waiting for the other's pass to end. A dead process's row counts no more once its lease is past.
CREATE TABLE import_workers (
    connection_id text NOT NULL REFERENCES stripe_connections (connection_id) ON DELETE CASCADE,
    worker_id     text NOT NULL,
    seen_until    timestamptz NOT NULL,
    paging        integer NOT NULL DEFAULT 0,
    waiting       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (connection_id, worker_id)
);
