"""The events poller against the simulator: webhook-less freshness, two pollers, 30-day gap, 401, overlap."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import asyncpg
import pytest

from ingestor.connections.store import Connection, PostgresConnectionStore
from ingestor.envelope.publisher import RawEventPublisher
from ingestor.sources.checkpoints import PollCursor, PostgresCheckpoints, run_window
from ingestor.sources.deps import SourceDeps
from ingestor.sources.poller import (
    EVENTS_WINDOW_S,
    WINDOW_MARGIN_S,
    StripeEventsPoller,
    due_for_poll,
    lists_in_time,
    next_cursor,
    rest_after_failures,
)
from ingestor.stripe_api.catalog import EVENT_TYPE_LISTS, EVENT_TYPES, IMPORTED, MAX_EVENT_TYPES_PER_LIST
from ingestor.stripe_api.client import RawPage
from plumbing.settings import ImporterSettings, PollerSettings
from projections.projector.store import PostgresProjectionStore
from schemas import Envelope, Source
from service.worker import Worker
from stripe_sim import SimServer
from tests.helpers import wait_for
from tests.ingestor.conftest import ControlClient, connect, published_envelopes
from tests.projections.support import apply_all, bind_tenant

pytestmark = pytest.mark.integration

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
CONNECTION = Connection(
    connection_id="conn", tenant_id="ten", livemode=False, status="connected", status_reason=None,
    status_changed_at=EPOCH, key_hint=None, key_version=1, has_key=True, key_tested_at=None,
    webhook_verified_at=None, last_webhook_at=None, last_poll_at=None, last_error_code=None, last_error=None,
    last_error_at=None, catchup_needed_since=None, created_at=EPOCH, webhook_secret_hints=())


def test_each_of_the_pollers_lists_asks_for_as_many_event_types_as_stripe_takes_and_together_every_one() -> None:
    assert all(0 < len(types) <= MAX_EVENT_TYPES_PER_LIST for types in EVENT_TYPE_LISTS)
    assert [t for types in EVENT_TYPE_LISTS for t in types] == list(EVENT_TYPES) and len(set(EVENT_TYPES)) == len(
        EVENT_TYPES)
    assert {"customer.discount.created", "customer.discount.updated", "customer.discount.deleted"} <= set(EVENT_TYPES)


async def test_each_list_of_a_cycle_reads_up_to_the_cycles_start_so_the_cursor_skips_nothing() -> None:
    """The second list (the discount types) starts once the first has paged to its end: a long first poll of a busy
    account, each page slow. It saw a discount change made meanwhile, the cursor moved to it, and a charge made after
    the first list's first page, more than the overlap before it, was never listed (found by review, on a Stripe
    faked to take 20 s a page)."""
    start = 1_800_000_000
    clock = [start]
    stripe_events = [(f"evt_old_{i}", "charge.succeeded", start - 100 - i) for i in range(30)] + [
        ("evt_charge_late", "charge.succeeded", start + 60), ("evt_discount", "customer.discount.created", start + 600)]
    listed: list[str] = []

    class SlowStripe:  # newest first, what exists when the page is asked for
        async def list_raw_page(self, resource: str, query: dict[str, Any]) -> RawPage:
            clock[0] += 20
            window = query["created"]
            found = sorted((e for e in stripe_events if e[1] in query["types"] and window["gte"] <= e[2] <= clock[0]
                            and e[2] <= window.get("lte", e[2])), key=lambda e: -e[2])
            if "starting_after" in query:
                found = found[[e[0] for e in found].index(query["starting_after"]) + 1:]
            listed.extend(e[0] for e in found[:query["limit"]])
            return RawPage([{"id": i, "object": "event", "type": t, "created": c, "livemode": False,
                             "data": {"object": {"object": "balance"}}} for i, t, c in found[:query["limit"]]],
                           len(found) > query["limit"])

    class Session:
        connection = dataclasses.replace(CONNECTION, connection_id="conn_slow")

        async def call(self, request: Any) -> Any:
            return await request(SlowStripe())

    class Cursors:
        cursor = PollCursor(start - 200, frozenset())

        async def poll_cursor(self, connection_id: str) -> PollCursor:
            return self.cursor

        async def save_poll_cursor(self, connection_id: str, cursor: PollCursor, poller_id: str) -> bool:
            self.cursor = cursor
            return True

    class Nothing:
        async def record_poll(self, *args: Any) -> None: ...

        async def publish_many(self, envelopes: Any) -> None: ...

    cursors = Cursors()
    deps = SourceDeps(Nothing(), cursors, None, Nothing(), clock=lambda: clock[0])  # type: ignore[arg-type]
    poller = StripeEventsPoller(deps, PollerSettings(page_limit=1), ImporterSettings())
    await poller._cycle(Session(), start)  # type: ignore[arg-type]
    assert cursors.cursor.last_event_created <= start
    await poller._cycle(Session(), clock[0])  # type: ignore[arg-type]
    assert {"evt_charge_late", "evt_discount"} <= set(listed)


def test_the_cursor_keeps_the_overlap_ids_and_never_goes_back() -> None:
    cursor = next_cursor({"evt_a": 100, "evt_b": 950, "evt_c": 1000}, started_at=990, overlap_s=60, previous=500)
    assert cursor == PollCursor(1000, frozenset({"evt_b", "evt_c"}))
    assert next_cursor({}, started_at=400, overlap_s=60, previous=500).last_event_created == 500


def pay(sim: SimServer, account: str, n: int) -> list[str]:
    """Makes `n` one-off payments now; returns the new events' ids."""
    book = sim.book(account)
    before = {e["id"] for e in book.store.all("event")}
    for i in range(n):
        # Work around a simulator bug: Store.update after an insert indexes a stale sorted list
        # (stripe_sim/model.py, `kind in self._sorted` should also require `kind not in self._dirty`).
        book.store._sorted.clear()
        book.one_off_payment(None, 1000 + i, "usd", sim.clock.now(), True, "poll test")
    return [e["id"] for e in book.store.all("event") if e["id"] not in before]


