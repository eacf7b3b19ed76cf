-- Time slices of an import run (ingestor/sources/slices.py): each resource's created range paged by many
-- cursors at once, each with its own checkpoint, so a killed importer resumes every slice where its last
-- acknowledged page ended; each slice is claimed by one process at a time, so several workers share an import. The resource's row in import_runs keeps the run, its totals and done_at.
CREATE TABLE import_slices (
    connection_id     text NOT NULL REFERENCES stripe_connections (connection_id) ON DELETE CASCADE,
    resource          text NOT NULL,
    run_id            text NOT NULL,
    slice_id          integer NOT NULL,
    range_start       bigint NOT NULL,   -- created[gte]; moves up when the slice is split
    range_end         bigint NOT NULL,   -- created[lte]
    last_object_id    text,              -- the cursor: the oldest object published so far
    oldest_created    bigint,
    objects_published bigint NOT NULL DEFAULT 0,
    done              boolean NOT NULL DEFAULT false,
    claimed_by        text,              -- the importer process paging it now (several may share an import)
    claimed_until     timestamptz,       -- renewed while it pages; once past, any process may take the slice
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, resource, run_id, slice_id)
);

-- The importer's current (or last) pass over the resource: when it began and the count then, so progress
-- shows objects per second and a time left.
ALTER TABLE import_runs
    ADD COLUMN pass_started_at       timestamptz,
    ADD COLUMN objects_at_pass_start bigint NOT NULL DEFAULT 0;
CREATE INDEX import_slices_claimed ON import_slices (claimed_by) WHERE claimed_by IS NOT NULL;
