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
from datetime import datetime, timezone
from typing import Any

import orjson
import stripe

from ingestor.connections.status import STATUSES
from ingestor.envelope.coupons import coupons_laid_in, coupons_wanted
from ingestor.envelope.discounts import Expanded, Unexpanded, tiers_laid_in, tiers_missing
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
from ingestor.sources.import_turns import DONE, ImportTurns
from ingestor.sources.key_session import KeySession, StopReading
from ingestor.sources.page_pool import PageCrashError, PagePool, PagePoolBrokenError, default_processes
from ingestor.sources.read_alone_marks import MarkAction, ReadAloneMarks
from ingestor.sources.slices import (
    ALONE,
    ImportSlice,
    Peers,
    SlicePlanner,
    initial_slice_count,
    slices_per_endpoint,
    slices_wanted,
)
from ingestor.stripe_api.catalog import BY_NAME
from ingestor.stripe_api.client import NOT_A_LIST, PageBody, StripeReader, list_endpoint
from ingestor.stripe_api.discounts import fetch_expanded
from ingestor.stripe_api.request_budget import AccountBudget, Priority
from plumbing.errors import error_site, is_retriable
from plumbing.kafka import PublishError
from plumbing.logs import get_logger
from plumbing.runtime import LoopLag
from plumbing.settings import ImporterSettings

log = get_logger(__name__)

CPU_BOUND_LAG_S = 0.05  # the event loop this late on average: the CPU, not Stripe, is what pages wait for
POOL_BUSY = 0.9  # the page pool's processes at work this share of the time: the same
# What a connection's first pass assumes a page takes until its pages are timed (Stripe's lists take hundreds of
# milliseconds); later passes start from the previous pass's measure.
FIRST_PAGE_S = 0.5
# How often a pass says it still imports the connection (how many slices it pages, whether it wants more than it
# finds) and learns what the other processes importing it do; a process that died counts no more after
# SHARE_LEASE_S. One with nothing to page waits up to SHARE_WAIT_S for another to let a slice go before its pass ends.
SHARE_REFRESH_S = 1.0
SHARE_LEASE_S = 5.0
SHARE_WAIT_S = 5.0
CLAIM_AGAIN_S = 1.0  # after a claim found no free slice (another process may let one go meanwhile)


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """How one importer pass over a connection ended: done, paused (why), busy (another process holds every
    slice left), more (the pass's time was up: go on at once), retry_later (Stripe or Kafka failed), or failed
    (an unexpected error, logged; tried again next pass)."""

    connection_id: str
    state: str
    detail: str = ""
    slices: int = 0  # slices this process paged in the pass


TIERED = b'"tiered"'  # in a subscriptions page's body: a tiered price (or plan) whose tiers Stripe did not list
DISCOUNTED = b'"source"'  # and a discount (a subscription's or customer's): its coupon by id, without its products


@dataclass(frozen=True, slots=True)
class Page:
    """One fetched page: the body Stripe sent, when the request that returned it was sent (Stripe read the objects
    after that: their snapshots are dated by it), and how long Stripe took."""

    body: bytes
    asked_at: datetime
    latency_s: float = 0.0


def _moving_average(average: float | None, sample: float) -> float:
    """A time's moving average with one more sample (a fifth of its weight); the first sample is the average."""
    return sample if average is None else average + 0.2 * (sample - average)