async def test_a_webhookless_connection_sees_a_new_charge_within_one_poll_interval(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    account = sim.create_account(customers=3).id
    sim.set_rate_limit(account, 1000)
    tenant, token, connection_id, _ = await connect(control, sim, account)
    interval = 1.0
    deps = SourceDeps(worker.store, worker.checkpoints, control.readers,
                      RawEventPublisher(worker.publisher, control.settings.kafka.raw_topic))
    poller = StripeEventsPoller(deps, PollerSettings(unverified_interval_s=interval), control.settings.importer)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run_forever(stop, tick_s=0.2))
    try:
        await wait_for(lambda: _polled(worker, connection_id), 10, "the first poll")
        paid_at = time.time()
        new = set(pay(sim, account, 1))
        envelopes: list[Envelope] = []

        async def polled_the_new_events() -> bool:
            envelopes[:] = [e for e in await published_envelopes(control.settings) if e.event_id in new]
            return {e.event_id for e in envelopes} == new

        await wait_for(polled_the_new_events, 30, "the new charge's events on the topic")
        # Fresh by the time of the poll that read them (the cycle's start), not by how long reading back takes:
        # due within the interval (the last poll's time is kept to the second) and one tick.
        assert all(e.received_time.timestamp() - paid_at < interval + 1 + 0.2 + 0.5 for e in envelopes)
        charge = next(e for e in envelopes if e.event_type == "charge.succeeded")
        assert charge.source == Source.POLL and charge.tenant_id == tenant
    finally:
        stop.set()
        await task
    _, view = await control.call("GET", f"/api/tenants/{tenant}/connections/test", token)
    assert view["status"] == "polling_only" and view["last_poll_at"]


