-- Who polls a connection now (ingestor/sources/poller.py): one process at a time, by a lease it renews
-- while it polls and gives back after. Unlike the advisory lock it replaces, a claim holds no Postgres
-- session, so one worker polls many connections at once; a crashed poller's claim lapses with its lease.
-- The cursor is saved only by the claim's holder.
CREATE TABLE poll_claims (
    connection_id text PRIMARY KEY REFERENCES stripe_connections (connection_id) ON DELETE CASCADE,
    claimed_by    text NOT NULL,
    claimed_until timestamptz NOT NULL
);
