"""Where the poller and the importer keep their place: poll cursors, import checkpoints, per-connection locks.

The poller and the importer write here only after Kafka acknowledged everything up to the
position they store (invariant 1). One poller and one importer per connection at a time, across
processes, is a Postgres session advisory lock held on a dedicated connection: a crashed process
loses its session and so its lock, and another process picks the connection up.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from plumbing.postgres import database_errors, translates_database_errors

POLL_LOCK = 0x504F4C4C  # "POLL": advisory-lock namespace of the poller
IMPORT_LOCK = 0x494D5054  # "IMPT": advisory-lock namespace of the importer


@contextlib.asynccontextmanager
async def try_connection_lock(pool: asyncpg.Pool, namespace: int, connection_id: str) -> AsyncIterator[bool]:
    """Yields whether this process now holds the lock of (`namespace`, connection); releases it on exit.

    Raises DatabaseUnavailableError when Postgres is away (then the lock died with the session).
    """
    with database_errors():
        async with _locked(pool, namespace, connection_id) as held:
            yield held


@contextlib.asynccontextmanager
async def _locked(pool: asyncpg.Pool, namespace: int, connection_id: str) -> AsyncIterator[bool]:
    async with pool.acquire() as conn:
        held = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", namespace, connection_id))
        try:
            yield held
        finally:
            if held:
                await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", namespace, connection_id)


@dataclass(frozen=True, slots=True)
class PollCursor:
    """Created time of the newest acknowledged event, and the ids already published in the overlap."""

    last_event_created: int
    recent_event_ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class ImportCheckpoint:
    """One resource's place in an import run."""

    connection_id: str
    resource: str
    run_id: str
    reason: str
    window_start: int
    window_end: int
    last_object_id: str | None
    oldest_created: int | None
    objects_published: int
    done: bool
    paused_reason: str | None

    def covered(self) -> float:
        """Returns the share of the window covered so far: (end − oldest created seen) / window."""
        if self.done:
            return 1.0
        if self.oldest_created is None:
            return 0.0
        span = max(1, self.window_end - self.window_start)
        return min(1.0, max(0.0, (self.window_end - self.oldest_created) / span))