class _Pass:
    """One pass of this process over one connection: its slices, its deadline, how many it pages at once, and
    the wake-up of idle workers.

    Slices paged at once: enough to keep the budget busy (Little's law: requests/s × the time one page takes,
    from asking to checkpoint, measured as the pass goes), and no more — every slice ends in a part-empty
    page, so a slice split off that the budget cannot serve anyway only wastes requests. The count bounds
    claims as well as splits (a later pass finds many slices left by the earlier ones). While the process's
    CPU is the bottleneck (its event loop runs late, or the page pool's processes are at work nearly all the
    time), pages are slow because they queue for the CPU: the count is held where it was then, as one more slice
    would only hold another page in memory (and end in one more part-empty page).

    Processes importing the same connection share that count (`slices_wanted`): each takes what the others
    leave of it, and only its share while one of them wants more than it finds (room for more, and no free slice
    or one of its own worth splitting). For that one, a holder lets slices over its share go at their next
    checkpoints, or splits one off at a checkpoint (once per refresh), and leaves the free slices to it. So a
    second worker adds its CPU to an import another started, instead of waiting for the first one's pass to end.

    While pages queue for the account's budget, those of the resource with the most left go first (`budget`,
    updated as slices page): the import ends when its largest resource does.
    """

    def __init__(self, planner: SlicePlanner, deadline: float, requests_per_second: float, most: int,
                 worker_stop: asyncio.Event, cpu_bound: Callable[[], bool], page_s: float | None,
                 endpoint_requests_per_second: float | None = None, budget: AccountBudget | None = None):
        self.planner = planner
        self._budget = budget
        self.expanded = Expanded()  # tiered prices' tiers by price id, coupons by coupon id: this pass's
        self.deadline = deadline
        self.stop = asyncio.Event()  # a worker failed: the others stop too
        self._worker_stop = worker_stop  # the process is stopping
        self.slices_taken = 0
        self.lock = asyncio.Lock()  # one claim or split at a time
        self._changed = asyncio.Condition()
        self._rate = requests_per_second
        self._endpoint_rate = endpoint_requests_per_second  # None: the account's budget is the tighter one
        self._most = most
        self.page_s = FIRST_PAGE_S if page_s is None else page_s  # the previous pass's measure, or a guess
        self._guessed = page_s is None  # until a page is timed
        self._cpu_bound = cpu_bound  # whether this process's CPU is what pages wait for now
        self._cpu_bound_at: int | None = None  # slices being paged when the CPU became the bottleneck
        # A claim that found no free slice is tried again a second later, not before (-inf: none found nothing yet,
        # whatever the monotonic clock's origin).
        self._claim_again_at = -math.inf
        self._ran_out = False  # since the last claim or look, the last slice paged here ended: one is tried at once
        self._look_again_at = -math.inf  # when whether another process still pages is asked again (`looks_again`)
        self.peers = ALONE  # the other processes importing this connection, as last refreshed
        self._gave_a_split = False  # since that refresh
        self.paged_elsewhere = False  # another process pages some of the import (as of the last failed claim or look)
        self._idle_until: float | None = None  # how long a worker with nothing to page waits for a slice let go
        self.splitting: dict[tuple[str, str, int], asyncio.Event] = {}  # slices being split now, set once done
        self.unsure: set[tuple[str, str, int]] = set()  # slices whose split failed: their start is the database's

    def page_took(self, seconds: float) -> None:
        """One page took `seconds` from sending its request to its checkpoint (waits for the budget excluded).

        A guess is replaced by the first page timed: averaged in, a guess of half a second for a Stripe that
        answers in 50 ms would split a large history into several times the slices the budget can use, each
        holding a page in memory until it ends."""
        self.page_s, self._guessed = _moving_average(None if self._guessed else self.page_s, seconds), False

    @property
    def page_timed(self) -> bool:
        """Whether `page_s` is a measure (a page was timed in this pass or the one it started from), not a guess."""
        return not self._guessed

    def wanted(self) -> int:
        """Slices to page at once."""
        wanted = slices_wanted(self._rate, self.page_s, self._most, self.peers)
        if self._cpu_bound():
            if self._cpu_bound_at is None:
                self._cpu_bound_at = max(1, self.planner.active_count())
            return min(wanted, self._cpu_bound_at)
        self._cpu_bound_at = None
        return wanted

    def to_split(self) -> tuple[ImportSlice, int] | None:
        """One of this process's slices to split and where, if any is worth it (`SlicePlanner.to_split`)."""
        endpoint_rate, peers = self._endpoint_rate, self.peers
        if endpoint_rate is None:
            return self.planner.to_split(self.wanted())
        return self.planner.to_split(
            self.wanted(), lambda resource: slices_per_endpoint(endpoint_rate, self.page_s, peers, resource))

    def has_room(self) -> bool:
        return self.planner.active_count() < self.wanted()

    def over_share(self) -> bool:
        """Another process wants more slices than it finds and this one pages more than its share."""
        return self.peers.wants_more and self.planner.active_count() > self.wanted()

    def refreshed(self, peers: Peers) -> None:
        self.peers, self._gave_a_split = peers, False

    def gives_a_split(self) -> bool:
        """Another process wants more slices than it finds: split one off for it at this checkpoint (once per
        refresh)."""
        if not self.peers.wants_more or self._gave_a_split:
            return False
        self._gave_a_split = True
        return True

    def claims_free_slices(self) -> bool:
        """While another process wants more slices than it finds, one that does not leaves the free ones to it."""
        return not self.peers.wants_more or self.wants_more()

    def wants_more(self) -> bool:
        """This process has room for more slices and finds none: a claim found no free one lately, and none of its
        own is worth splitting, were it not held back from its resource by the others' slices of it (asking then
        made the others let slices go and split some off for it: two workers on a bulk migration's history,
        1,349-1,401 requests against 1,325-1,399, median 0.85 of the ceiling against 0.88, five runs each). Left: a
        process whose every slice is of resources the others hold their endpoint's count of pages only those, while
        it could take some of a CPU-bound one's work."""
        return (time.monotonic() < self._claim_again_at + CLAIM_AGAIN_S and self.has_room()
                and self.planner.to_split(self.wanted()) is None)

    def waits_for_share(self) -> bool:
        """Whether a worker with nothing to page here waits for another process to let a slice go: while another
        process pages some of the import, for up to `SHARE_WAIT_S` since this one ran out of slices (the other
        sees this process within `SHARE_REFRESH_S` and lets its excess go at their next checkpoints)."""
        if self.planner.active_count():
            self._idle_until = None
            return True
        if not self.paged_elsewhere:
            return False
        if self._idle_until is None:
            self._idle_until = time.monotonic() + SHARE_WAIT_S
        return time.monotonic() < self._idle_until

    def may_take(self) -> bool:
        """Another slice is wanted and there may be one: a free one to claim, or one of ours worth splitting."""
        return self.has_room() and (self.claim_worth_trying() or self.to_split() is not None)

    def claim_worth_trying(self) -> bool:
        return ((time.monotonic() >= self._claim_again_at or (self._ran_out and not self.planner.active_count()))
                and self.claims_free_slices())

    def looks_again(self) -> bool:
        """Whether to ask the database if another process still pages some of the import, when no claim is tried (free
        slices are left to another process that wants more): nothing is paged here, and the last slice paged here
        ended since the last claim or look (`ran_out`), or the last look, a second ago or more, found one."""
        if self.planner.active_count():
            return False
        return self._ran_out or (self.paged_elsewhere and time.monotonic() >= self._look_again_at)

    def found_nothing_to_claim(self, paged_elsewhere: bool) -> None:
        self._claim_again_at = time.monotonic() + CLAIM_AGAIN_S
        self.looked(paged_elsewhere)  # a claim that found nothing asked whether another process pages, too

    def looked(self, paged_elsewhere: bool) -> None:
        self.paged_elsewhere, self._ran_out = paged_elsewhere, False
        self._look_again_at = time.monotonic() + CLAIM_AGAIN_S

    def ran_out(self) -> None:
        """This process pages none of the import's slices any more: a claim is tried at once, not up to
        `CLAIM_AGAIN_S` after the last one that found nothing, and asks afresh whether another process still pages
        some of the import. The last claim may have asked while one did: if this process then paged the import's
        last slice, its pass waited, taken for still shared, before it ended the import (two workers on a bulk
        migration's history: 1.3 s after the last page of an 18-19 s import, in one run of five; up to
        `SHARE_WAIT_S` where free slices were left to the other process, which never asked again: 0.8 s in a run
        where only a claim was tried at once). The wait for a slice let go (`waits_for_share`) starts again here."""
        self._ran_out, self._idle_until = True, None

    def going(self) -> bool:
        return not (self.stop.is_set() or self._worker_stop.is_set()) and time.monotonic() < self.deadline

    async def changed(self) -> None:
        """A slice paged a page, was taken or let go: a split may now be worth it. The waiters all wait for the
        same thing, so one is woken (it wakes the next once it took a slice), or all once none is left."""
        if self._budget is not None:  # by the import's work left: another process's requests are ranked so too
            self._budget.rank_endpoints({list_endpoint(resource): left for resource, left
                                         in self.peers.with_work_left(self.planner.work_left()).items()},
                                        shared=self.peers.processes > 1)
        async with self._changed:
            if self.planner.active_count() or self.paged_elsewhere:
                self._changed.notify(1)
            else:
                self._changed.notify_all()

    async def wait_for_split(self) -> None:
        """Waits until another slice may be taken or none is left being paged (by any process), or a second (then
        a claim is tried again: another process may have let one go), or the end of the pass."""
        timeout = min(CLAIM_AGAIN_S, max(0.0, self.deadline - time.monotonic()))
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(
                    lambda: self.may_take() or not (self.planner.active_count() or self.paged_elsewhere)), timeout)
        except asyncio.TimeoutError:
            pass


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
        run = _Pass(SlicePlanner(self._settings.min_slice_s, 2 * self._settings.page_limit,
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
                except BaseException:
                    run.stop.set()
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

    async def _next_slice(self, connection_id: str, run: _Pass) -> ImportSlice | None:
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

    async def _split(self, run: _Pass, piece: ImportSlice, at: int, keep: bool = True) -> ImportSlice | None:
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

    async def _page_slice(self, session: KeySession, piece: ImportSlice, run: _Pass) -> None:
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
                    self._stripe_s = _moving_average(self._stripe_s, stripe_s)
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
                published = len(records)
                del records, key_hashes  # not held while the next request waits for the budget
            piece.done = done
            if cursor is not None:
                piece.last_object_id = cursor
            elif kept and not piece.done:  # a whole page without an id to go on from
                raise StopReading("malformed_objects")
            piece.counted(published)
            if not await self._checkpoints.save_slice_page(piece, published, self._worker_id,
                                                           self._settings.slice_lease_s, refused):
                piece.done = True  # not ours any more (claim lost, or a newer run): stop paging it
                return
            run.page_took(stripe_s + time.monotonic() - fetched)  # Stripe's time and ours, not the budget's
            await run.changed()
            if piece.done or run.over_share():
                return  # done, or let go at its checkpoint for another process importing the connection to page
            if run.peers.wants_more and not await self._give_a_split(piece, run):
                return  # the claim was lost

    async def _give_a_split(self, piece: ImportSlice, run: _Pass) -> bool:
        """Splits the older half off a slice at its checkpoint, unclaimed, for another process that wants more than
        it finds (once per refresh; as any split, one at a time). Returns False if the claim was lost."""
        async with run.lock:
            point = run.planner.split_point(piece)
            if point is None or not run.gives_a_split():
                return True
            return await self._split(run, piece, point, keep=False) is not None

    async def _fetch_in_time(self, session: KeySession, resource: str, query: dict[str, Any], run: _Pass) -> Page:
        """`_fetch`, given up `page_overrun_s` after the pass's time. A page of a tenant whose account Stripe keeps
        answering 429 (its own systems at the limit) is retried with backoff, up to a minute and more: its pass held
        its place of the worker's `max_concurrent_imports`, and a few such tenants held them all."""
        try:
            async with asyncio.timeout(max(0.0, run.deadline - time.monotonic()) + self._settings.page_overrun_s):
                page = await self._fetch(session, resource, query)
                if (resource == "subscriptions" and (TIERED in page.body or DISCOUNTED in page.body)) or \
                        (resource == "customers" and DISCOUNTED in page.body):
                    page = await self._filled_in(session, page, run.expanded)
                return page
        except TimeoutError:
            raise StripeUnavailableError(
                f"a {resource} page was still waiting for Stripe {self._settings.page_overrun_s:g} s after its pass's "
                "time; asked for again at the next pass") from None

    async def _filled_in(self, session: KeySession, page: Page, known: Expanded) -> Page:
        """A subscriptions page with its tiered prices' tiers and its coupons (an item's discount's, named by id; a
        forever coupon's products) laid in (`known`, by price and coupon id, grows): Stripe lists none of them
        (`data.items.data.price.tiers`, `data.items.data.discounts.source.coupon` and
        `data.discounts.source.coupon.applies_to` are five levels of expansion or more, it takes four), so one
        subscription per price not known yet is retrieved with its tiers, and each coupon not known yet with its
        products, as the receiver and the poller do. A customers page: each customer's discount's coupon (by id in a
        list) with its products. A page that is not a list is left for the page pool to judge; a price or coupon a
        retrieve does not give stays without (unreadable, in health)."""
        try:
            decoded = orjson.loads(page.body)
            listed = decoded["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return page
        if not isinstance(listed, list):
            return page
        for obj in listed:
            kind = obj.get("object") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None
            if kind not in ("subscription", "customer"):
                continue
            missing = Unexpanded(tiered_prices=tuple(tiers_missing(obj)),
                                 coupons=tuple(coupons_wanted(obj))).beyond(known)
            if missing:
                async def retrieve(reader: StripeReader, owner: str = obj["id"], wanted: Unexpanded = missing,
                                   object_type: str = str(kind)) -> Expanded:
                    return await fetch_expanded(reader, owner, wanted, known.coupons, object_type=object_type)

                known.add(await session.call(retrieve))
        filled = [coupons_laid_in(tiers_laid_in(o, known.tiers), known.coupons) if isinstance(o, dict) else o
                  for o in listed]
        return Page(orjson.dumps({**decoded, "data": filled}), page.asked_at, page.latency_s)

    async def _fetch(self, session: KeySession, resource: str, query: dict[str, Any]) -> Page:
        async def request(reader: StripeReader) -> PageBody:
            return await reader.list_page_body(resource, query)

        page = await session.call(request)
        asked_at = datetime.fromtimestamp(self._clock() - page.latency_s, tz=timezone.utc)  # after the budget's wait
        return Page(page.body, asked_at, page.latency_s)
