-- Where a resource's listing starts, when that is before the import's window: subscriptions are listed whatever
-- their age (ingestor/stripe_api/catalog.py, `whole_history`), since one created before the window may be live
-- today and count in MRR. The window itself (window_start) stays the import's, for every resource: the check
-- against Stripe and the progress's window use it. The time before the window is one slice of its own: split
-- with the window's (its start at 0 and the window's slices made over the whole range), the window's density was
-- guessed over decades, and the planner split the empty years again and again (99 slices and 115 requests for 28
-- pages of subscriptions in an experiment run at 600 ms). NULL: from window_start.
ALTER TABLE import_runs ADD COLUMN listed_from bigint CHECK (listed_from >= 0);
