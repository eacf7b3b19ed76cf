-- Each process importing a connection says, with its row, the objects it expects left per resource in the slices it
-- pages (Infinity for a resource whose first page is out). The others rank the account's bulk requests by the
-- import's work left, not their own: a process holding a few of the largest resource's slices ranked its requests
-- below its other resources', and they waited 100-500 ms a time for the account's tokens while the other process
-- ranked them first (two workers, a bulk migration's history at 300 ms: charges, the import's long pole, fell to
-- 15-19 requests a second of its endpoint's 22).
ALTER TABLE import_workers
    ADD COLUMN work_left_resources text[] NOT NULL DEFAULT '{}',
    ADD COLUMN work_left_objects double precision[] NOT NULL DEFAULT '{}',
    ADD CONSTRAINT import_workers_work_left_pairs
        CHECK (cardinality(work_left_resources) = cardinality(work_left_objects));
