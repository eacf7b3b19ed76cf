-- A slice split off keeps its guess of its density (what its parent had seen, and over how many seconds:
-- ingestor/sources/slices.py) for whichever process claims it: another process importing the connection (a split
-- given to it) or this one after a restart. Before, a slice claimed from the database waited for its first page:
-- a half given to another process could not be split before it, and a half whose top was in a burst had nothing to
-- compare its first page with, so it took that page's density for its whole range, and was split at its middle and
-- on down to the burst, each half on the way sparse and ending in a part-empty page.
ALTER TABLE import_slices
    ADD COLUMN inherited_density double precision CHECK (inherited_density >= 0),
    ADD COLUMN inherited_span bigint NOT NULL DEFAULT 0 CHECK (inherited_span >= 0);
