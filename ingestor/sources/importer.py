"""The history import (source=import): pages through the five list endpoints and publishes snapshots.

Place in the flow: Connect (or an on-demand or catch-up request) writes an import run into
`import_runs`; `StripeImporter` finds pending runs and pages each resource's `created` range in time
slices (`slices.py`), many at once, within the account's request budget (shared by every process):
enough requests in flight to fill the budget at Stripe's real latency. Each slice is claimed by one
process at a time (a lease renewed while it pages), so several workers share one import and a dead
worker's slices are taken over once its lease lapses. Each page becomes snapshot envelopes
(`snapshots.py`), published with acks=all; only then is the slice's checkpoint (its cursor, oldest
created, count) saved, so a killed importer resumes every slice at its next page. A pass over one
connection lasts at most `pass_s`, and the connections passed over longest ago go first, so a
thousand imports all make progress.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Awaitable, Callable, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import stripe

from ingestor.connections.status import STATUSES
from ingestor.errors import (
    CursorGoneError,
    IngestError,
    StripeCursorIgnoredError,
    StripeEmptyPageError,
    StripeUnavailableError,
)
from ingestor.sources.checkpoints import claimant_id
from ingestor.sources.deps import SourceDeps
from ingestor.sources.fair_share import FairShares
from ingestor.sources.import_pages import Page, fetch_page, filled_in
from ingestor.sources.import_pass import SHARE_LEASE_S, SHARE_REFRESH_S, ImportPass, moving_average
from ingestor.sources.import_turns import DONE, ImportTurns
from ingestor.sources.key_session import KeySession, StopReading
from ingestor.sources.page_pool import PageCrashError, PagePool, PagePoolBrokenError, default_processes
from ingestor.sources.read_alone_marks import MarkAction, ReadAloneMarks
from ingestor.sources.slices import (
    ImportSlice,
    SlicePlanner,
    initial_slice_count,
)
from ingestor.stripe_api.catalog import BY_NAME
from ingestor.stripe_api.client import NOT_A_LIST
from ingestor.stripe_api.request_budget import Priority
from plumbing.errors import error_site, is_retriable
from plumbing.kafka import PublishError
from plumbing.logs import get_logger
from plumbing.postgres import DatabaseUnavailableError
from plumbing.runtime import LoopLag
from plumbing.settings import ImporterSettings

log = get_logger(__name__)

CPU_BOUND_LAG_S = 0.05  # the event loop this late on average: the CPU, not Stripe, is what pages wait for
POOL_BUSY = 0.9  # the page pool's processes at work this share of the time: the same


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """How one importer pass over a connection ended: done, paused (why), busy (another process holds every
    slice left), more (the pass's time was up: go on at once), retry_later (Stripe or Kafka failed), or failed
    (an unexpected error, logged; tried again next pass)."""

    connection_id: str
    state: str
    detail: str = ""
    slices: int = 0  # slices this process paged in the pass


class StripeImporter:
    """Runs pending imports in passes, resumably, sharing each import's slices with any other process."""

    def __init__(self, deps: SourceDeps, settings: ImporterSettings,
                 on_done: Callable[[str], Awaitable[None]] | None = None):
        self._store = deps.store
        self._checkpoints = deps.checkpoints
        self._readers = deps.readers
        self._publisher = deps.publisher
        self._settings = settings
        self._clock = deps.clock
        self._on_done = on_done  # e.g. the check against Stripe that follows every import
        self._worker_id = claimant_id()  # who holds a slice's claim
        # Pages in flight in this process across every connection: bounds its memory and sockets, and once its
        # CPU is the limit, more would only wait longer. Each connection importing holds its share at most: a
        # tenant whose account is rate-limited keeps its pages waiting for tokens, and must not hold everyone's.
        self._pages_in_flight = FairShares(settings.pages_in_flight)
        self._pages = PagePool(default_processes() if settings.page_processes is None else settings.page_processes,
                               cpu_limit_s=settings.page_cpu_limit_s)
        self._loop_lag = LoopLag()
        # How long a page takes from its request to its whole answer, on this process's pages of any account (a moving
        # average, not taken while our CPU is what pages wait for): how many slices a new import starts as
        # (`initial_slice_count`), before any page of its own is back. Our budget's waits and the page's processing
        # are not in it; a tenant's large pages (expanded refunds) are, for a few pages.
        self._stripe_s: float | None = None
        self._page_s: dict[str, float] = {}  # per connection being imported: how long its last pass's pages took
        self._marks = ReadAloneMarks()  # the tenants' read-alone marks as this worker last learnt them
        self._published_unsaved = 0  # `objects_published_unsaved`

    @property
    def objects_published_unsaved(self) -> int:
        """Objects this process published in pages it never saved as its own: the claim lapsed and another process
        took the slice, or the pass failed between a page's publish and its save. The slice's next holder publishes
        them again (deduplicated downstream); each such page is logged as a warning. A page of a run a newer one
        replaced is not counted (the new run lists everything again). Counted since the process started."""
        return self._published_unsaved

    async def run_pending(self, stop: asyncio.Event | None = None,
                          among: Set[str] | None = None) -> list[ImportOutcome]:
        """Runs one pass over every pending import (burst mode), or over those of the connections `among`; returns
        how each ended. Once `stop` is set, no pass starts and the passes running end after their pages in flight."""
        pending = [c for c in await self._checkpoints.connections_with_pending_imports() if among is None or c in among]
        limit = asyncio.Semaphore(self._settings.max_concurrent_imports)

        async def one(connection_id: str) -> ImportOutcome:
            async with limit:
                return await self._pass(connection_id, stop)

        return list(await asyncio.gather(*(one(c) for c in pending)))

    async def _pass(self, connection_id: str, stop: asyncio.Event | None) -> ImportOutcome:
        """One pass over the connection's import; a bug met in its data is its outcome, logged (the others go on).
        Raises what is retriable (Postgres or Kafka away)."""
        if stop is not None and stop.is_set():
            return ImportOutcome(connection_id, "stopped")
        try:
            return await self.run_connection(connection_id, stop)
        except Exception as exc:
            if is_retriable(exc):
                raise
            log.error("import pass of a connection failed; other connections go on",
                      connection_id=connection_id, error=error_site(exc))
            return ImportOutcome(connection_id, "failed", error_site(exc))

    async def run_forever(self, stop: asyncio.Event, among: Set[str] | None = None) -> None:
        """Keeps up to `max_concurrent_imports` passes running, each over one pending import (or one of the
        connections `among`), until `stop` is set; a pass that ends frees its place for the next in turn
        (`ImportTurns`). Pending imports are looked for every `scan_interval_s` (an import whose pass ended with
        more to do is known to be pending meanwhile). Once `stop` is set, no pass starts and the passes running end
        after their pages in flight. Cancellation stops at once."""
        try:
            await self._pages.warm()
        except PagePoolBrokenError:
            log.warning("the page pool did not start; the first page starts it again")
        turns = ImportTurns(self._settings.scan_interval_s)
        running: dict[str, asyncio.Task[ImportOutcome]] = {}
        pending: list[str] = []
        scanned_at = -math.inf
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                places = self._settings.max_concurrent_imports - len(running)
                if places > 0 and time.monotonic() - scanned_at >= self._settings.scan_interval_s:
                    scanned_at = time.monotonic()
                    try:
                        pending = [c for c in await self._checkpoints.connections_with_pending_imports()
                                   if among is None or c in among]
                        turns.forget(pending)
                    except Exception as exc:
                        if not is_retriable(exc):
                            raise
                        log.warning("looking for pending imports failed; will retry", error=repr(exc))
                if places > 0 and not stop.is_set():  # set during the scan: nothing starts
                    for connection_id in turns.next(pending, running, places, time.monotonic()):
                        running[connection_id] = asyncio.create_task(self._pass(connection_id, stop),
                                                                     name=f"import {connection_id}")
                await asyncio.wait([stopping, *running.values()], timeout=self._settings.scan_interval_s,
                                   return_when=asyncio.FIRST_COMPLETED)
                for connection_id, task in [(c, t) for c, t in running.items() if t.done()]:
                    del running[connection_id]
                    state = self._ended(connection_id, task)
                    turns.ended(connection_id, state, time.monotonic())
                    if state == DONE and connection_id in pending:
                        pending.remove(connection_id)
            for connection_id, result in zip(running, await asyncio.gather(*running.values(), return_exceptions=True)):
                if isinstance(result, Exception):  # they end after their pages in flight
                    log.warning("import pass failed as the worker stopped", connection_id=connection_id,
                                error=repr(result))
        finally:
            stopping.cancel()
            for task in running.values():
                task.cancel()
            await asyncio.gather(stopping, *running.values(), return_exceptions=True)

    @staticmethod
    def _ended(connection_id: str, task: asyncio.Task[ImportOutcome]) -> str:
        """How a pass of `run_forever` ended (its state); Postgres or Kafka away is logged, to be tried again."""
        if task.cancelled():
            return "stopped"
        error = task.exception()
        if error is None:
            return task.result().state
        if not is_retriable(error):
            raise error
        log.warning("import pass failed; will retry", connection_id=connection_id, error=repr(error))
        return "retry_later"

    async def run_connection(self, connection_id: str, stop: asyncio.Event | None = None) -> ImportOutcome:
        """Runs one pass (at most `pass_s`, and until `stop` is set) over what is left of the connection's run,
        sharing the slices with any other process importing it."""
        # Counted in the shares of pages in flight before its first await: passes started together (several places
        # freed at once, or `run_pending`) are all counted before any takes more than its share.
        with self._pages_in_flight.importing(connection_id):
            return await self._run_connection(connection_id, stop)

    async def _run_connection(self, connection_id: str, stop: asyncio.Event | None) -> ImportOutcome:
        asked_at = time.monotonic()
        connection = await self._store.get_connection(connection_id)
        if connection is None or STATUSES[connection.status].stops_reading:
            return ImportOutcome(connection_id, "paused", connection.status if connection else "gone")
        started = time.monotonic()
        tenant_id = connection.tenant_id
        self._follow_mark(tenant_id, connection.pages_read_alone_since, asked_at)
        unfinished = [c for c in await self._checkpoints.import_checkpoints(connection_id) if not c.done]
        todo = [c for c in unfinished if c.paused_reason is None]
        if unfinished and not todo:
            return ImportOutcome(connection_id, "paused", unfinished[0].paused_reason or "")
        initial = self._initial_slices(connection.livemode, len(todo), self._pages.reads_alone(tenant_id))
        for checkpoint in todo:
            await self._checkpoints.prepare_slices(checkpoint, initial)
        await self._checkpoints.begin_pass(connection_id)
        session = KeySession(connection, self._store, self._readers, self._clock, Priority.BULK)
        try:
            try:
                results, slices_taken = await self._page_in_slices(session, connection_id, stop or asyncio.Event())
            finally:
                await session.close()
            return await self._outcome(connection_id, results, slices_taken)  # a pause is written first
        finally:
            await self._store_mark(tenant_id, started)

    async def _store_mark(self, tenant_id: str, started: float) -> None:
        """Marks the tenant for every worker (and after a restart) if this pass must (`ReadAloneMarks.to_store`):
        a death after a person cleared the mark marks it again."""
        died_since = functools.partial(self._pages.died_since, tenant_id)
        if not self._marks.to_store(tenant_id, self._pages.reads_alone(tenant_id), died_since, started):
            return
        self._marks.storing(tenant_id)
        since = await self._store.set_pages_read_alone(tenant_id)
        if since is not None:
            self._marks.stored(tenant_id, since, time.monotonic())

    def _follow_mark(self, tenant_id: str, since: datetime | None, asked_at: float) -> None:
        """Reads the tenant's pages as its mark says, as this worker last learnt it (`ReadAloneMarks`)."""
        action = self._marks.seen(tenant_id, since, asked_at)
        if action in (MarkAction.ANEW, MarkAction.TOGETHER):  # a person cleared the mark (`ingestor read-alone`)
            self._pages.read_together(tenant_id)
        if action in (MarkAction.ALONE, MarkAction.ANEW):  # learnt by another worker, or before a restart
            self._pages.read_alone(tenant_id)

    async def _outcome(self, connection_id: str, results: list[BaseException | None], slices_taken: int) -> ImportOutcome:
        stops = [result for result in results if isinstance(result, StopReading)]
        for stop in stops:
            if await self._checkpoints.pause_import(connection_id, stop.reason):
                return ImportOutcome(connection_id, "paused", stop.reason)
        if stops:  # each was the connection's status, changed meanwhile (a new key, a green key Test)
            return ImportOutcome(connection_id, "more", "a new key or a green key Test came meanwhile")
        for result in results:
            if isinstance(result, (IngestError, PublishError)):
                return ImportOutcome(connection_id, "retry_later", str(result))
            if isinstance(result, BaseException):
                raise result
        if await self._checkpoints.finish_resources(connection_id):
            self._page_s.pop(connection_id, None)
            await self._store.set_catchup_needed(connection_id, None)
            if self._on_done is not None:
                await self._on_done(connection_id)
            return ImportOutcome(connection_id, "done", slices=slices_taken)
        if await self._checkpoints.last_import_finished(connection_id) is not None:
            self._page_s.pop(connection_id, None)
            return ImportOutcome(connection_id, "done", "finished by another process", slices_taken)
        if not slices_taken:
            return ImportOutcome(connection_id, "busy", "what is left is being paged by another process")
        return ImportOutcome(connection_id, "more", "the pass ended before the run (its time was up, or a newer run)",
                             slices_taken)

    async def _page_in_slices(self, session: KeySession, connection_id: str,
                              stop: asyncio.Event) -> tuple[list[BaseException | None], int]:
        """Pages slices of the connection's run, `slices_in_flight` at a time, until none is left to claim or split
        or the pass's time is up; returns what stopped each worker (None: out of work or time) and how many
        slices were taken."""
        budgets = self._readers.budgets
        rate, endpoint_rate = self._rates(session.connection.livemode)
        # A tenant whose pages are read alone (one of them killed the process reading it) has one page at a time:
        # its pages queue for one process, and would hold the worker's pages in flight while they wait.
        most = 1 if self._pages.reads_alone(session.connection.tenant_id) else self._settings.slices_in_flight
        run = ImportPass(SlicePlanner(self._settings.min_slice_s, 2 * self._settings.page_limit,
                                 self._settings.page_limit + 1),
                    time.monotonic() + self._settings.pass_s, rate, most, stop,
                    self._cpu_bound, self._page_s.get(connection_id), endpoint_rate,
                    budgets.for_account(connection_id, session.connection.livemode))
        lease_s = self._settings.slice_lease_s

        async def worker() -> None:
            while run.going():
                piece = await self._next_slice(connection_id, run)
                if piece is None:
                    if not run.waits_for_share():
                        await run.changed()  # the workers waiting here see it too, not at their timeouts
                        return  # nothing left here; what other processes hold they finish
                    await run.wait_for_split()  # a slice of ours may become worth splitting once it has paged,
                    continue  # or another process may let one go
                run.planner.add(piece)
                run.slices_taken += 1
                await run.changed()  # room for one more, perhaps
                try:
                    await self._page_slice(session, piece, run)
                except BaseException as exc:
                    run.stop.set()
                    if piece.published_unsaved:
                        self._unsaved(piece, "the pass failed between its publish and its save",
                                      error=type(exc).__name__)
                    raise
                finally:
                    try:  # let go in the database first: until then, no worker here may claim it again
                        if not piece.done:
                            await self._checkpoints.release_slice(piece, self._worker_id)
                    finally:
                        run.planner.release(piece)
                        if not run.planner.active_count():
                            run.ran_out()
                        await run.changed()

        async def join() -> None:
            peers = await self._checkpoints.join_import(connection_id, self._worker_id, SHARE_LEASE_S,
                                                        run.planner.active_count(), run.wants_more(),
                                                        run.planner.work_left())
            changed = peers != run.peers
            run.refreshed(peers)
            if changed:
                await run.changed()  # room for more here, perhaps

        async def keep_claims() -> None:
            """Renews the claims, and says every second what this pass does (a failure is tried again next tick:
            a claim outlives a few)."""
            renewed = time.monotonic()
            while True:
                await asyncio.sleep(min(SHARE_REFRESH_S, lease_s / 3))
                try:
                    await join()
                    if time.monotonic() - renewed >= lease_s / 3:
                        await self._checkpoints.renew_claims(connection_id, self._worker_id, lease_s,
                                                             run.planner.paging())
                        renewed = time.monotonic()
                except Exception as exc:
                    if not is_retriable(exc):
                        raise
                    log.warning("renewing the import's claims failed; trying again", connection_id=connection_id,
                                error=repr(exc))

        def renewal_ended(task: asyncio.Task[None]) -> None:
            """The renewal failed for good (not Postgres away: a bug): the claims would lapse while the slices are
            paged, and another process page them too. The pass stops at its next pages."""
            error = None if task.cancelled() else task.exception()
            if error is not None:
                log.error("renewing the import's claims failed; the pass stops", connection_id=connection_id,
                          error=error_site(error))
                run.stop.set()

        await join()
        renewing = asyncio.create_task(keep_claims())
        renewing.add_done_callback(renewal_ended)
        try:
            with self._loop_lag.watching():
                results = list(await asyncio.gather(*(worker() for _ in range(most)), return_exceptions=True))
            if renewing.done() and not renewing.cancelled() and renewing.exception() is not None:
                results.append(renewing.exception())  # the pass's outcome says it failed (tried again later)
            return results, run.slices_taken
        finally:
            if run.page_timed:  # a guess kept for the next pass would be averaged in as if measured
                self._page_s[connection_id] = run.page_s
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            try:
                await self._checkpoints.release_slices(connection_id, self._worker_id)
            finally:
                await self._checkpoints.leave_import(connection_id, self._worker_id)

    def _initial_slices(self, livemode: bool, resources: int, reads_alone: bool) -> int:
        """Slices each of a new import's `resources` starts as (`initial_slice_count`). A tenant whose pages are read
        alone pages one slice at a time: more would only be paged one after another, most of them empty."""
        if self._stripe_s is None or reads_alone:  # nothing timed yet, or one slice at a time
            return self._settings.initial_slices
        rate, endpoint_rate = self._rates(livemode)
        return initial_slice_count(self._settings.initial_slices, rate, endpoint_rate, self._stripe_s, resources,
                                   min(self._settings.slices_in_flight, self._pages_in_flight.share()))

    def _rates(self, livemode: bool) -> tuple[float, float | None]:
        """The account's budget in requests/s, and an endpoint's if it is tighter (None: the account's is)."""
        budgets = self._readers.budgets
        rate = (budgets.live if livemode else budgets.test).per_second
        return rate, budgets.endpoint.per_second if budgets.endpoint.per_second < rate else None

    def _cpu_bound(self) -> bool:
        """Whether this process's CPU is what pages wait for: its event loop runs late, or its page pool is at work
        nearly all the time (at 300 ms on 2 cores, a pool at its limit and 96 slices gave each page a second's
        wait for a pool process, and the slice count followed that time up)."""
        return self._loop_lag.lag_s > CPU_BOUND_LAG_S or self._pages.busy() > POOL_BUSY

    async def _next_slice(self, connection_id: str, run: ImportPass) -> ImportSlice | None:
        """A slice nobody pages (the longest), else the older half of the one of ours with the most left, else None."""
        async with run.lock:
            if not (run.going() and run.has_room()):  # a split that failed while this waited for the lock stops all
                return None
            if run.claim_worth_trying():
                piece = await self._checkpoints.claim_slice(connection_id, self._worker_id,
                                                            self._settings.slice_lease_s, run.planner.paging())
                if piece is not None:
                    return piece
                run.found_nothing_to_claim(await self._checkpoints.paged_elsewhere(connection_id, self._worker_id))
            elif run.looks_again():  # free slices are left to another process; whether any still pages is asked now
                run.looked(await self._checkpoints.paged_elsewhere(connection_id, self._worker_id))
            victim = run.to_split()
            if victim is None:
                return None
            return await self._split(run, *victim)

    async def _split(self, run: ImportPass, piece: ImportSlice, at: int, keep: bool = True) -> ImportSlice | None:
        """Splits one of the pass's slices at `at` (`split_slice`). Its page that comes back meanwhile waits for the
        split before it keeps its objects (`_page_slice`): kept against the old start, those below `at` would be
        published by this slice and listed again by the one split off."""
        done = run.splitting[piece.key] = asyncio.Event()
        try:
            return await self._checkpoints.split_slice(piece, at, self._worker_id, self._settings.slice_lease_s,
                                                       keep=keep)
        except BaseException:
            # Committed or not (the connection may have broken on the commit's answer): only the database knows the
            # slice's start now. Its worker lets it go without keeping the page in hand; whoever claims it next
            # reads the row.
            run.unsure.add(piece.key)
            run.stop.set()
            raise
        finally:
            del run.splitting[piece.key]
            done.set()

    async def _page_slice(self, session: KeySession, piece: ImportSlice, run: ImportPass) -> None:
        """Pages one slice to its end (or the pass's), one acknowledged page at a time, while the claim holds."""
        resource = BY_NAME[piece.resource]
        while run.going():
            # Up to the oldest second published (the cursor's): the same page with a cursor, and without one (gone
            # at Stripe) the top of that second, read again.
            query: dict[str, Any] = {"limit": self._settings.page_limit, **resource.list_params,
                                     "created": {"gte": piece.range_start, "lte": piece.left()[1]}}
            if piece.last_object_id:
                query["starting_after"] = piece.last_object_id
            requested_start = piece.range_start
            async with self._pages_in_flight.permit(piece.connection_id):
                try:
                    page = await self._fetch_in_time(session, resource.name, query, run)
                except CursorGoneError:  # deleted since it was published: retried as it is, it fails for ever
                    log.warning("the import's cursor object is gone at Stripe; reading its second again",
                                connection_id=session.connection.connection_id, resource=resource.name)
                    piece.last_object_id = None
                    if not await self._checkpoints.forget_cursor(piece, self._worker_id):
                        piece.done = True  # not ours any more
                        return
                    continue
                fetched = time.monotonic()
                connection = session.connection
                try:
                    listed = await self._pages.listed_page(page.body, resource.name, connection.tenant_id,
                                                           connection.livemode, stripe.api_version, page.asked_at)
                except PageCrashError as exc:  # read again, it would kill its reader again: a person must look
                    raise StopReading(exc.code) from None
                stripe_s = page.latency_s
                if not self._cpu_bound():  # pages waiting for our CPU would be taken for Stripe's slowness
                    self._stripe_s = moving_average(self._stripe_s, stripe_s)
                del page
                if listed.items is None:
                    raise StripeUnavailableError(NOT_A_LIST)  # the pool parsed what page_body let by
                unkept: IngestError | None = None  # an answer not to keep, shown in health: it may not go away
                if listed.has_more and not listed.items:  # taken for the end, the rest of the slice was never read
                    unkept = StripeEmptyPageError("Stripe listed no objects and said there were more")
                elif piece.lists_above_cursor(listed.items):  # published, the same objects again at every request
                    unkept = StripeCursorIgnoredError(
                        f"Stripe listed the {resource.name} the import had already read after its cursor")
                if unkept is not None:
                    await session.failed(unkept)
                    raise unkept
                while (split := run.splitting.get(piece.key)) is not None:
                    await split.wait()  # its new start is known once it is done (no await from here to the publish)
                if piece.key in run.unsure:
                    return  # let go unsaved: the page in hand may reach below a start only the database knows
                mine = piece.keep(listed.items, requested_start)  # after the records: a split meanwhile moves the start
                # Newest first: an object older than the start (left out) means the rest is older too.
                done = len(mine) < len(listed.items) or not (listed.has_more and listed.items)
                piece.last_page_read = done  # a split while it is published would only make an empty slice
                cursor = next((item.cursor_id for item in reversed(mine) if item.cursor_id is not None), None)
                piece.read_page([item.created for item in mine if item.created is not None])
                hashed = [(item.record, item.key_hash) for item in mine
                          if item.record is not None and item.key_hash is not None]  # set together by the pool
                records, key_hashes = [record for record, _ in hashed], [key for _, key in hashed]
                del hashed
                refused = [item.refused for item in mine if item.refused is not None]
                kept = len(mine)
                del listed, mine  # only the records wait for Kafka's acknowledgement: a third of the page's memory
                if refused:
                    log.warning("stripe listed objects the import cannot read; left out and counted in health",
                                connection_id=connection.connection_id, resource=resource.name, count=len(refused),
                                code=refused[0].code)
                await self._publisher.publish_records(records, key_hashes=key_hashes)
                published = piece.published_unsaved = len(records)
                del records, key_hashes  # not held while the next request waits for the budget
            piece.done = done
            if cursor is not None:
                piece.last_object_id = cursor
            elif kept and not piece.done:  # a whole page without an id to go on from
                raise StopReading("malformed_objects")
            piece.counted(published)
            if not await self._checkpoints.save_slice_page(piece, published, self._worker_id,
                                                           self._settings.slice_lease_s, refused):
                await self._not_saved(piece)
                piece.done = True  # not ours any more (claim lost, or a newer run): stop paging it
                return
            piece.published_unsaved = 0
            run.page_took(stripe_s + time.monotonic() - fetched)  # Stripe's time and ours, not the budget's
            await run.changed()
            if piece.done or run.over_share():
                return  # done, or let go at its checkpoint for another process importing the connection to page
            if run.peers.wants_more and not await self._give_a_split(piece, run):
                return  # the claim was lost

    async def _not_saved(self, piece: ImportSlice) -> None:
        """A page published, then its save found the slice no longer this process's: a newer run (which lists
        everything again anyway), or its claim lapsed and another process took it (that process lists the page
        again): said, and counted (`objects_published_unsaved`)."""
        try:
            still_the_run, holder = await self._checkpoints.slice_holder(piece)
        except DatabaseUnavailableError:
            still_the_run, holder = True, "unknown (Postgres unavailable)"
        if not still_the_run:
            piece.published_unsaved = 0
            log.info("a newer import run replaced the one a page was published for; it lists everything again",
                     connection_id=piece.connection_id, resource=piece.resource, run_id=piece.run_id)
            return
        self._unsaved(piece, "its claim lapsed (the process held up longer than importer.slice_lease_s) and "
                             "another process took the slice", holder=holder)

    def _unsaved(self, piece: ImportSlice, why: str, **detail: Any) -> None:
        """Says and counts a page published and never saved as this process's: the slice's next holder goes on from
        its last checkpoint, before that page, and publishes it again (deduplicated downstream)."""
        self._published_unsaved += piece.published_unsaved
        log.warning(f"an import page was published and not saved: {why}; the slice's next holder publishes it again "
                    "(deduplicated downstream)", connection_id=piece.connection_id, resource=piece.resource,
                    run_id=piece.run_id, slice_id=piece.slice_id, objects=piece.published_unsaved,
                    lease_s=self._settings.slice_lease_s, **detail)
        piece.published_unsaved = 0

    async def _give_a_split(self, piece: ImportSlice, run: ImportPass) -> bool:
        """Splits the older half off a slice at its checkpoint, unclaimed, for another process that wants more than
        it finds (once per refresh; as any split, one at a time). Returns False if the claim was lost."""
        async with run.lock:
            point = run.planner.split_point(piece)
            if point is None or not run.gives_a_split():
                return True
            return await self._split(run, piece, point, keep=False) is not None

    async def _fetch_in_time(self, session: KeySession, resource: str, query: dict[str, Any], run: ImportPass) -> Page:
        """`_fetch`, given up `page_overrun_s` after the pass's time. A page of a tenant whose account Stripe keeps
        answering 429 (its own systems at the limit) is retried with backoff, up to a minute and more: its pass held
        its place of the worker's `max_concurrent_imports`, and a few such tenants held them all."""
        try:
            async with asyncio.timeout(max(0.0, run.deadline - time.monotonic()) + self._settings.page_overrun_s):
                return await filled_in(session, resource, await self._fetch(session, resource, query), run.expanded)
        except TimeoutError:
            raise StripeUnavailableError(
                f"a {resource} page was still waiting for Stripe {self._settings.page_overrun_s:g} s after its pass's "
                "time; asked for again at the next pass") from None

    async def _fetch(self, session: KeySession, resource: str, query: dict[str, Any]) -> Page:
        return await fetch_page(session, resource, query, self._clock)
