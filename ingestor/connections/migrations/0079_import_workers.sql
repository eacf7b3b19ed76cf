-- The processes importing each connection now (ingestor/sources/importer.py), so they share its slices: each
-- pages at most its share of the slices the budget can use, and one holding more lets the rest go at their next
-- checkpoints. A process that joins an import whose slices another holds is seen within a second and gets work,
-- instead of waiting for the other's pass to end. Renewed while it passes over the connection; a dead
-- process drops out once its lease is past.
CREATE TABLE import_workers (
    connection_id text NOT NULL REFERENCES stripe_connections (connection_id) ON DELETE CASCADE,
    worker_id     text NOT NULL,
    seen_until    timestamptz NOT NULL,
    PRIMARY KEY (connection_id, worker_id)
);
