-- Connection lifecycle (issue 5) and the poller/importer bookkeeping (issue 6).

-- The restricted key is swapped atomically on rotation; key_version tells a poll or page that
-- started with the old key whether a 401 means "revoked" or "rotated while in flight".
ALTER TABLE stripe_connections
    ADD COLUMN key_version      integer NOT NULL DEFAULT 0,
    ADD COLUMN key_tested_at    timestamptz,
    ADD COLUMN last_error_code  text,
    ADD COLUMN last_error       text,           -- plain words, never a secret
    ADD COLUMN last_error_at    timestamptz,
    -- Set when the poll cursor fell out of the events API's 30-day window: a catch-up import
    -- covers the gap; cleared when that import is done.
    ADD COLUMN catchup_needed_since timestamptz;

-- Event ids already published inside the overlap window, so a re-read margin publishes nothing twice.
ALTER TABLE poll_cursors
    ADD COLUMN recent_event_ids text[] NOT NULL DEFAULT '{}';

ALTER TABLE import_runs
    ADD COLUMN run_id        text NOT NULL DEFAULT '',
    ADD COLUMN reason        text NOT NULL DEFAULT 'connect',   -- connect | on_demand | catchup
    ADD COLUMN started_at    timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN paused_reason text;

CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, at);