@translates_database_errors
class PostgresCheckpoints:
    """Poll cursors and import checkpoints in Postgres."""

    def __init__(self, pool: asyncpg.Pool, lock_pool: asyncpg.Pool | None = None):
        self._pool = pool
        self._lock_pool = lock_pool

    @property
    def lock_pool(self) -> asyncpg.Pool:
        """Returns the pool the poller and importer hold their locks on (a lock holds a connection)."""
        return self._lock_pool or self._pool

    def max_lock_holders(self, wanted: int) -> int:
        """Returns how many locks may be held at once without starving the queries of connections."""
        if self._lock_pool is not None:
            return min(wanted, int(self._lock_pool.get_max_size()))
        return max(1, min(wanted, int(self._pool.get_max_size()) - 1))

    async def poll_cursor(self, connection_id: str) -> PollCursor | None:
        """Returns the connection's poll cursor, or None before its first poll."""
        row = await self._pool.fetchrow(
            "SELECT last_event_created, recent_event_ids FROM poll_cursors WHERE connection_id = $1", connection_id
        )
        return PollCursor(row["last_event_created"], frozenset(row["recent_event_ids"])) if row else None

    async def save_poll_cursor(self, connection_id: str, cursor: PollCursor) -> None:
        """Stores the cursor (call only after Kafka acknowledged every event up to it)."""
        await self._pool.execute(
            """INSERT INTO poll_cursors (connection_id, last_event_created, recent_event_ids, updated_at)
               VALUES ($1, $2, $3, now())
               ON CONFLICT (connection_id) DO UPDATE
                  SET last_event_created = $2, recent_event_ids = $3, updated_at = now()""",
            connection_id, cursor.last_event_created, sorted(cursor.recent_event_ids),
        )

    async def start_import(
        self, connection_id: str, resources: Sequence[str], window_start: int, window_end: int, reason: str
    ) -> str:
        """Starts a new import run over the window (replacing any earlier run); returns its run id."""
        run_id = "imp_" + secrets.token_hex(6)
        await self._pool.execute(
            """INSERT INTO import_runs (connection_id, resource, run_id, reason, window_start, window_end,
                                        last_object_id, oldest_created, objects_published, done_at, paused_reason,
                                        started_at, updated_at)
               SELECT $1, r, $3, $4, $5, $6, NULL, NULL, 0, NULL, NULL, now(), now() FROM unnest($2::text[]) AS r
               ON CONFLICT (connection_id, resource) DO UPDATE
                  SET run_id = $3, reason = $4, window_start = $5, window_end = $6, last_object_id = NULL,
                      oldest_created = NULL, objects_published = 0, done_at = NULL, paused_reason = NULL,
                      started_at = now(), updated_at = now()""",
            connection_id, list(resources), run_id, reason, window_start, window_end,
        )
        return run_id

    async def import_checkpoints(self, connection_id: str) -> list[ImportCheckpoint]:
        """Returns the connection's checkpoints, one per resource."""
        rows = await self._pool.fetch(
            """SELECT connection_id, resource, run_id, reason, window_start, window_end, last_object_id, oldest_created,
                      objects_published, done_at IS NOT NULL AS done, paused_reason
                 FROM import_runs WHERE connection_id = $1 ORDER BY resource""",
            connection_id,
        )
        return [ImportCheckpoint(**dict(r)) for r in rows]

    async def save_import_page(
        self, checkpoint: ImportCheckpoint, last_object_id: str | None, oldest_created: int | None,
        published: int, done: bool,
    ) -> bool:
        """Stores the place after an acknowledged page; returns False if a newer run replaced this one."""
        status = await self._pool.execute(
            """UPDATE import_runs
                  SET last_object_id = COALESCE($4, last_object_id),
                      oldest_created = LEAST(COALESCE(oldest_created, $5), $5),
                      objects_published = objects_published + $6,
                      done_at = CASE WHEN $7 THEN now() ELSE NULL END, updated_at = now()
                WHERE connection_id = $1 AND resource = $2 AND run_id = $3""",
            checkpoint.connection_id, checkpoint.resource, checkpoint.run_id, last_object_id, oldest_created,
            published, done,
        )
        return bool(status != "UPDATE 0")

    async def pause_import(self, connection_id: str, reason: str) -> None:
        """Pauses the connection's unfinished import (checkpoints kept) until `resume_import`."""
        await self._pool.execute(
            "UPDATE import_runs SET paused_reason = $2, updated_at = now() WHERE connection_id = $1 AND done_at IS NULL",
            connection_id, reason,
        )

    async def resume_import(self, connection_id: str) -> None:
        """Lets a paused import continue from its checkpoints."""
        await self._pool.execute(
            "UPDATE import_runs SET paused_reason = NULL, updated_at = now() WHERE connection_id = $1 AND done_at IS NULL",
            connection_id,
        )

    async def connections_with_pending_imports(self) -> list[str]:
        """Returns connections whose import has unfinished, unpaused resources and a usable key."""
        rows = await self._pool.fetch(
            """SELECT DISTINCT r.connection_id FROM import_runs r JOIN stripe_connections c USING (connection_id)
                WHERE r.done_at IS NULL AND r.paused_reason IS NULL AND c.key_ciphertext IS NOT NULL
                  AND c.status NOT IN ('key_invalid', 'permission_missing', 'disconnected')
                ORDER BY r.connection_id"""
        )
        return [r["connection_id"] for r in rows]

    async def last_import_finished(self, connection_id: str) -> datetime | None:
        """Returns when the connection's latest import finished every resource, or None."""
        value: datetime | None = await self._pool.fetchval(
            """SELECT CASE WHEN bool_and(done_at IS NOT NULL) THEN max(done_at) END
                 FROM import_runs WHERE connection_id = $1""",
            connection_id,
        )
        return value
