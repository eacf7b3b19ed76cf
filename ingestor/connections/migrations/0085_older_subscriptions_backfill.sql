-- Connections imported before 0084 listed subscriptions within the window only: every subscription created before
-- it and live today is missing, and MRR leaves it out, silently. Their subscriptions are listed again, whatever
-- their age: a finished run of that resource becomes a new run of it alone (the importer picks it up as pending,
-- and the check against Stripe follows it); an unfinished one gets the time before its window as one more slice.
-- What is read again is deduplicated downstream (a snapshot's event id does not depend on when it was read).
UPDATE import_runs
   SET listed_from = 0, run_id = 'imp_' || substr(md5(random()::text || connection_id), 1, 12),
       reason = 'older_subscriptions', last_object_id = NULL, oldest_created = NULL, objects_published = 0,
       done_at = NULL, paused_reason = NULL, started_at = now(), updated_at = now(), pass_started_at = NULL,
       objects_at_pass_start = 0
 WHERE resource = 'subscriptions' AND listed_from IS NULL AND done_at IS NOT NULL;

DELETE FROM import_slices s USING import_runs r
 WHERE s.connection_id = r.connection_id AND s.resource = r.resource AND r.resource = 'subscriptions'
   AND s.run_id <> r.run_id;

INSERT INTO import_slices (connection_id, resource, run_id, slice_id, range_start, range_end)
SELECT r.connection_id, r.resource, r.run_id, max(s.slice_id) + 1, 0, r.window_start - 1
  FROM import_runs r JOIN import_slices s USING (connection_id, resource, run_id)
 WHERE r.resource = 'subscriptions' AND r.listed_from IS NULL AND r.done_at IS NULL AND r.window_start > 0
 GROUP BY r.connection_id, r.resource, r.run_id, r.window_start;

UPDATE import_runs SET listed_from = 0 WHERE resource = 'subscriptions' AND listed_from IS NULL;
