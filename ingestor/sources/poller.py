"""The events poller (source=poll): per connection, reads Stripe's events API from a stored cursor.

Place in the flow: the poller catches what webhooks missed (or everything, for a connection
without a webhook). Each cycle claims the connection's poll (one poller per connection across
processes, by a lease renewed while it runs; a crashed poller's lapses), lists events of `EVENT_TYPES`
(in `EVENT_TYPE_LISTS`: the events API takes 20 types a list) created since the cursor minus an overlap
window (the events list is eventually consistent), publishes each one not already published in that
window through `envelope_for_event` — the same envelope a webhook of the event gives — and stores the
new cursor only after Kafka acknowledged everything.
A cursor older than the events API's 30 days means events were lost to the window: the connection
is marked as needing a catch-up import, which the importer runs, and polling resumes at the window.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ingestor.connections.status import STATUSES
from ingestor.connections.store import Connection
from ingestor.connections.views import import_window
from ingestor.envelope.build import check_event_shape, envelope_for_event, is_read_resource
from ingestor.envelope.discounts import Expanded, fill_in_target, unexpanded, with_expanded
from ingestor.errors import BadEventError, IngestError
from ingestor.sources.checkpoints import PollCursor, claimant_id, run_window
from ingestor.sources.deps import SourceDeps
from ingestor.sources.key_session import KeySession, StopReading
from ingestor.sources.refusals import last_usable_id, refusal_of
from ingestor.stripe_api.catalog import EVENT_TYPE_LISTS, EVENT_TYPES, IMPORTED
from ingestor.stripe_api.client import RawPage, StripeReader
from ingestor.stripe_api.discounts import fetch_expanded
from plumbing.errors import error_site, is_retriable
from plumbing.kafka import PublishError
from plumbing.logs import get_logger
from plumbing.postgres import DatabaseUnavailableError
from plumbing.settings import ImporterSettings, PollerSettings
from schemas import Source

log = get_logger(__name__)

EVENTS_WINDOW_S = 30 * 86400
# Resume this far inside the 30-day window after a gap, so the window does not move under the read.
WINDOW_MARGIN_S = 3600
POLLED_TYPES = frozenset(EVENT_TYPES)


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """How one cycle for one connection ended: polled (with counts), busy, not_due, stopped or failed."""

    connection_id: str
    state: str
    published: int = 0
    seen: int = 0
    detail: str = ""


def lists_in_time(event_type: str, created: int, now: float, polled: bool) -> bool:
    """Whether the poller lists an event whatever happens meanwhile (or has listed it already): a type it asks for,
    on a connection it has `polled` (its cursor stored), created no earlier than its polling reaches back. What it has
    read without a gap starts at its first poll or its last gap reset, less `EVENTS_WINDOW_S` and plus
    `WINDOW_MARGIN_S`, both before `now`; from the cursor on it lists once a key works (within 30 days). An older
    event reaching a webhook (a delivery resent from the Dashboard) is never listed. A connection never polled reads,
    once a key works, from that moment less 30 days: no event is sure to be listed then."""
    return polled and event_type in POLLED_TYPES and created >= now - EVENTS_WINDOW_S + WINDOW_MARGIN_S


def next_cursor(seen: dict[str, int], started_at: int, overlap_s: int, previous: int) -> PollCursor:
    """Returns the cursor after a cycle: newest of (events seen, poll start), ids within the overlap kept."""
    newest = max([previous, started_at, *seen.values()])
    keep_from = newest - overlap_s
    return PollCursor(newest, frozenset(i for i, created in seen.items() if created >= keep_from))


def poll_interval(connection: Connection, settings: PollerSettings) -> float:
    """Returns the connection's poll interval: faster while no webhook is verified."""
    return settings.interval_s if connection.webhook_verified_at else settings.unverified_interval_s


def rest_after_failures(failures: int, connection: Connection, settings: PollerSettings) -> float:
    """Seconds a connection whose last `failures` cycles failed rests before it is tried again: doubling from one
    second up to its cadence, so a brief outage ends soon after it does, and a lasting failure costs a try per
    cadence instead of one at every tick (the most overdue connection goes first, so it would take every tick's
    first slot)."""
    return min(poll_interval(connection, settings), 2.0 ** min(max(failures - 1, 0), 32))


