"""Where the poller and the importer keep their place: poll cursors and claims, import runs and slices.

The poller and the importer write here only after Kafka acknowledged everything up to the
position they store (invariant 1). One poller per connection, and one importer per import slice, at a
time across processes is a claim with a lease, renewed while the work runs: a crashed process's claims
lapse and another process picks the work up; a position is saved only by its claim's holder.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ingestor.connections.status import STATUSES
from ingestor.sources.refusals import Refused, record_refused
from ingestor.sources.slices import ImportSlice, Peers, initial_ranges
from ingestor.stripe_api.catalog import BY_NAME, EARLIEST_CREATED
from plumbing.postgres import translates_database_errors


def claimant_id() -> str:
    """Names this process (and one poller or importer in it) in the claims it holds: host, pid and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _columns(slices: Collection[tuple[str, str, int]]) -> tuple[list[str], list[str], list[int]]:
    """(resource, run id, slice id) keys as three arrays, for unnest()."""
    return [r for r, _, _ in slices], [run for _, run, _ in slices], [i for _, _, i in slices]


RATE_GAP_S = 30.0  # an import with no page saved for this long starts a new rate with its next pass

# A slice's page saved, or False (nothing saved) if its claim was lost or a newer run replaced this one.
SAVE_SLICE_PAGE = "SELECT import_save_slice_page($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"


class _NotSaved(Exception):
    """The slice's page was not saved (claim lost, or a newer run): its refusals are rolled back with it."""


@dataclass(frozen=True, slots=True)
class PollCursor:
    """Created time of the newest acknowledged event, and the ids already published in the overlap."""

    last_event_created: int
    recent_event_ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class ImportCheckpoint:
    """One resource's place in an import run, with its current pass (for a rate and a time left)."""

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
    covered_s: int | None = None  # seconds of the window its slices have paged (None: no slices yet)
    pass_started_at: datetime | None = None
    objects_at_pass_start: int = 0
    updated_at: datetime | None = None
    listed_from: int | None = None  # where its listing starts, if before the window (`Resource.whole_history`)

    def covered(self) -> float:
        """Returns the share of the window paged so far (a resource read whole pages the time before it too, in a
        slice of its own: counted over decades, that slice made the share 2 % of an old account's, or 98 % of a
        young one's after one empty page)."""
        if self.done:
            return 1.0
        span = max(1, self.window_end - self.window_start)
        if self.covered_s is not None:
            return min(1.0, max(0.0, self.covered_s / span))
        if self.oldest_created is None:
            return 0.0
        return min(1.0, max(0.0, (self.window_end - self.oldest_created) / span))

    def objects_per_s(self) -> float | None:
        """Objects published per second over the current (or last) pass; None before a pass has run a second."""
        if self.pass_started_at is None or self.updated_at is None:
            return None
        elapsed = (self.updated_at - self.pass_started_at).total_seconds()
        if elapsed < 1.0:
            return None
        return max(0, self.objects_published - self.objects_at_pass_start) / elapsed

    def objects_left(self) -> float | None:
        """Objects still to page, estimated from the density of the part of the window already paged."""
        if self.done:
            return 0.0
        covered = self.covered()
        if covered <= 0.0:
            return None
        return self.objects_published * (1.0 - covered) / covered


def run_window(checkpoints: Sequence[ImportCheckpoint]) -> tuple[int, int]:
    """The import's window, where its resources are read and checked against Stripe (a resource read whole is
    listed from earlier too: `listed_from`)."""
    return max(c.window_start for c in checkpoints), max(c.window_end for c in checkpoints)


