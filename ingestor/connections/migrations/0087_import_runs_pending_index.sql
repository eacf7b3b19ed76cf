-- Each worker looks for pending imports every scan interval, and once passes run on their own (a freed place is
-- filled at once), more often than once a round: the runs still to do, by connection, with their last pass.
CREATE INDEX import_runs_pending ON import_runs (connection_id, pass_started_at)
    WHERE done_at IS NULL AND paused_reason IS NULL;