def due_for_poll(connections: list[Connection], now: float, settings: PollerSettings,
                 polling: Collection[str]) -> list[Connection]:
    """Returns the connections due for a poll and not being polled here, longest unpolled first (never
    polled before all), so that when polls queue for a slot the most overdue go first."""
    due = [c for c in connections
           if c.connection_id not in polling and not STATUSES[c.status].stops_reading
           and (c.last_poll_at is None or now - c.last_poll_at.timestamp() >= poll_interval(c, settings))]
    return sorted(due, key=lambda c: c.last_poll_at.timestamp() if c.last_poll_at else float("-inf"))


class StripeEventsPoller:
    """Polls every pollable connection on its cadence; `run_once` is the burst mode."""

    def __init__(self, deps: SourceDeps, settings: PollerSettings, importer_settings: ImporterSettings):
        self._store = deps.store
        self._checkpoints = deps.checkpoints
        self._readers = deps.readers
        self._publisher = deps.publisher
        self._settings = settings
        self._importer_settings = importer_settings
        self._clock = deps.clock
        self._poller_id = claimant_id()  # who holds a connection's poll claim

    async def run_once(self, force: bool = True, stop: asyncio.Event | None = None) -> list[PollOutcome]:
        """Runs one cycle for every pollable connection (all of them with `force`, else the due ones); once
        `stop` is set, no further connection's cycle starts."""
        connections = await self._store.connections_with_keys()
        limit = asyncio.Semaphore(self._settings.max_concurrent_connections)

        async def one(connection: Connection) -> PollOutcome:
            async with limit:
                if stop is not None and stop.is_set():
                    return PollOutcome(connection.connection_id, "not_due", detail="stopping")
                return await self.poll_connection(connection.connection_id, force)

        return list(await asyncio.gather(*(one(c) for c in connections)))

    async def run_forever(self, stop: asyncio.Event, tick_s: float = 1.0) -> None:
        """Polls each connection as it falls due until `stop` is set, a bounded number at once, longest
        unpolled first. A poll does not wait for slower ones (a 30-day first read, a slow Stripe, an account
        at its limit): each connection keeps its own cadence. Cancellation stops at once (cursors stay
        consistent); once `stop` is set, polls under way finish and no new one starts."""
        polling: dict[str, asyncio.Task[None]] = {}
        failed: list[BaseException] = []
        failures: dict[str, int] = {}  # a connection's cycles failed in a row, in this process
        # A connection that failed is not tried again here before this time, unless its key changes meanwhile.
        resting: dict[str, tuple[float, int]] = {}
        limit = asyncio.Semaphore(self._settings.max_concurrent_connections)

        async def one(connection: Connection) -> None:
            connection_id = connection.connection_id
            async with limit:
                if stop.is_set():
                    return
                try:
                    outcome = await self.poll_connection(connection_id, force=False)
                    if outcome.state != "failed":
                        failures.pop(connection_id, None)
                        return
                    log.warning("poll failed; will retry", connection_id=connection_id, detail=outcome.detail)
                except Exception as exc:
                    if is_retriable(exc):
                        log.warning("poll failed; will retry", connection_id=connection_id, error=repr(exc))
                    else:  # a bug met in one tenant's data: the others go on
                        log.error("poll of a connection failed; other connections go on",
                                  connection_id=connection_id, error=error_site(exc))
                failures[connection_id] = failures.get(connection_id, 0) + 1
                rest = rest_after_failures(failures[connection_id], connection, self._settings)
                resting[connection_id] = (self._clock() + rest, connection.key_version)

        def done(task: asyncio.Task[None]) -> None:
            polling.pop(task.get_name(), None)
            error = None if task.cancelled() else task.exception()
            if error is not None:
                failed.append(error)

        try:
            while not stop.is_set():
                if failed:
                    raise failed[0]
                try:
                    connections = await self._store.connections_with_keys()
                except Exception as exc:
                    if not is_retriable(exc):
                        raise
                    log.warning("poll pass failed; will retry", error=repr(exc))  # Postgres away
                    connections = []
                now = self._clock()
                if connections:
                    key_versions = {c.connection_id: c.key_version for c in connections}
                    for connection_id in [c for c in failures if c not in key_versions]:  # deleted meanwhile
                        failures.pop(connection_id, None)
                        resting.pop(connection_id, None)
                    for connection_id, (_, key_version) in list(resting.items()):
                        if key_versions.get(connection_id, key_version) != key_version:  # a new key: try it now
                            failures.pop(connection_id, None)
                            del resting[connection_id]
                longest = max(self._settings.interval_s, self._settings.unverified_interval_s)
                for connection_id in [c for c, (until, _) in resting.items() if not now < until <= now + longest]:
                    del resting[connection_id]  # over (or the clock was set back past a whole cadence)
                for connection in due_for_poll(connections, now, self._settings, polling.keys() | resting.keys()):
                    task = asyncio.create_task(one(connection), name=connection.connection_id)
                    polling[connection.connection_id] = task
                    task.add_done_callback(done)
                try:
                    await asyncio.wait_for(stop.wait(), min(tick_s, self._settings.unverified_interval_s))
                except asyncio.TimeoutError:
                    pass
            await asyncio.gather(*polling.values())
        finally:
            for task in list(polling.values()):
                task.cancel()

    async def poll_connection(self, connection_id: str, force: bool = True) -> PollOutcome:
        """Runs one cycle for one connection under its poll claim."""
        async with self._claimed(connection_id) as held:
            if not held:
                return PollOutcome(connection_id, "busy")
            connection = await self._store.get_connection(connection_id)  # fresh, inside the lock
            if connection is None or STATUSES[connection.status].stops_reading:
                return PollOutcome(connection_id, "stopped", detail=connection.status if connection else "gone")
            now = self._clock()
            last = connection.last_poll_at.timestamp() if connection.last_poll_at else None
            if not force and last is not None and now - last < poll_interval(connection, self._settings):
                return PollOutcome(connection_id, "not_due")
            session = KeySession(connection, self._store, self._readers, self._clock)
            try:
                return await self._cycle(session, int(now))
            except StopReading as exc:
                await self._checkpoints.pause_import(connection_id, exc.reason)
                return PollOutcome(connection_id, "stopped", detail=exc.reason)
            except (IngestError, PublishError) as exc:
                return PollOutcome(connection_id, "failed", detail=str(exc))
            finally:
                await session.close()

    @contextlib.asynccontextmanager
    async def _claimed(self, connection_id: str) -> AsyncIterator[bool]:
        """Yields whether this poller claimed the connection's poll; renews the claim meanwhile, gives it back
        after. Raises DatabaseUnavailableError when Postgres is away."""
        lease_s = self._settings.claim_lease_s
        if not await self._checkpoints.claim_poll(connection_id, self._poller_id, lease_s):
            yield False
            return

        async def renew() -> None:
            while await self._checkpoints.renew_poll_claim(connection_id, self._poller_id, lease_s):
                await asyncio.sleep(lease_s / 3)

        renewing = asyncio.create_task(renew())
        try:
            yield True
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError, DatabaseUnavailableError):
                await renewing
            with contextlib.suppress(DatabaseUnavailableError):  # else the claim lapses with its lease
                await self._checkpoints.release_poll(connection_id, self._poller_id)

    async def _since(self, connection: Connection, now: int) -> tuple[PollCursor, int]:
        """Returns the stored cursor and where to read from, starting a catch-up import after a gap."""
        cursor = await self._checkpoints.poll_cursor(connection.connection_id)
        if cursor is None:
            # A new connection reads what the events API still holds, once: the import gives each
            # object's state, these events the history of its changes (with previous_attributes) in
            # the last 30 days, which MRR history needs. Dedupe makes the overlap with webhooks harmless.
            start = now - EVENTS_WINDOW_S + WINDOW_MARGIN_S
            return PollCursor(start, frozenset()), start
        since = cursor.last_event_created - self._settings.overlap_s
        oldest_readable = now - EVENTS_WINDOW_S
        if since >= oldest_readable:
            return cursor, since
        gap_from = datetime.fromtimestamp(cursor.last_event_created, tz=timezone.utc)
        log.warning("poll cursor is older than the events window; starting a catch-up import",
                    connection_id=connection.connection_id, cursor=gap_from.isoformat())
        await self._store.set_catchup_needed(connection.connection_id, connection.catchup_needed_since or gap_from)
        resume_from = oldest_readable + WINDOW_MARGIN_S
        unfinished = [c for c in await self._checkpoints.import_checkpoints(connection.connection_id) if not c.done]
        if not unfinished or run_window(unfinished)[1] < resume_from:
            # An unfinished run that ends before where polling resumes (the connect import of a key out for weeks,
            # resumed with a new one) lists nothing of the gap: it is replaced, or the gap was lost for good.
            start, end = import_window(now, self._importer_settings.history_months)
            await self._checkpoints.start_import(connection.connection_id, [r.name for r in IMPORTED], start, end,
                                                 "catchup")
        return PollCursor(resume_from, frozenset()), resume_from

    async def _cycle(self, session: KeySession, now: int) -> PollOutcome:
        connection = session.connection
        cursor, since = await self._since(connection, now)
        seen: dict[str, int] = {}
        fetched = Expanded()  # this cycle's: discounts by id, tiers by price id, coupons by coupon id
        published = 0
        received = datetime.fromtimestamp(now, tz=timezone.utc)
        # The events API takes 20 types a list. Each list reads the same window, up to the cycle's start: the
        # cursor moves to the newest event seen, and a later list (asked once the first has paged to its end) would
        # see events newer than the first list's first page, moving it past what the first list never listed.
        window = {"gte": since, "lte": now}
        for types in EVENT_TYPE_LISTS:
            published += await self._list(session, cursor, {
                "limit": self._settings.page_limit, "types": list(types), "created": window}, seen, fetched, received)
        # Every event up to here is acknowledged by Kafka: only now may the cursor move.
        if not await self._checkpoints.save_poll_cursor(
                connection.connection_id, next_cursor(seen, now, self._settings.overlap_s, cursor.last_event_created),
                self._poller_id):
            return PollOutcome(connection.connection_id, "busy", published, len(seen), "claim lost mid-poll")
        await self._store.record_poll(connection.connection_id, received)
        return PollOutcome(connection.connection_id, "polled", published, len(seen))

    async def _list(self, session: KeySession, cursor: PollCursor, params: dict[str, Any], seen: dict[str, int],
                    fetched: Expanded, received: datetime) -> int:
        """Pages through one list of events, publishing those not published in the overlap window (acknowledged
        by Kafka on return) and noting each one listed in `seen`; returns how many were published."""
        connection = session.connection
        published = 0
        while True:
            async def request(reader: StripeReader, query: dict[str, Any] = dict(params)) -> RawPage:
                return await reader.list_raw_page("events", query)

            page = await session.call(request)
            envelopes, refused = [], []
            for event in page.objects:
                try:
                    check_event_shape(event)  # as a webhook's: an id, type, created and object we can name
                except BadEventError as exc:
                    refused.append(refusal_of(connection.tenant_id, "poll", "events", event, exc))
                    continue
                seen[event["id"]] = event["created"]
                if event["id"] in cursor.recent_event_ids or not is_read_resource(event):
                    continue
                event = await self._with_expanded(session, event, fetched)
                envelopes.append(envelope_for_event(event, connection.tenant_id, Source.POLL, received))
            await self._publisher.publish_many(envelopes)
            published += len(envelopes)
            if refused:
                log.warning("stripe listed events the poller cannot read; left out and counted in health",
                            connection_id=connection.connection_id, count=len(refused), code=refused[0].code)
                await self._checkpoints.record_refused(refused)
            if not page.has_more or not page.objects:
                break
            # Go on after the last event with an id to go on from; none: the cycle fails before its cursor moves
            # (moving it would skip what the following pages hold), and the refused events show in health.
            last_id = last_usable_id(page.objects)
            if last_id is None:
                raise BadEventError("Stripe listed a page of events without an id to go on from", "malformed_events")
            params["starting_after"] = last_id
        return published

    async def _with_expanded(self, session: KeySession, event: dict[str, Any], known: Expanded) -> dict[str, Any]:
        """The event with what its subscription names unexpanded — discounts by id, tiered prices without their
        tiers, coupons by id or without their products — filled in (a retrieve of the subscription, and of coupons, for
        what the cycle has not fetched yet, remembered for the cycle). Raises StopReading or IngestError like any
        read."""
        wanted = unexpanded(event)
        if not wanted:
            return event
        missing = wanted.beyond(known)
        if missing:
            object_type, object_id = fill_in_target(event)

            async def request(reader: StripeReader) -> Expanded:
                return await fetch_expanded(reader, object_id, missing, known.coupons, object_type=object_type,
                                            known_refused=known.no_tiers)

            known.add(await session.call(request))
        return with_expanded(event, known)