@translates_database_errors
class PostgresCheckpoints:
    """Poll cursors and import checkpoints in Postgres."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    async def claim_poll(self, connection_id: str, poller: str, lease_s: float) -> bool:
        """Claims the connection's poll for `poller` unless another holds an unexpired claim; False if it does
        (or the connection is gone)."""
        try:
            return bool(await self._pool.fetchval(
                """INSERT INTO poll_claims AS c (connection_id, claimed_by, claimed_until)
                   VALUES ($1, $2, now() + make_interval(secs => $3))
                   ON CONFLICT (connection_id) DO UPDATE SET claimed_by = $2, claimed_until = EXCLUDED.claimed_until
                    WHERE c.claimed_until < now() OR c.claimed_by = $2
                   RETURNING true""", connection_id, poller, lease_s))
        except asyncpg.ForeignKeyViolationError:
            return False  # deleted meanwhile

    async def renew_poll_claim(self, connection_id: str, poller: str, lease_s: float) -> bool:
        """Extends `poller`'s claim; False if it no longer holds it."""
        return bool(await self._pool.fetchval(
            "UPDATE poll_claims SET claimed_until = now() + make_interval(secs => $3) "
            "WHERE connection_id = $1 AND claimed_by = $2 RETURNING true", connection_id, poller, lease_s))

    async def release_poll(self, connection_id: str, poller: str) -> None:
        """Gives `poller`'s claim back (so the next poll need not wait for the lease to lapse)."""
        await self._pool.execute("DELETE FROM poll_claims WHERE connection_id = $1 AND claimed_by = $2",
                                 connection_id, poller)

    async def poll_cursor(self, connection_id: str) -> PollCursor | None:
        """Returns the connection's poll cursor, or None before its first poll."""
        row = await self._pool.fetchrow(
            "SELECT last_event_created, recent_event_ids FROM poll_cursors WHERE connection_id = $1", connection_id
        )
        return PollCursor(row["last_event_created"], frozenset(row["recent_event_ids"])) if row else None

    async def save_poll_cursor(self, connection_id: str, cursor: PollCursor, poller: str) -> bool:
        """Stores the cursor if `poller` still holds the poll's claim (call only after Kafka acknowledged every
        event up to it); False if it lost the claim (another process polls now; what this one published is
        deduplicated downstream)."""
        async with self._pool.acquire() as conn, conn.transaction():
            held = await conn.fetchval(
                "SELECT true FROM poll_claims WHERE connection_id = $1 AND claimed_by = $2 AND claimed_until > now() "
                "FOR UPDATE", connection_id, poller)
            if not held:
                return False
            await conn.execute(
                """INSERT INTO poll_cursors (connection_id, last_event_created, recent_event_ids, updated_at)
                   VALUES ($1, $2, $3, now())
                   ON CONFLICT (connection_id) DO UPDATE
                      SET last_event_created = $2, recent_event_ids = $3, updated_at = now()""",
                connection_id, cursor.last_event_created, sorted(cursor.recent_event_ids))
            return True

    async def start_import(
        self, connection_id: str, resources: Sequence[str], window_start: int, window_end: int, reason: str
    ) -> str:
        """Starts a new import run over the window (replacing any earlier run); returns its run id. A resource read
        whole (`Resource.whole_history`: subscriptions) is listed from `EARLIEST_CREATED` (`listed_from`)."""
        run_id = "imp_" + secrets.token_hex(6)
        listed_from = [EARLIEST_CREATED if name in BY_NAME and BY_NAME[name].whole_history else None
                       for name in resources]
        async with self._pool.acquire() as conn, conn.transaction():
            # Lock order, as in every statement that touches both: the runs' rows, then the slices' (a page saved
            # meanwhile locks its run's row, then its slice's: the other way round, the two could deadlock).
            await conn.execute("SELECT 1 FROM import_runs WHERE connection_id = $1 ORDER BY resource FOR UPDATE",
                               connection_id)
            await conn.execute("DELETE FROM import_slices WHERE connection_id = $1", connection_id)  # the old run's
            await conn.execute(
                """INSERT INTO import_runs (connection_id, resource, run_id, reason, window_start, window_end,
                                            last_object_id, oldest_created, objects_published, done_at, paused_reason,
                                            started_at, updated_at, listed_from)
                   SELECT $1, r, $3, $4, $5, $6, NULL, NULL, 0, NULL, NULL, now(), now(), f
                     FROM unnest($2::text[], $7::bigint[]) AS w (r, f)
                   ON CONFLICT (connection_id, resource) DO UPDATE
                      SET run_id = $3, reason = $4, window_start = $5, window_end = $6, listed_from = excluded.listed_from,
                          last_object_id = NULL,
                          oldest_created = NULL, objects_published = 0, done_at = NULL, paused_reason = NULL,
                          started_at = now(), updated_at = now(), pass_started_at = NULL, objects_at_pass_start = 0""",
                connection_id, list(resources), run_id, reason, window_start, window_end, listed_from,
            )
        return run_id

    async def import_checkpoints(self, connection_id: str) -> list[ImportCheckpoint]:
        """Returns the connection's checkpoints, one per resource."""
        rows = await self._pool.fetch(
            """SELECT r.connection_id, r.resource, r.run_id, r.reason, r.window_start, r.window_end, r.last_object_id,
                      r.oldest_created, r.objects_published, r.done_at IS NOT NULL AS done, r.paused_reason,
                      r.pass_started_at, r.objects_at_pass_start, r.updated_at, r.listed_from,
                      (SELECT sum(GREATEST(0, CASE
                                  WHEN s.done THEN s.range_end - GREATEST(s.range_start, r.window_start) + 1
                                  ELSE s.range_end - GREATEST(s.range_start - 1,
                                                              coalesce(s.oldest_created, s.range_end), r.window_start - 1)
                              END))::bigint
                         FROM import_slices s WHERE s.connection_id = r.connection_id AND s.resource = r.resource
                          AND s.run_id = r.run_id) AS covered_s
                 FROM import_runs r WHERE r.connection_id = $1 ORDER BY r.resource""",
            connection_id,
        )
        return [ImportCheckpoint(**dict(r)) for r in rows]

    async def begin_pass(self, connection_id: str) -> None:
        """Marks the start of an importer pass over the connection's unfinished resources (for their rate), unless
        one is under way: a resource saved a page within `RATE_GAP_S`. Every pass of every process started a new rate:
        with two workers, a second process looking in every few seconds left the rate over a few seconds or none, and
        the time left blank."""
        await self._pool.execute(
            """UPDATE import_runs SET pass_started_at = now(), objects_at_pass_start = objects_published, updated_at = now()
                WHERE connection_id = $1 AND done_at IS NULL
                  AND (pass_started_at IS NULL OR updated_at < now() - make_interval(secs => $2))""",
            connection_id, RATE_GAP_S)

    async def prepare_slices(self, checkpoint: ImportCheckpoint, initial: int) -> None:
        """Makes the resource's first slices for its run unless it has some (several processes may race: one wins).

        A run started before slices existed resumes as one slice from its stored cursor.
        """
        cursor: tuple[str | None, int | None] = (checkpoint.last_object_id, checkpoint.oldest_created)
        if checkpoint.last_object_id is not None:
            ranges = [(checkpoint.window_start, checkpoint.window_end)]
        else:
            ranges, cursor = initial_ranges(checkpoint.window_start, checkpoint.window_end, initial), (None, None)
            if checkpoint.listed_from is not None and checkpoint.listed_from < checkpoint.window_start:
                # The time before the window is a slice of its own, paged (and split) by what its own pages show.
                ranges.insert(0, (checkpoint.listed_from, checkpoint.window_start - 1))
        async with self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT run_id FROM import_runs WHERE connection_id = $1 AND resource = $2 FOR UPDATE",
                                   checkpoint.connection_id, checkpoint.resource) != checkpoint.run_id:
                return  # a newer run replaced this one
            if await conn.fetchval("SELECT 1 FROM import_slices WHERE connection_id = $1 AND resource = $2 AND run_id = $3 "
                                   "LIMIT 1", checkpoint.connection_id, checkpoint.resource, checkpoint.run_id):
                return
            await conn.executemany(
                """INSERT INTO import_slices (connection_id, resource, run_id, slice_id, range_start, range_end,
                                              last_object_id, oldest_created)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
                [(checkpoint.connection_id, checkpoint.resource, checkpoint.run_id, i, start, end, *cursor)
                 for i, (start, end) in enumerate(ranges)])

    async def claim_slice(self, connection_id: str, worker: str, lease_s: float,
                          paging: Collection[tuple[str, str, int]] = ()) -> ImportSlice | None:
        """Claims for `worker` the unclaimed (or abandoned: lease expired) slice of the connection's running
        import with the longest range left, or returns None if there is none. `paging` names the slices
        (resource, run id, slice id) `worker` pages now, which it never takes again: a lease of its own that ran
        out while a renewal waited (Postgres slow, a lock) is not an abandoned slice, nor is one that another
        process took meanwhile and let go while a page of it was still out here (that page's save fails, as the
        claim is not ours; until then both would page it)."""
        resources, runs, ids = _columns(paging)
        row = await self._pool.fetchrow(
            """UPDATE import_slices s SET claimed_by = $2, claimed_until = now() + make_interval(secs => $3)
                WHERE (s.connection_id, s.resource, s.run_id, s.slice_id) = (
                      SELECT i.connection_id, i.resource, i.run_id, i.slice_id FROM import_slices i
                        JOIN import_runs r ON r.connection_id = i.connection_id AND r.resource = i.resource
                                          AND r.run_id = i.run_id
                       WHERE i.connection_id = $1 AND NOT i.done AND r.done_at IS NULL AND r.paused_reason IS NULL
                         AND (i.claimed_until IS NULL OR i.claimed_until < now())
                         AND (i.resource, i.run_id, i.slice_id) NOT IN (
                             SELECT * FROM unnest($4::text[], $5::text[], $6::int[]))
                       ORDER BY coalesce(i.oldest_created, i.range_end) - i.range_start DESC
                       LIMIT 1 FOR UPDATE OF i SKIP LOCKED)
            RETURNING s.connection_id, s.resource, s.run_id, s.slice_id, s.range_start, s.range_end,
                      s.last_object_id, s.oldest_created, s.objects_published, s.done, s.inherited_density,
                      s.inherited_span""",
            connection_id, worker, lease_s, resources, runs, ids)
        return ImportSlice(**dict(row)) if row else None

    async def record_refused(self, refused: Sequence[Refused]) -> None:
        """Counts items Stripe listed that cannot be read in their tenants' health (`refusals.py`)."""
        await record_refused(self._pool, refused)

    async def save_slice_page(self, piece: ImportSlice, published: int, worker: str, lease_s: float,
                              refused: Sequence[Refused] = ()) -> bool:
        """Stores a slice's place after an acknowledged page (its cursor, whether it is done) with the page's
        refused objects, renews the claim and adds the page to the resource's totals; returns False if the claim
        was lost or a newer run replaced this one (then the slice is someone else's, or gone)."""
        args = (piece.connection_id, piece.resource, piece.run_id, piece.slice_id, piece.last_object_id,
                piece.oldest_created, piece.done, published, worker, lease_s)
        if not refused:  # one statement (migration 0080): no lock of the run's row held across this event loop
            return bool(await self._pool.fetchval(SAVE_SLICE_PAGE, *args))
        try:  # the refusals first: the run's row is locked by the last statement, and only until the commit
            async with self._pool.acquire() as conn, conn.transaction():
                await record_refused(conn, refused)
                if not await conn.fetchval(SAVE_SLICE_PAGE, *args):
                    raise _NotSaved
        except _NotSaved:
            return False
        return True

    async def split_slice(self, piece: ImportSlice, at: int, worker: str, lease_s: float,
                          keep: bool = True) -> ImportSlice | None:
        """Splits what is left of a slice `worker` holds at `at`: the slice keeps [at, …] and its cursor, a new
        one gets […, at − 1], claimed by `worker` (or by nobody unless `keep`: for another process to claim).
        Returns the new slice, or None if the claim was lost or the slice's start is not the one `piece` has."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM import_runs WHERE connection_id = $1 AND resource = $2 FOR UPDATE",
                               piece.connection_id, piece.resource)  # one split of the resource at a time
            status = await conn.execute(
                """UPDATE import_slices SET range_start = $5, updated_at = now()
                    WHERE connection_id = $1 AND resource = $2 AND run_id = $3 AND slice_id = $4 AND claimed_by = $6
                      AND NOT done AND range_start = $7 AND $5 > range_start""",
                piece.connection_id, piece.resource, piece.run_id, piece.slice_id, at, worker, piece.range_start)
            if status == "UPDATE 0":  # the claim was lost, or this process's start is stale (a split it never heard of)
                return None
            split_off = piece.older_half(0, at)  # its guess is stored with it, for whichever process claims it
            split_off.slice_id = await conn.fetchval(
                """INSERT INTO import_slices (connection_id, resource, run_id, slice_id, range_start, range_end,
                                              claimed_by, claimed_until, inherited_density, inherited_span)
                   SELECT $1, $2, $3, max(slice_id) + 1, $4, $5, $6, now() + make_interval(secs => $7), $8, $9
                     FROM import_slices WHERE connection_id = $1 AND resource = $2 AND run_id = $3
                RETURNING slice_id""",
                piece.connection_id, piece.resource, piece.run_id, piece.range_start, at - 1,
                worker if keep else None, lease_s if keep else None, split_off.inherited_density,
                split_off.inherited_span)
        piece.range_start = at
        return split_off

    async def slice_holder(self, piece: ImportSlice) -> tuple[bool, str | None]:
        """Why a save of the slice's page found it not `worker`'s: whether the slice is still of its resource's running
        import (False: a newer run replaced that one), and who holds its claim now (None: nobody)."""
        row = await self._pool.fetchrow(
            """SELECT s.claimed_by FROM import_slices s JOIN import_runs r USING (connection_id, resource, run_id)
                WHERE s.connection_id = $1 AND s.resource = $2 AND s.run_id = $3 AND s.slice_id = $4""",
            piece.connection_id, piece.resource, piece.run_id, piece.slice_id)
        return row is not None, None if row is None else row["claimed_by"]

    async def forget_cursor(self, piece: ImportSlice, worker: str) -> bool:
        """The slice's cursor object is gone at Stripe: it goes on from the top of its oldest second (read again,
        deduplicated downstream). Returns False if the claim was lost."""
        forgotten: bool = await self._pool.fetchval(
            """UPDATE import_slices SET last_object_id = NULL, updated_at = now()
                WHERE connection_id = $1 AND resource = $2 AND run_id = $3 AND slice_id = $4 AND claimed_by = $5
                  AND NOT done
            RETURNING true""",
            piece.connection_id, piece.resource, piece.run_id, piece.slice_id, worker)
        return bool(forgotten)

    async def release_slices(self, connection_id: str, worker: str) -> None:
        """Gives up `worker`'s claims on the connection's slices (its pass ended), so any process may go on."""
        await self._pool.execute(
            "UPDATE import_slices SET claimed_by = NULL, claimed_until = NULL WHERE connection_id = $1 AND claimed_by = $2",
            connection_id, worker)

    async def release_slice(self, piece: ImportSlice, worker: str) -> None:
        """Gives up `worker`'s claim on one slice."""
        await self._pool.execute(
            """UPDATE import_slices SET claimed_by = NULL, claimed_until = NULL
                WHERE connection_id = $1 AND resource = $2 AND run_id = $3 AND slice_id = $4 AND claimed_by = $5""",
            piece.connection_id, piece.resource, piece.run_id, piece.slice_id, worker)

    async def renew_claims(self, connection_id: str, worker: str, lease_s: float,
                           paging: Collection[tuple[str, str, int]]) -> None:
        """Extends `worker`'s claims on the slices of the connection it pages (slices waiting for the budget make
        no page for a while). Only those: one whose release failed lapses and is taken again. Only one
        connection's: renewals of one process's claims across connections deadlocked one another (and a lease ran
        out meanwhile)."""
        resources, runs, ids = _columns(paging)
        await self._pool.execute(
            """UPDATE import_slices SET claimed_until = now() + make_interval(secs => $3)
                WHERE connection_id = $1 AND claimed_by = $2 AND NOT done
                  AND (resource, run_id, slice_id) IN (SELECT * FROM unnest($4::text[], $5::text[], $6::int[]))""",
            connection_id, worker, lease_s, resources, runs, ids)

    async def join_import(self, connection_id: str, worker: str, lease_s: float, paging: int = 0,
                          wants_more: bool = False, work_left: Mapping[str, float] | None = None) -> Peers:
        """Says `worker` imports the connection for `lease_s` more (renewed while its pass goes on), paging
        `paging` slices, whether it `wants_more` than it finds, and the objects it expects left per resource
        (`work_left`, infinite for one not known yet); returns what the other processes importing it do."""
        resources, objects = zip(*sorted(work_left.items())) if work_left else ((), ())
        row = await self._pool.fetchrow(
            """WITH joined AS (
                   INSERT INTO import_workers (connection_id, worker_id, seen_until, paging, wants_more,
                                               work_left_resources, work_left_objects)
                   VALUES ($1, $2, now() + make_interval(secs => $3), $4, $5, $6, $7)
                   ON CONFLICT (connection_id, worker_id) DO UPDATE
                      SET seen_until = excluded.seen_until, paging = excluded.paging, wants_more = excluded.wants_more,
                          work_left_resources = excluded.work_left_resources,
                          work_left_objects = excluded.work_left_objects),
               others AS (
                   SELECT * FROM import_workers WHERE connection_id = $1 AND worker_id <> $2 AND seen_until > now()),
               left_per_resource AS (
                   SELECT resource, sum(objects) AS objects
                     FROM others, unnest(work_left_resources, work_left_objects) AS w (resource, objects)
                    GROUP BY resource)
               SELECT 1 + (SELECT count(*) FROM others) AS processes,
                      (SELECT coalesce(sum(paging), 0) FROM others) AS paging,
                      (SELECT coalesce(bool_or(wants_more), false) FROM others) AS wants_more,
                      (SELECT coalesce(array_agg(resource ORDER BY resource), '{}') FROM import_slices
                        WHERE connection_id = $1 AND NOT done AND claimed_until > now()
                          AND claimed_by IN (SELECT worker_id FROM others)) AS held,
                      (SELECT coalesce(array_agg(resource ORDER BY resource), '{}') FROM left_per_resource)
                          AS left_resources,
                      (SELECT coalesce(array_agg(objects ORDER BY resource), '{}') FROM left_per_resource)
                          AS left_objects""",
            connection_id, worker, lease_s, paging, wants_more, list(resources), list(objects))
        if row["processes"] <= 1:
            return Peers()
        return Peers(row["processes"], row["paging"], row["wants_more"], tuple(sorted(Counter(row["held"]).items())),
                     tuple(zip(row["left_resources"], row["left_objects"])))

    async def leave_import(self, connection_id: str, worker: str) -> None:
        """`worker` no longer imports the connection (its pass ended); the rows of processes dead for a minute, on
        any connection, go with it."""
        await self._pool.execute(
            "DELETE FROM import_workers WHERE (connection_id = $1 AND worker_id = $2) OR seen_until < now() - interval '1 minute'",
            connection_id, worker)

    async def paged_elsewhere(self, connection_id: str, worker: str) -> bool:
        """Whether another process holds an unfinished slice of the connection's running import (one it may let
        go for this process to page)."""
        held: bool = await self._pool.fetchval(
            """SELECT EXISTS (
                   SELECT 1 FROM import_slices i JOIN import_runs r USING (connection_id, resource, run_id)
                    WHERE i.connection_id = $1 AND NOT i.done AND r.done_at IS NULL AND r.paused_reason IS NULL
                      AND i.claimed_by <> $2 AND i.claimed_until >= now())""",
            connection_id, worker)
        return held

    async def finish_resources(self, connection_id: str) -> bool:
        """Marks done each resource of the connection's run whose slices are all done; returns True if this call
        finished the whole run (so exactly one process of those sharing the import sees it finish)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM import_runs WHERE connection_id = $1 ORDER BY resource FOR UPDATE",
                               connection_id)
            finished = await conn.fetch(
                """UPDATE import_runs r SET done_at = now(), updated_at = now()
                    WHERE r.connection_id = $1 AND r.done_at IS NULL AND r.paused_reason IS NULL
                      AND EXISTS (SELECT 1 FROM import_slices s WHERE s.connection_id = r.connection_id
                                  AND s.resource = r.resource AND s.run_id = r.run_id)
                      AND NOT EXISTS (SELECT 1 FROM import_slices s WHERE s.connection_id = r.connection_id
                                      AND s.resource = r.resource AND s.run_id = r.run_id AND NOT s.done)
                RETURNING r.resource""", connection_id)
            left = await conn.fetchval("SELECT count(*) FROM import_runs WHERE connection_id = $1 AND done_at IS NULL",
                                       connection_id)
        return bool(finished) and left == 0

    async def import_slices(self, connection_id: str) -> list[ImportSlice]:
        """Returns the slices of the connection's current run (to look at: the importer claims them)."""
        rows = await self._pool.fetch(
            """SELECT s.connection_id, s.resource, s.run_id, s.slice_id, s.range_start, s.range_end, s.last_object_id,
                      s.oldest_created, s.objects_published, s.done, s.inherited_density, s.inherited_span
                 FROM import_slices s JOIN import_runs r USING (connection_id, resource, run_id)
                WHERE s.connection_id = $1 ORDER BY s.resource, s.range_start""", connection_id)
        return [ImportSlice(**dict(r)) for r in rows]

    async def pause_import(self, connection_id: str, reason: str) -> bool:
        """Pauses the connection's unfinished import (checkpoints kept) until `resume_import`; returns whether it
        did. A reason that is the connection's status (`key_invalid`, `permission_missing`, `disconnected`) pauses
        only while the connection still has it (or, for `disconnected`, has no key): a pass learns it on a 401,
        then ends its pages in flight, and a new key (or a green key Test) that changed the status and resumed the
        import meanwhile must not be undone by that pass (it paused the import for good, and the fault suite's
        combined run waited for it in vain). The runs' rows are locked before the status is read, as
        `resume_import` takes them after the status changed: a resume either waits for this pause and clears it,
        or came first and this pause sees the new status."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM import_runs WHERE connection_id = $1 AND done_at IS NULL "
                               "ORDER BY resource FOR UPDATE", connection_id)  # the lock order of start_import
            if reason in STATUSES:
                still = await conn.fetchval(
                    "SELECT status = $2 OR ($2 = 'disconnected' AND key_ciphertext IS NULL) FROM stripe_connections "
                    "WHERE connection_id = $1", connection_id, reason)
                if not still:
                    return False
            status: str = await conn.execute(
                "UPDATE import_runs SET paused_reason = $2, updated_at = now() "
                "WHERE connection_id = $1 AND done_at IS NULL", connection_id, reason,
            )
        return status != "UPDATE 0"

    async def resume_import(self, connection_id: str) -> None:
        """Lets a paused import continue from its checkpoints."""
        await self._pool.execute(
            "UPDATE import_runs SET paused_reason = NULL, updated_at = now() WHERE connection_id = $1 AND done_at IS NULL",
            connection_id,
        )

    async def connections_with_pending_imports(self) -> list[str]:
        """Returns connections whose import has unfinished, unpaused resources and a usable key: the ones whose
        last pass is oldest first (never passed over first), so every import gets its turns."""
        rows = await self._pool.fetch(
            """SELECT r.connection_id FROM import_runs r JOIN stripe_connections c USING (connection_id)
                WHERE r.done_at IS NULL AND r.paused_reason IS NULL AND c.key_ciphertext IS NOT NULL
                  AND c.status NOT IN ('key_invalid', 'permission_missing', 'disconnected')
                GROUP BY r.connection_id ORDER BY max(r.pass_started_at) NULLS FIRST, r.connection_id"""
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