async def test_a_payment_captured_after_its_authorisation_counts_in_gross_when_polled(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    """A payment authorised first and captured a minute later (`capture_method=manual`): its `charge.succeeded`
    says nothing was captured, so without `charge.captured` a connection without webhooks counted it as 0."""
    account = sim.create_account(customers=1).id
    sim.set_rate_limit(account, 1000)
    tenant, _, connection_id, _ = await connect(control, sim, account)
    book = sim.book(account)
    book.store._sorted.clear()  # the simulator bug worked around in `pay`
    authorised_at = sim.clock.now() - 120
    charge = book.authorize_payment(None, 4200, "usd", authorised_at, "captured later")
    book.store._sorted.clear()
    book.capture(charge["id"], authorised_at + 60, 4000)  # part of it: 4000 of the 4200 authorised
    deps = SourceDeps(worker.store, worker.checkpoints, control.readers,
                      RawEventPublisher(worker.publisher, control.settings.kafka.raw_topic))
    poller = StripeEventsPoller(deps, PollerSettings(), control.settings.importer)
    assert (await poller.poll_connection(connection_id)).state == "polled"
    polled = [e for e in await published_envelopes(control.settings)
              if e.object_id == charge["id"] and e.source == Source.POLL]
    assert sorted(e.event_type for e in polled) == ["charge.captured", "charge.succeeded"]

    await apply_all(PostgresProjectionStore(control.pool, "capture-test"), polled)
    async with control.pool.acquire() as conn:
        await bind_tenant(conn, tenant)
        gross = await conn.fetchval("SELECT sum(gross) FROM projection.daily_revenue WHERE tenant_id = $1", tenant)
    assert gross == 4000


def test_the_receiver_leaves_to_the_poller_only_events_a_poll_reaches() -> None:
    """An event the receiver cannot fill in (the key refused) is acknowledged only if a poll is sure to list it: a type
    the poller asks for, on a connection polled before (a cursor stored), created no earlier than a first poll reads
    (30 days less an hour); one an hour older (a resend from the Dashboard), or any of a connection never polled, is
    answered 503, or it was lost."""
    now = 1_800_000_000.0
    first_read = int(now) - EVENTS_WINDOW_S + WINDOW_MARGIN_S
    updated = "customer.subscription.updated"
    assert lists_in_time(updated, first_read, now, polled=True)
    assert lists_in_time(updated, int(now) + 60, now, polled=True)  # Stripe's clock a minute ahead
    assert not lists_in_time(updated, first_read - 1, now, polled=True)
    assert not lists_in_time(updated, int(now), now, polled=False)  # its first poll reads from whenever a key works
    unpolled = "customer.source.updated"
    assert unpolled not in EVENT_TYPES and not lists_in_time(unpolled, int(now), now, polled=True)


def test_polls_fall_due_on_each_connections_own_cadence_most_overdue_first() -> None:
    settings = PollerSettings(interval_s=60, unverified_interval_s=15)
    now = 1_000_000.0

    def connection(cid: str, polled_ago: float | None, verified: bool = True, status: str = "connected") -> Connection:
        at = None if polled_ago is None else datetime.fromtimestamp(now - polled_ago, tz=timezone.utc)
        return dataclasses.replace(CONNECTION, connection_id=cid, last_poll_at=at, status=status,
                                   webhook_verified_at=at if verified else None)

    connections = [connection("recent", 30), connection("late", 90), connection("new", None),
                   connection("unverified", 20, verified=False), connection("later", 300),
                   connection("revoked", 900, status="key_invalid"), connection("busy", 400)]
    due = due_for_poll(connections, now, settings, polling={"busy"})
    assert [c.connection_id for c in due] == ["new", "later", "late", "unverified"]


async def test_a_slow_account_does_not_hold_up_the_polls_of_others(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    """An account whose poll takes seconds (a long first read of 30 days at Stripe's latency) must not
    stretch every other connection's cadence to its length."""
    slow_account, quick_account = sim.create_account(customers=30).id, sim.create_account(customers=1).id
    slow = (await connect(control, sim, slow_account, "Slow"))[2]
    quick = (await connect(control, sim, quick_account, "Quick"))[2]
    deps = SourceDeps(worker.store, worker.checkpoints, control.readers,
                      RawEventPublisher(worker.publisher, control.settings.kafka.raw_topic))
    # 127 events in 30 days at 5 a page and 250 ms a page: the slow account's first poll takes ~7 s.
    poller = StripeEventsPoller(deps, PollerSettings(unverified_interval_s=1.0, page_limit=5), control.settings.importer)
    quick_polls: set[datetime] = set()

    async def quick_polled_thrice_while_slow_runs() -> bool:
        slow_row, quick_row = [await worker.store.get_connection(c) for c in (slow, quick)]
        assert slow_row is not None and quick_row is not None
        if quick_row.last_poll_at is not None:
            quick_polls.add(quick_row.last_poll_at)
        assert slow_row.last_poll_at is None, f"the slow poll ended first; quick polled {len(quick_polls)} times"
        return len(quick_polls) >= 3

    sim.set_faults({"kind": "latency", "latency_ms": 250})
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run_forever(stop, tick_s=0.1))
    try:
        await wait_for(quick_polled_thrice_while_slow_runs, 20, "three polls of the quick account")
        await wait_for(lambda: _polled(worker, slow), 30, "the slow account's first poll")
    finally:
        sim.set_faults()
        stop.set()
        await task


async def _polled(worker: Worker, connection_id: str) -> bool:
    connection = await worker.store.get_connection(connection_id)
    return connection is not None and connection.last_poll_at is not None


async def test_one_poller_per_connection_by_a_claim_that_lapses_when_its_poller_dies(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    account = sim.create_account(customers=2).id
    connection_id = (await connect(control, sim, account, "Claimed"))[2]
    checkpoints = worker.checkpoints
    cursor = PollCursor(int(time.time()), frozenset())
    assert await checkpoints.claim_poll(connection_id, "crashed", lease_s=1.0)
    # Held: another poller neither polls nor may store a cursor.
    deps = SourceDeps(worker.store, checkpoints, control.readers,
                      RawEventPublisher(worker.publisher, control.settings.kafka.raw_topic))
    poller = StripeEventsPoller(deps, PollerSettings(claim_lease_s=5.0), control.settings.importer)
    assert (await poller.poll_connection(connection_id)).state == "busy"
    assert not await checkpoints.save_poll_cursor(connection_id, cursor, "another")
    # The holder died without giving it back: after its lease another poller takes over.
    await wait_for(lambda: checkpoints.claim_poll(connection_id, "successor", lease_s=5.0), 5, "the lease to lapse")
    assert not await checkpoints.save_poll_cursor(connection_id, cursor, "crashed")  # the late holder stores nothing
    assert await checkpoints.save_poll_cursor(connection_id, cursor, "successor")
    await checkpoints.release_poll(connection_id, "successor")
    assert (await poller.poll_connection(connection_id)).state == "polled"
    assert await checkpoints.claim_poll(connection_id, "next", lease_s=1.0)  # given back after the poll


async def test_two_pollers_publish_each_event_once_and_miss_none(
    control: ControlClient, worker: Worker, sim: SimServer, clean_database: str
) -> None:
    accounts = [sim.create_account(customers=2).id for _ in range(3)]
    connections = []
    for i, account in enumerate(accounts):
        sim.set_rate_limit(account, 1000)
        connections.append((await connect(control, sim, account, f"T{i}"))[2])
    # A new connection's first cycle also reads what the events API still holds (its last 30 days).
    window_start = int(time.time()) - EVENTS_WINDOW_S + WINDOW_MARGIN_S
    expected: set[str] = {
        e["id"] for account in accounts for e in sim.state.accounts[account].store(False).all("event")
        if e["type"] in EVENT_TYPES and e["created"] >= window_start
    }
    pools = [await asyncpg.create_pool(clean_database, min_size=1, max_size=3) for _ in range(2)]
    pollers = [StripeEventsPoller(SourceDeps(PostgresConnectionStore(p, control.keyring), PostgresCheckpoints(p),
                                             control.readers,
                                             RawEventPublisher(worker.publisher, control.settings.kafka.raw_topic)),
                                  PollerSettings(page_limit=10), control.settings.importer) for p in pools]
    try:
        for _ in range(3):  # activity between cycles; both pollers race for every connection each cycle
            for account in accounts:
                expected |= set(pay(sim, account, 4))
            outcomes = await asyncio.gather(*(p.run_once(force=True) for p in pollers))
            mine = [o for batch in outcomes for o in batch if o.connection_id in connections]
            states = Counter(o.state for o in mine)
            assert states["polled"] >= len(accounts) and states["failed"] == 0, mine
    finally:
        for p in pools:
            await p.close()
    envelopes = await published_envelopes(control.settings, len(expected))
    counts = Counter(e.event_id for e in envelopes)
    assert set(counts) == expected  # none missed
    assert set(counts.values()) == {1}  # none twice, though both pollers re-read the overlap


async def test_a_cursor_older_than_30_days_starts_a_catch_up_import(
    control: ControlClient, worker: Worker, sim: SimServer, pg: asyncpg.Connection
) -> None:
    account = sim.create_account(customers=5).id
    sim.set_rate_limit(account, 1000)
    tenant, token, connection_id, _ = await connect(control, sim, account)
    assert (await worker.importer.run_connection(connection_id)).state == "done"
    forty_days_ago = int(time.time()) - 40 * 86400
    assert await worker.checkpoints.claim_poll(connection_id, "earlier poller", 5.0)
    await worker.checkpoints.save_poll_cursor(connection_id, PollCursor(forty_days_ago, frozenset()), "earlier poller")
    await worker.checkpoints.release_poll(connection_id, "earlier poller")
    outcome = await worker.poller.poll_connection(connection_id)
    assert outcome.state == "polled"
    _, view = await control.call("GET", f"/api/tenants/{tenant}/connections/test", token)
    assert view["catchup_needed_since"] == datetime.fromtimestamp(forty_days_ago, tz=timezone.utc).isoformat()
    assert view["import"]["reason"] == "catchup" and view["import"]["state"] == "running"
    cursor = await worker.checkpoints.poll_cursor(connection_id)
    assert cursor is not None and cursor.last_event_created > time.time() - 30 * 86400
    assert (await worker.importer.run_connection(connection_id)).state == "done"
    _, view = await control.call("GET", f"/api/tenants/{tenant}/connections/test", token)
    assert view["catchup_needed_since"] is None and view["import"]["state"] == "done"


async def test_a_key_out_for_weeks_during_its_connect_import_gets_a_catch_up_import_over_the_gap(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    """The connect import (window ending at the connect, 40 days ago) was paused when the key was revoked, and
    resumed 40 days later with a new key. That run lists nothing after its window's end, and polling resumes 30
    days back: kept as the only run, the 10 days between were never imported, and finishing it cleared the
    catch-up flag."""
    account = sim.create_account(customers=5).id
    sim.set_rate_limit(account, 1000)
    tenant, token, connection_id, _ = await connect(control, sim, account)
    forty_days_ago = int(time.time()) - 40 * 86400
    checkpoints = worker.checkpoints
    await checkpoints.start_import(connection_id, [r.name for r in IMPORTED], forty_days_ago - 365 * 86400,
                                   forty_days_ago, "connect")
    await control.pool.execute("UPDATE stripe_connections SET status = 'key_invalid' WHERE connection_id = $1",
                               connection_id)
    assert await checkpoints.pause_import(connection_id, "key_invalid")
    await control.pool.execute("UPDATE stripe_connections SET status = 'connected' WHERE connection_id = $1",
                               connection_id)
    await checkpoints.resume_import(connection_id)  # what a new key does
    assert await checkpoints.claim_poll(connection_id, "earlier poller", 5.0)
    await checkpoints.save_poll_cursor(connection_id, PollCursor(forty_days_ago, frozenset()), "earlier poller")
    await checkpoints.release_poll(connection_id, "earlier poller")

    assert (await worker.poller.poll_connection(connection_id)).state == "polled"
    _, view = await control.call("GET", f"/api/tenants/{tenant}/connections/test", token)
    assert view["import"]["reason"] == "catchup" and view["import"]["state"] == "running"
    _, window_end = run_window(await checkpoints.import_checkpoints(connection_id))
    assert window_end > time.time() - 30 * 86400  # from where polling resumes, or later
    assert (await worker.importer.run_connection(connection_id)).state == "done"
    _, view = await control.call("GET", f"/api/tenants/{tenant}/connections/test", token)
    assert view["catchup_needed_since"] is None and view["import"]["state"] == "done"


async def test_a_401_while_polling_marks_the_key_invalid_and_stops(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    account = sim.create_account(customers=2).id
    sim.set_rate_limit(account, 1000)
    tenant, token, connection_id, key = await connect(control, sim, account)
    sim.revoke_key(key)
    outcome = await worker.poller.poll_connection(connection_id)
    assert (outcome.state, outcome.detail) == ("stopped", "key_invalid")
    _, view = await control.call("GET", f"/api/tenants/{tenant}/connections/test", token)
    assert view["status"] == "key_invalid"
    assert view["status_reason"] == "the key was rotated or revoked: create a fresh restricted key and re-enter it"
    assert view["last_error"]["code"] == "key_invalid" and view["last_error"]["docs"].endswith("#key_invalid")
    requests = len(sim.state.request_log[account])
    assert (await worker.poller.poll_connection(connection_id)).state == "stopped"
    assert len(sim.state.request_log[account]) == requests  # stops hammering Stripe


async def test_an_event_stripe_lists_malformed_is_left_out_counted_in_health_and_polling_goes_on(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    """An event the poller cannot read (here `livemode` is not a boolean, and its object id is not a string)
    is counted in the tenant's health once, however often it is listed; the events around it are published and
    the cursor moves on; nothing of it reaches the topic or the API."""
    account = sim.create_account(customers=3).id
    sim.set_rate_limit(account, 1000)
    tenant, token, connection_id, _ = await connect(control, sim, account)
    assert (await worker.poller.poll_connection(connection_id)).state == "polled"
    new = pay(sim, account, 3)
    events = {e["id"]: e for e in sim.book(account).store.all("event")}
    bad = events[new[len(new) // 2]]
    bad["livemode"] = "4242424242424242"
    readable = set(new) - {bad["id"]}

    first = await worker.poller.poll_connection(connection_id)
    assert first.state == "polled", first
    envelopes = await published_envelopes(control.settings)
    assert readable <= {e.event_id for e in envelopes} and bad["id"] not in {e.event_id for e in envelopes}
    assert not any("4242424242424242" in e.payload for e in envelopes)
    again = await worker.poller.poll_connection(connection_id)  # the overlap lists it again
    assert again.state == "polled", again
    status, view = await control.call("GET", f"/api/tenants/{tenant}", token)
    assert status == 200 and "4242424242424242" not in str(view)
    unreadable = view["unreadable_events"]
    assert unreadable["count"] == 1 and unreadable["by_reason"] == {"not_an_event": 1}
    assert unreadable["latest"][0]["event_id"] == bad["id"] and "livemode" in unreadable["latest"][0]["message"]


async def test_an_unexpected_error_in_one_tenants_poll_leaves_the_others_polling(
    control: ControlClient, worker: Worker, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll that fails (here a bug met in one tenant's data) leaves the others polling, and is tried again
    after a rest that doubles from a second, not at every tick: by the poller's own clock, held still here."""
    broken, fine = sim.create_account(customers=2).id, sim.create_account(customers=2).id
    broken_connection = (await connect(control, sim, broken, "Broken"))[2]
    fine_connection = (await connect(control, sim, fine, "Fine"))[2]
    poll, list_connections = worker.poller.poll_connection, worker.store.connections_with_keys
    attempts: list[str] = []
    ticks = 0
    now = [time.time()]

    async def failing_for_one(connection_id: str, force: bool = True):  # type: ignore[no-untyped-def]
        attempts.append(connection_id)
        if connection_id == broken_connection:
            raise ValueError("invalid literal for int() with base 10: '4242424242424242'")
        return await poll(connection_id, force)

    rekeyed = False

    async def counting_ticks() -> list[Connection]:
        nonlocal ticks
        listed = await list_connections()
        ticks += 1
        return [dataclasses.replace(c, key_version=c.key_version + 1)
                if rekeyed and c.connection_id == broken_connection else c for c in listed]

    async def ticks_gone_by(count: int) -> None:
        until = ticks + count

        async def gone_by() -> bool:
            return ticks >= until
        await wait_for(gone_by, 20, f"{count} ticks of the poller")

    async def tried(times: int) -> bool:
        return attempts.count(broken_connection) == times

    monkeypatch.setattr(worker.poller, "poll_connection", failing_for_one)
    monkeypatch.setattr(worker.store, "connections_with_keys", counting_ticks)
    monkeypatch.setattr(worker.poller, "_clock", lambda: now[0])
    stop = asyncio.Event()
    task = asyncio.create_task(worker.poller.run_forever(stop, tick_s=0.05))
    try:
        await wait_for(lambda: _polled(worker, fine_connection), 20, "the other connection's poll")
        assert broken_connection in attempts and not task.done()  # the worker's poller is still running
        await ticks_gone_by(10)
        assert attempts.count(broken_connection) == 1, "tried again at every tick"
        now[0] += 1.0  # its first rest, a second, is over
        await wait_for(lambda: tried(2), 20, "the second try after a second")
        now[0] += 1.5
        await ticks_gone_by(10)
        assert attempts.count(broken_connection) == 2, "the rest did not double"
        now[0] += 0.5
        await wait_for(lambda: tried(3), 20, "the third try after two seconds")
        now[0] -= 3600  # the clock set back an hour: the rest (four seconds) must not last an hour
        await wait_for(lambda: tried(4), 20, "a try once the clock was set back")
        await ticks_gone_by(10)
        assert attempts.count(broken_connection) == 4, "not resting after that try"
        rekeyed = True  # a new key was stored: it is tried at once, not after the rest
        await wait_for(lambda: tried(5), 20, "a try with the new key")
    finally:
        stop.set()
        await task


def test_a_failing_connection_rests_doubling_from_a_second_up_to_its_cadence() -> None:
    settings = PollerSettings(interval_s=60, unverified_interval_s=15)
    verified = dataclasses.replace(CONNECTION, webhook_verified_at=EPOCH)
    unverified = dataclasses.replace(CONNECTION, webhook_verified_at=None)
    assert [rest_after_failures(n, verified, settings) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert [rest_after_failures(n, unverified, settings) for n in (1, 4, 5, 1000)] == [1, 8, 15, 15]
