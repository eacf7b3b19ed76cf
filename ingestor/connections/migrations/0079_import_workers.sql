-- The processes importing each connection now (ingestor/sources/importer.py), so they share its slices. Each
-- pass renews its row every second with how many slices it pages and whether it wants more than it finds (room
-- for more, no free slice to claim, none of its own worth splitting). A process takes what the budget can use
-- beyond what the others page, and only its share while one wants more; for that one, a holder lets slices over
-- its share go and splits one off at a checkpoint, so a process that joins an import another holds gets work
-- within seconds instead of waiting for the other's pass to end. A dead process's row counts no more once its
-- lease is past.
CREATE TABLE import_workers (
    connection_id text NOT NULL REFERENCES stripe_connections (connection_id) ON DELETE CASCADE,
    worker_id     text NOT NULL,
    seen_until    timestamptz NOT NULL,
    paging        integer NOT NULL DEFAULT 0,
    wants_more    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (connection_id, worker_id)
);
