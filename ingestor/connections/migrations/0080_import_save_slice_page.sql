-- One acknowledged page of an import slice saved in one statement (ingestor/sources/checkpoints.py): the slice's
-- place and claim, and the page added to the resource's totals, or nothing if the claim was lost or a newer run
-- replaced this one. Every slice of a resource adds to the same import_runs row; saved as a transaction of four
-- statements from the worker, that row's lock was held across the worker's event loop between them, so under load
-- the slices of the resource with the most to list queued on it.
CREATE FUNCTION import_save_slice_page(p_connection_id text, p_resource text, p_run_id text, p_slice_id integer,
                                       p_last_object_id text, p_oldest_created bigint, p_done boolean,
                                       p_published bigint, p_worker text, p_lease_s double precision)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    -- Lock order, as in every statement that touches both (start_import too): the run's row, then the slice's.
    PERFORM 1 FROM import_runs
      WHERE connection_id = p_connection_id AND resource = p_resource AND run_id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;  -- a newer run replaced this one
    END IF;
    UPDATE import_slices SET last_object_id = p_last_object_id, oldest_created = p_oldest_created, done = p_done,
           objects_published = objects_published + p_published,
           claimed_until = now() + make_interval(secs => p_lease_s), updated_at = now()
     WHERE connection_id = p_connection_id AND resource = p_resource AND run_id = p_run_id AND slice_id = p_slice_id
       AND claimed_by = p_worker;
    IF NOT FOUND THEN
        RETURN false;  -- the claim was lost: the slice is someone else's
    END IF;
    UPDATE import_runs SET objects_published = objects_published + p_published,
           oldest_created = LEAST(COALESCE(oldest_created, p_oldest_created), p_oldest_created), updated_at = now()
     WHERE connection_id = p_connection_id AND resource = p_resource AND run_id = p_run_id;
    RETURN true;
END
$$;
