"""The 12-month import against the simulator: complete, resumable after SIGKILL, through faults, paused by a 401."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from click.testing import CliRunner, Result

from ingestor.sources import page_pool
from ingestor.sources.checkpoints import PostgresCheckpoints, run_window
from ingestor.sources.deps import SourceDeps
from ingestor.sources.fair_share import FairShares
from ingestor.sources.importer import ImportOutcome, StripeImporter
from ingestor.sources.key_session import StopReading
from ingestor.sources.listed_pages import ListedPage
from ingestor.sources.page_pool import PagePool
from ingestor.sources.reconcile import Reconciler
from ingestor.sources.slices import ImportSlice
from ingestor.stripe_api.client import StripeReader
from plumbing.postgres import DatabaseUnavailableError
from schemas import Envelope
from service.cli import main as cli
from service.worker import Worker, import_until_done, open_worker, render_reconcile
from stripe_sim import SimServer
from tests.helpers import LoopLateness, month_of, wait_for
from tests.ingestor.conftest import ControlClient, connect, published_envelopes, sim_objects
from tests.projections.support import daily_figures, mrr_figures, project_until_idle

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).parents[2] / "ingestor" / "connections" / "migrations"


def by_type(envelopes: list) -> dict[str, set[str]]:  # type: ignore[type-arg]
    out: dict[str, set[str]] = {}
    for e in envelopes:
        out.setdefault(e.object_type, set()).add(e.object_id)
    return out


async def published_each_object_once(control: ControlClient, sim: SimServer, account: str,
                                     *others: str) -> tuple[dict[str, set[str]], list[Envelope]]:
    """Asserts every object of the account (and the `others`) is on the test's topic, and only once (the projection
    would dedupe a second copy, but the import promises each page once); returns the objects by type and the
    envelopes."""
    expected = sim_objects(sim, account)
    for other in others:
        for kind, ids in sim_objects(sim, other).items():
            expected[kind] = expected.get(kind, set()) | ids
    total = sum(len(v) for v in expected.values())
    envelopes = await published_envelopes(control.settings, total)
    assert by_type(envelopes) == {kind: ids for kind, ids in expected.items() if ids}  # none of a kind: no key
    assert len(envelopes) == total
    return expected, envelopes


async def test_a_12_month_account_imports_completely_as_snapshots(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    account = sim.create_account(customers=30).id
    sim.set_rate_limit(account, 1000)
    tenant, token, connection_id, _ = await connect(control, sim, account)
    outcome, = await worker.importer.run_pending(among={connection_id})
    assert outcome.state == "done", outcome
    expected, envelopes = await published_each_object_once(control, sim, account)

    status, progress = await control.call("GET", f"/api/tenants/{tenant}/connections/test/import", token)
    assert status == 200 and progress["state"] == "done" and progress["covered"] == 1.0
    assert {r: p["objects_published"] for r, p in progress["resources"].items()} == {
        "customers": len(expected["customer"]), "charges": len(expected["charge"]),
        "subscriptions": len(expected["subscription"]), "invoices": len(expected["invoice"]),
        "payment_intents": len(expected["payment_intent"])}

    sub = next(e for e in envelopes if e.object_type == "subscription")
    payload = orjson.loads(sub.payload)
    assert sub.event_type == "subscription.snapshot" and sub.source.value == "import"
    assert sub.event_id.startswith("snap_") and payload["id"] == sub.event_id
    assert payload["type"] == "subscription.snapshot" and payload["object"] == "event"
    assert payload["data"]["object"]["id"] == sub.object_id and payload["api_version"] == sub.api_version
    assert payload["created"] == int(sub.event_time.timestamp())

    # An on-demand re-import of unchanged objects gives the same event ids (consumers dedupe).
    status, _ = await control.call("POST", f"/api/tenants/{tenant}/connections/test/import", token, {})
    assert status == 202
    assert (await worker.importer.run_connection(connection_id)).state == "done"
    again = await published_envelopes(control.settings, 2 * len(envelopes))
    assert Counter(e.event_id for e in again) == Counter({e.event_id: 2 for e in envelopes})


async def todays_mrr_is_stripes(control: ControlClient, sim: SimServer, account: str, tenant: str) -> None:
    """Projects what was published and asserts this month's MRR, per currency, is the simulator's ground truth."""
    await project_until_idle(control.settings, control.pool)
    truth = sim.ground_truth(account)
    this_month = month_of(truth["as_of"])
    async with control.pool.acquire() as conn:
        mrr = await mrr_figures(conn, tenant)
    assert mrr[this_month] == {currency: mrr for currency, mrr in truth["mrr"][this_month].items() if mrr > 0}


async def test_subscriptions_older_than_the_window_are_imported_and_count_in_todays_mrr(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    """An account with two years of history, imported over the last twelve months. Subscriptions were listed within
    the window like the rest: every one created before it and live today was left out of MRR, silently. They are
    listed whatever their age now; the other resources stay within the window."""
    account = sim.create_account(customers=40, months=24).id
    sim.set_rate_limit(account, 1000)
    tenant, _, connection_id, _ = await connect(control, sim, account)
    outcome, = await worker.importer.run_pending(among={connection_id})
    assert outcome.state == "done", outcome
    start, end = run_window(await control.checkpoints.import_checkpoints(connection_id))
    assert end - start < 370 * 86400  # the charges, invoices... of the last twelve months only

    store = sim.state.accounts[account].store(False)
    old_and_live = [s for s in store.all("subscription")
                    if s["created"] < start and s["status"] in ("active", "past_due")]
    assert len(old_and_live) >= 3  # what this test is about is in its history
    served = sim_objects(sim, account)
    expected = {kind: ids if kind == "subscription" else
                {o["id"] for o in store.all(kind) if o["id"] in ids and start <= o["created"] <= end}
                for kind, ids in served.items()}
    envelopes = await published_envelopes(control.settings, sum(len(ids) for ids in expected.values()))
    assert by_type(envelopes) == expected

    await todays_mrr_is_stripes(control, sim, account, tenant)


async def test_a_connection_imported_before_subscriptions_were_read_whole_gets_its_older_ones(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    """Upgrading: a connection imported before migration 0084 has its subscriptions within the window only, and
    today's MRR leaves out every older one still live. Migration 0085 lists them again, whatever their age."""
    account = sim.create_account(customers=40, months=24).id
    sim.set_rate_limit(account, 1000)
    tenant, _, connection_id, _ = await connect(control, sim, account)
    await control.pool.execute("UPDATE import_runs SET listed_from = NULL WHERE connection_id = $1", connection_id)
    outcome, = await worker.importer.run_pending(among={connection_id})  # as before 0084
    assert outcome.state == "done", outcome
    start, _ = run_window(await control.checkpoints.import_checkpoints(connection_id))
    every = {s["id"] for s in sim.state.accounts[account].store(False).all("subscription")}
    older = {s["id"] for s in sim.state.accounts[account].store(False).all("subscription") if s["created"] < start}
    assert older and not older & by_type(await published_envelopes(control.settings, 1))["subscription"]

    await control.pool.execute((MIGRATIONS / "0085_older_subscriptions_backfill.sql").read_text())
    outcome, = await worker.importer.run_pending(among={connection_id})
    assert outcome.state == "done", outcome
    envelopes = await published_envelopes(control.settings, sum(len(ids) for ids in sim_objects(sim, account).values()))
    assert by_type(envelopes)["subscription"] == every
    await todays_mrr_is_stripes(control, sim, account, tenant)


async def test_a_new_import_sends_in_stripes_first_round_trip_what_the_budget_serves(
    control: ControlClient, sim: SimServer
) -> None:
    """No slice of a resource is split before its first page is back (its density is unknown until then). Started
    as two slices each, five resources sent ten requests in Stripe's first round trip, where the live budget serves
    27 at 300 ms: the import's long pole (charges, bound by its endpoint's 22/s) lost most of a round trip. A process
    that has timed Stripe's pages (on any account) starts a new import's resources as what the budget serves in one
    round trip; one that has not, as `initial_slices`."""
    stripe_settings = control.settings.stripe.model_copy(update={"test_requests_per_second": 90.0,
                                                                  "test_limit_per_second": 100.0})
    settings = control.settings.model_copy(update={"stripe": stripe_settings})  # the live budget, on test keys
    first, second = sim.create_account(customers=5).id, sim.create_account(customers=300).id
    for account in (first, second):
        sim.set_rate_limit(account, 1000)
    _, _, first_id, _ = await connect(control, sim, first, "First")
    _, _, second_id, _ = await connect(control, sim, second, "Second")
    resources = len(await control.checkpoints.import_checkpoints(first_id))
    sim.set_faults({"kind": "latency", "latency_ms": 300})

    checked = {account: len(sim.request_arrivals(account)) for account in (first, second)}  # the keys' checks

    def first_round_trip(account: str) -> int:
        """The import's requests that reached Stripe before its first page could have come back: within 0.25 s of
        the first, and of what the loop (the worker's and the simulator's) was held up meanwhile (8 of 11 once in a
        whole suite's run, 3 seen late by the simulator)."""
        arrivals = sim.request_arrivals(account)[checked[account]:]
        return sum(1 for at in arrivals if at - arrivals[0] < 0.25 + lateness.held_up_between(arrivals[0], at))

    try:
        async with open_worker(settings, control.keyring) as worker, LoopLateness(0.01) as lateness:
            assert (await import_until_done(worker, first_id, 0.1)).state == "done"
            # Nothing timed yet: two slices each (`initial_slices`), and subscriptions' time before the window.
            assert first_round_trip(first) == control.settings.importer.initial_slices * resources + 1
            assert (await import_until_done(worker, second_id, 0.1)).state == "done"
    finally:
        sim.set_faults()
    assert first_round_trip(second) >= 4 * resources  # eight each (22/s × 0.3 s + 1), as the budget lets them go
    await published_each_object_once(control, sim, second, first)


async def test_a_tenant_whose_pages_are_read_alone_starts_as_the_settings_slices(worker: Worker) -> None:
    """Its pages go one at a time (`most` = 1): eight blind slices per resource would be paged one after another,
    most of them empty, a round trip each."""
    importer = worker.importer
    importer._stripe_s = 0.3  # Stripe timed at 300 ms on other accounts
    assert importer._initial_slices(True, 5, reads_alone=False) == 8  # 22/s × 0.3 s + 1
    assert importer._initial_slices(True, 5, reads_alone=True) == importer._settings.initial_slices


async def test_a_cursor_deleted_at_stripe_between_passes_is_read_past_and_the_import_finishes(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    """Stripe refuses a list whose `starting_after` names an object deleted since (400 `resource_missing`, `param:
    starting_after`; a draft invoice, a plan). The import sent its stored cursor again every pass, and never finished.
    It now reads the cursor's second again from its top (what it publishes twice is deduplicated downstream)."""
    account = sim.create_account(customers=300).id
    sim.set_rate_limit(account, 1000)
    sim.set_faults({"kind": "latency", "latency_ms": 50})
    _, _, connection_id, _ = await connect(control, sim, account)
    stop = asyncio.Event()
    first_pass = asyncio.create_task(worker.importer.run_pending(stop, among={connection_id}))
    await wait_for(lambda: _cursor_mid_slice(control, connection_id, "invoices"), 60, "an invoices slice part-paged")
    stop.set()
    await first_pass
    cursor = await _cursor_mid_slice(control, connection_id, "invoices")
    assert cursor is not None  # the pass ended with an invoices slice part-paged
    sim.state.accounts[account].store(False).remove("invoice", cursor)  # deleted at Stripe meanwhile
    sim.set_faults()

    outcome = await asyncio.wait_for(import_until_done(worker, connection_id, 0.1), 60)
    assert outcome.state == "done", outcome
    expected = sim_objects(sim, account)
    expected["invoice"].add(cursor)  # published before it was deleted
    envelopes = await published_envelopes(control.settings, sum(len(ids) for ids in expected.values()))
    assert by_type(envelopes) == expected  # nothing below the cursor left out
    health = await control.store.get_connection(connection_id)
    assert health is not None and health.last_error_code == "stripe_cursor_gone"  # shown, not silent


async def _cursor_mid_slice(control: ControlClient, connection_id: str, resource: str) -> str | None:
    """The cursor of one of the resource's slices that has paged some of its range and not all."""
    cursor: str | None = await control.pool.fetchval(
        "SELECT last_object_id FROM import_slices WHERE connection_id = $1 AND resource = $2 AND NOT done "
        "AND last_object_id IS NOT NULL ORDER BY slice_id LIMIT 1", connection_id, resource)
    return cursor


async def test_a_429_storm_and_5xx_bursts_lose_nothing(control: ControlClient, worker: Worker, sim: SimServer) -> None:
    account = sim.create_account(customers=25).id
    sim.set_rate_limit(account, 1000)
    _, _, connection_id, _ = await connect(control, sim, account)
    sim.set_faults({"kind": "status", "status": 429, "rate": 0.35, "count": 25},
                   {"kind": "status", "status": 503, "rate": 0.25, "count": 15},
                   {"kind": "status", "status": 500, "rate": 0.2, "count": 8, "should_retry": True})
    try:
        outcome = await import_until_done(worker, connection_id, retry_pause_s=0.1)
    finally:
        sim.set_faults()
    assert outcome.state == "done"
    expected = sim_objects(sim, account)
    envelopes = await published_envelopes(control.settings, sum(len(v) for v in expected.values()))
    assert by_type(envelopes) == expected


async def test_a_bulk_migrations_burst_is_split_into_slices_paged_at_once_and_published_once(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    """A bulk migration creates thousands of customers (and their subscriptions) within a minute. Before, no slice
    was split below 60 s, and a slice's density was its average over the months it had paged (a few objects a day),
    so a burst was paged one page after another: 0.41 of what the budgets allow at 300 ms for 3,000 customers and
    10,000 migrated. Now the burst's slice is split again and again (its last page's density says objects go on),
    down to seconds, and the halves' first pages go at once.

    Customers alone: with the migrated customers' charges and invoices (six months of renewals, each a burst of its
    own) the planner rightly splits those first, the import's long pole, and whether the customers' burst is split
    at all then depends on which pages come back first (once in CI: two splits in it, all of the rest paged by one
    slice)."""
    info = sim.create_account(customers=20, migrated_customers=1500, migration_s=20)
    account = info.id
    store = sim.state.accounts[account].test
    for kind in ("charge", "subscription", "invoice", "payment_intent"):
        for obj_id in list(store.objects.get(kind, {})):
            store.remove(kind, obj_id)
    sim.set_rate_limit(account, 1000)
    _, _, connection_id, _ = await connect(control, sim, account)
    created = sorted(c["created"] for c in sim.state.accounts[account].test.objects["customer"].values())
    middle = created[len(created) // 2]  # one of the 1,500 migrated (the 20 others are spread over the year)
    burst = [t for t in created if abs(t - middle) < 20]
    assert len(burst) >= 1500
    burst_start, burst_end = min(burst), max(burst)
    # Stripe's slower lists: at 300 ms a loaded machine's own time per page (the simulator shares the loop) weighed as
    # much as Stripe's, and the burst was split into two or three slices (CI once; here 4 runs in 8 under three busy
    # loops; 4 or 5 at 800 ms, 6 to 8 on a quiet machine). Before bursts were split, one slice paged it all.
    sim.set_faults({"kind": "latency", "latency_ms": 800})
    try:
        outcome = await worker.importer.run_connection(connection_id)
    finally:
        sim.set_faults()
    assert outcome.state == "done", outcome
    expected, _ = await published_each_object_once(control, sim, account)
    slices = await control.pool.fetch(
        "SELECT range_start, range_end, objects_published FROM import_slices WHERE connection_id = $1 "
        "AND resource = 'customers'", connection_id)
    in_burst = [s for s in slices if s["objects_published"] and s["range_start"] <= burst_end
                and s["range_end"] >= burst_start]
    assert len(in_burst) >= 3, sorted(tuple(s) for s in slices)
    assert sum(s["objects_published"] for s in slices) == len(expected["customer"])  # a deleted one is not listed
    assert len({s["range_start"] for s in in_burst if burst_start < s["range_start"] <= burst_end}) >= 2  # split in it


async def test_leases_running_out_under_slices_still_paged_publish_nothing_twice(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    """Renewals held up (Postgres slow, locks) let the leases of slices still being paged run out: the process's
    other workers looking for a slice must not take them again (both would page them). Seen in CI as 19 objects
    published twice, while renewals of several imports in one worker deadlocked one another."""
    account = sim.create_account(customers=60).id
    sim.set_rate_limit(account, 1000)
    _, _, connection_id, _ = await connect(control, sim, account)
    sim.set_faults({"kind": "latency", "latency_ms": 150})
    task = asyncio.create_task(worker.importer.run_connection(connection_id))
    lapses = 0
    while not task.done():  # the fault: every claim runs out, again and again, while the pass pages
        await control.pool.execute("UPDATE import_slices SET claimed_until = now() - interval '1 second' "
                                   "WHERE connection_id = $1 AND claimed_by IS NOT NULL AND NOT done", connection_id)
        lapses += 1
        await asyncio.wait([task], timeout=0.02)
    sim.set_faults()
    assert (await task).state == "done" and lapses > 10
    await published_each_object_once(control, sim, account)


@pytest.mark.parametrize("fault", ["taken", "failed", "replaced"])
async def test_a_page_published_and_not_saved_is_said_and_counted(
    control: ControlClient, worker: Worker, sim: SimServer, monkeypatch: pytest.MonkeyPatch, log_stream: Any,
    fault: str
) -> None:
    """A page published and then not saved is published again by the slice's next holder: a lease that lapsed while
    it was out (the process held up past it) let another process take the slice, or the pass failed between the
    publish and the save. The process says so and counts its objects (`objects_published_unsaved`), so a sharing
    test (or an operator) tells those apart from a bug that pages twice. A page of a run a newer one replaced is
    neither (that run lists everything again)."""
    account = sim.create_account(customers=60).id
    sim.set_rate_limit(account, 1000)
    _, _, connection_id, _ = await connect(control, sim, account)
    real_save = PostgresCheckpoints.save_slice_page
    hit: list[int] = []  # objects of the page the fault hit

    async def fault_while_published(self: PostgresCheckpoints, piece: ImportSlice, published: int,
                                    *args: Any, **kwargs: Any) -> bool:
        if not published or hit:
            return await real_save(self, piece, published, *args, **kwargs)
        hit.append(published)  # before any await: the pass's other slices save meanwhile
        if fault == "failed":
            raise DatabaseUnavailableError("Postgres unavailable: ConnectionDoesNotExistError")
        if fault == "taken":
            await control.pool.execute(
                "UPDATE import_slices SET claimed_by = 'another-process', claimed_until = now() + interval '1 hour' "
                "WHERE connection_id = $1 AND resource = $2 AND run_id = $3 AND slice_id = $4",
                piece.connection_id, piece.resource, piece.run_id, piece.slice_id)
        else:  # an import on demand, started meanwhile
            window = run_window(await control.checkpoints.import_checkpoints(connection_id))
            await control.checkpoints.start_import(connection_id, [piece.resource], *window, "on_demand")
        return await real_save(self, piece, published, *args, **kwargs)

    monkeypatch.setattr(PostgresCheckpoints, "save_slice_page", fault_while_published)
    before = worker.importer.objects_published_unsaved
    if fault == "failed":
        with pytest.raises(DatabaseUnavailableError):  # the pass fails (the worker logs it and tries again later)
            await worker.importer.run_connection(connection_id)
    else:
        outcome = await worker.importer.run_connection(connection_id)
        assert outcome.state == "more", outcome  # the slice taken is the other process's; the new run goes on
    said = [orjson.loads(line) for line in log_stream.getvalue().splitlines() if "published and not saved" in line]
    if fault == "replaced":
        assert worker.importer.objects_published_unsaved == before and not said, said
        return
    assert worker.importer.objects_published_unsaved - before == hit[0] > 0
    assert [(line["connection_id"], line["objects"]) for line in said] == [(connection_id, hit[0])]
    # The other process let the slice go unpaged (it died): this one lists the page again.
    await control.pool.execute("UPDATE import_slices SET claimed_by = NULL, claimed_until = NULL "
                               "WHERE claimed_by = 'another-process'")
    assert (await import_until_done(worker, connection_id, 0.1)).state == "done"
    expected = sim_objects(sim, account)
    envelopes = await published_envelopes(control.settings, sum(len(ids) for ids in expected.values()) + hit[0])
    assert by_type(envelopes) == {kind: ids for kind, ids in expected.items() if ids}
    twice = [key for key, count in Counter((e.object_type, e.object_id) for e in envelopes).items() if count > 1]
    assert len(twice) == hit[0]  # that page's objects, and no other


async def test_a_split_held_up_by_a_slow_postgres_publishes_nothing_twice(
    control: ControlClient, worker: Worker, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of a slice that comes back while the slice is being split waits for the split before it keeps its
    objects: kept against the old start, those below the split point were published by the slice and listed again
    by the one split off."""
    account = sim.create_account(customers=400).id
    sim.set_rate_limit(account, 1000)
    _, _, connection_id, _ = await connect(control, sim, account)
    real_split = PostgresCheckpoints.split_slice
    splits = 0

    async def slow_split(self: PostgresCheckpoints, *args: Any, **kwargs: Any) -> Any:
        nonlocal splits
        splits += 1
        await asyncio.sleep(0.3)  # the fault: Postgres slow to split; the slice's page in flight comes back meanwhile
        return await real_split(self, *args, **kwargs)

    monkeypatch.setattr(PostgresCheckpoints, "split_slice", slow_split)
    sim.set_faults({"kind": "latency", "latency_ms": 400})  # slices are split while their pages are out
    outcome = await worker.importer.run_connection(connection_id)
    sim.set_faults()
    assert outcome.state == "done" and splits >= 4, (outcome, splits)
    await published_each_object_once(control, sim, account)


async def test_a_split_whose_answer_is_lost_leaves_the_slice_to_the_database_and_publishes_nothing_twice(
    control: ControlClient, worker: Worker, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A split committed, but its connection broke on the way back: the process does not know the slice's new start.
    Its worker lets it go unsaved (the pass ends as failed, to be tried again), and the next pass reads the slices
    from the database: the slice with its new start, and the one split off."""
    account = sim.create_account(customers=400).id
    sim.set_rate_limit(account, 1000)
    _, _, connection_id, _ = await connect(control, sim, account)
    real_split = PostgresCheckpoints.split_slice
    lost = 0

    async def split_then_lose_the_answer(self: PostgresCheckpoints, piece: ImportSlice, *args: Any,
                                         **kwargs: Any) -> Any:
        nonlocal lost
        if lost:
            return await real_split(self, piece, *args, **kwargs)
        lost += 1
        await real_split(self, dataclasses.replace(piece), *args, **kwargs)  # committed, but not heard of here
        raise DatabaseUnavailableError("Postgres unavailable: ConnectionDoesNotExistError")

    monkeypatch.setattr(PostgresCheckpoints, "split_slice", split_then_lose_the_answer)
    sim.set_faults({"kind": "latency", "latency_ms": 400})  # slices are split while their pages are out
    with pytest.raises(DatabaseUnavailableError):
        await worker.importer.run_connection(connection_id)
    sim.set_faults()
    assert lost == 1
    assert (await import_until_done(worker, connection_id)).state == "done"
    await published_each_object_once(control, sim, account)


async def revoked_mid_pass(control: ControlClient, worker: Worker, sim: SimServer, connection_id: str,
                           key: str) -> ImportOutcome:
    """A pass over the connection's import whose key is revoked once Stripe served its first few pages (the
    simulator expires it then: a revocation timed by the test's polling raced a fast import to its end)."""
    sim.revoke_key_after(key, 6)
    return await asyncio.wait_for(worker.importer.run_connection(connection_id), 30)


async def test_a_revoked_key_pauses_the_import_and_a_new_key_resumes_it(
    control: ControlClient, worker: Worker, sim: SimServer, pg: asyncpg.Connection
) -> None:
    account = sim.create_account(customers=60).id
    sim.set_rate_limit(account, 1000)
    tenant, token, connection_id, key = await connect(control, sim, account)
    outcome = await revoked_mid_pass(control, worker, sim, connection_id, key)
    assert (outcome.state, outcome.detail) == ("paused", "key_invalid")
    # Within one request: no more than the requests already in flight (one per slice paged at once) saw the 401.
    unauthorized = [r for r in sim.state.request_log[account] if r[2] == 401]
    assert 1 <= len(unauthorized) <= control.settings.importer.slices_in_flight
    _, view = await control.call("GET", f"/api/tenants/{tenant}/connections/test", token)
    assert view["status"] == "key_invalid" and view["docs"] == "docs/operating.md#key_invalid"
    assert "rotated or revoked" in view["status_reason"] and view["recovery_steps"]
    assert view["import"]["state"] == "paused" and view["import"]["paused_reason"] == "key_invalid"
    slices = await control.checkpoints.import_slices(connection_id)
    assert any(s.last_object_id for s in slices)
    # Stopped: neither the importer nor the poller asks Stripe again.
    before = len(sim.state.request_log[account])
    assert (await worker.importer.run_connection(connection_id)).state == "paused"
    assert (await worker.poller.poll_connection(connection_id)).state == "stopped"
    assert len(sim.state.request_log[account]) == before

    status, body = await control.call("PUT", f"/api/tenants/{tenant}/connections/test/key", token,
                                      {"key": sim.create_restricted_key(account)})
    assert status == 200 and body["connection"]["status"] == "polling_only"
    assert await control.checkpoints.import_slices(connection_id) == slices  # every slice's place intact
    assert all(c.paused_reason is None for c in await control.checkpoints.import_checkpoints(connection_id))
    assert (await worker.importer.run_connection(connection_id)).state == "done"
    expected = sim_objects(sim, account)
    envelopes = await published_envelopes(control.settings, sum(len(v) for v in expected.values()))
    assert by_type(envelopes) == expected  # nothing lost


async def test_a_new_key_stored_while_the_pass_that_met_the_401_ends_is_not_undone_by_its_pause(
    control: ControlClient, worker: Worker, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass that met the 401 ends its pages in flight before it pauses the import; a new key stored meanwhile
    (the person saw `key_invalid` at once) resumed the import, and the pass's pause must not undo that: the
    import goes on with the new key and brings every object. Before, it stayed paused for good."""
    account = sim.create_account(customers=60).id
    sim.set_rate_limit(account, 1000)
    tenant, token, connection_id, key = await connect(control, sim, account)
    outcome_of = worker.importer._outcome

    async def new_key_first(connection_id, results, *rest):  # type: ignore[no-untyped-def]
        assert "key_invalid" in {r.reason for r in results if isinstance(r, StopReading)}  # the pass met the 401
        status, body = await control.call("PUT", f"/api/tenants/{tenant}/connections/test/key", token,
                                          {"key": sim.create_restricted_key(account)})
        assert status == 200 and body["connection"]["status"] != "key_invalid"
        return await outcome_of(connection_id, results, *rest)

    monkeypatch.setattr(worker.importer, "_outcome", new_key_first)
    outcome = await revoked_mid_pass(control, worker, sim, connection_id, key)
    assert (outcome.state, outcome.detail) == ("more", "a new key or a green key Test came meanwhile")
    assert all(c.paused_reason is None for c in await control.checkpoints.import_checkpoints(connection_id))
    monkeypatch.setattr(worker.importer, "_outcome", outcome_of)
    assert (await worker.importer.run_connection(connection_id)).state == "done"
    expected = sim_objects(sim, account)
    envelopes = await published_envelopes(control.settings, sum(len(v) for v in expected.values()))
    assert by_type(envelopes) == expected


async def test_a_key_rotated_while_pages_are_in_flight_never_fails_the_import(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    account = sim.create_account(customers=40).id
    sim.set_rate_limit(account, 1000)
    tenant, token, connection_id, old = await connect(control, sim, account)
    sim.set_faults({"kind": "latency", "latency_ms": 40})
    task = asyncio.create_task(worker.importer.run_connection(connection_id))

    async def some_pages_done() -> bool:
        return any(c.objects_published > 0 for c in await control.checkpoints.import_checkpoints(connection_id))

    await wait_for(some_pages_done, 20, "the first pages")
    status, _ = await control.call("PUT", f"/api/tenants/{tenant}/connections/test/key", token,
                                   {"key": sim.create_restricted_key(account)})
    assert status == 200
    sim.revoke_key(old)  # the user deletes the old key in Stripe right after the swap
    outcome = await asyncio.wait_for(task, 30)
    sim.set_faults()
    assert outcome.state == "done"
    _, view = await control.call("GET", f"/api/tenants/{tenant}/connections/test", token)
    assert view["status"] == "polling_only" and view["last_error"] is None


async def _published(control: ControlClient, connection_id: str, at_least: int) -> bool:
    """Whether the connection's import has published `at_least` objects (mid-way, for a kill)."""
    return sum(c.objects_published for c in await control.checkpoints.import_checkpoints(connection_id)) >= at_least


def _worker_env(control: ControlClient, sim: SimServer, **settings: str) -> dict[str, str]:
    """The environment of a worker process (`ingestor worker`) against the test's Kafka, Postgres and simulator."""
    ours = control.settings
    return {**{k: v for k, v in os.environ.items() if not k.startswith("INGESTOR_")},
            "INGESTOR_POSTGRES__DSN": ours.postgres.dsn.get_secret_value(),
            "INGESTOR_KAFKA__BOOTSTRAP_SERVERS": ours.kafka.bootstrap_servers,
            "INGESTOR_KAFKA__RAW_TOPIC": ours.kafka.raw_topic,
            "INGESTOR_VAULT__MASTER_KEYS": control.master_keys,
            "INGESTOR_STRIPE__API_BASE": sim.base_url,
            "INGESTOR_STRIPE__TEST_REQUESTS_PER_SECOND": "20",
            "INGESTOR_LOG__LEVEL": "WARNING", **settings}


async def _short_slice_in_flight(control: ControlClient, connection_id: str) -> bool:
    """A slice of a minute or less (split down within a burst) is being paged."""
    return bool(await control.pool.fetchval(
        "SELECT count(*) FROM import_slices WHERE connection_id = $1 AND claimed_by IS NOT NULL AND NOT done "
        "AND range_end - range_start <= 60 AND objects_published > 0", connection_id))


@pytest.mark.parametrize("history, latency_ms, budget", [
    ({"customers": 300}, 40, 20),  # pages take a while: many slices in flight at the kill
    # A bulk migration's burst: killed once a slice of a minute or less (split within the burst) is mid-way. The
    # account's budget is the live one: at 20/s, five resources' slices fill it, and the burst is not worth splitting.
    ({"customers": 30, "migrated_customers": 1000, "migration_s": 20, "migration_at": 0.7}, 150, 90),
], ids=["smooth", "burst"])
async def test_an_importer_killed_with_slices_in_flight_resumes_and_the_tables_equal_stripe(
    control: ControlClient, sim: SimServer, worker: Worker, history: dict[str, Any], latency_ms: int, budget: int
) -> None:
    account = sim.create_account(**history).id
    sim.set_rate_limit(account, 1000)
    sim.set_faults({"kind": "latency", "latency_ms": latency_ms})
    tenant, _, connection_id, _ = await connect(control, sim, account)
    env = _worker_env(control, sim, INGESTOR_IMPORTER__SLICE_LEASE_S=str(control.settings.importer.slice_lease_s),
                      INGESTOR_STRIPE__TEST_REQUESTS_PER_SECOND=str(budget),
                      INGESTOR_STRIPE__TEST_LIMIT_PER_SECOND=str(max(25, budget + 10)))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "import", connection_id, "--no-progress", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)

    if "migrated_customers" in history:
        await wait_for(lambda: _short_slice_in_flight(control, connection_id), 60, "a slice within the burst")
    else:
        await wait_for(lambda: _published(control, connection_id, 500), 60, "the subprocess to import a few pages")
    child.send_signal(signal.SIGKILL)
    await child.wait()
    in_flight = await control.pool.fetchval(
        "SELECT count(*) FROM import_slices WHERE connection_id = $1 AND claimed_by IS NOT NULL AND NOT done", connection_id)
    assert in_flight >= 2  # the dead process held several slices, each mid-way
    assert not all(c.done for c in await control.checkpoints.import_checkpoints(connection_id))

    assert (await import_until_done(worker, connection_id, 0.1)).state == "done"  # once the dead one's claims lapse
    sim.set_faults()
    pages = {path: n for path, n in sim.request_counts(account).items() if "limit=100" in path}
    refetched = {path: n for path, n in pages.items() if n > 1}
    # At most the one page in flight per slice when the process died was fetched again.
    assert all(n == 2 for n in refetched.values()) and len(refetched) <= in_flight, refetched
    expected = sim_objects(sim, account)
    envelopes = await published_envelopes(control.settings, sum(len(v) for v in expected.values()))
    assert by_type(envelopes) == expected  # nothing lost
    copies = Counter((e.object_type, e.object_id) for e in envelopes)
    assert max(copies.values()) <= 2 and sum(n - 1 for n in copies.values()) <= 100 * len(refetched)

    await project_until_idle(control.settings, control.pool)
    reconciler = Reconciler(control.pool, control.store, control.readers, control.settings.kafka, projected_wait_s=30)
    checkpoints = await control.checkpoints.import_checkpoints(connection_id)
    report = await reconciler.run(connection_id, (checkpoints[0].window_start, checkpoints[0].window_end), "test")
    assert report["matches"], render_reconcile(report)  # every id and every charge's money, nothing doubled
    async with control.pool.acquire() as conn:
        daily, _ = await daily_figures(conn, tenant)
    truth = sim.ground_truth(account)["daily"]
    assert {d: {c: v["gross"] for c, v in per.items()} for d, per in daily.items()} == \
        {d: {c: v["gross"] for c, v in per.items()} for d, per in truth.items()}


async def test_a_worker_stopped_with_sigterm_lets_go_of_its_slices_at_once(
    control: ControlClient, sim: SimServer, worker: Worker
) -> None:
    account = sim.create_account(customers=300).id
    sim.set_rate_limit(account, 1000)
    sim.set_faults({"kind": "latency", "latency_ms": 40})
    _, _, connection_id, _ = await connect(control, sim, account)
    env = _worker_env(control, sim, INGESTOR_IMPORTER__SCAN_INTERVAL_S="0.1",
                      # were the claims kept, nobody could go on for 10 minutes
                      INGESTOR_IMPORTER__SLICE_LEASE_S="600")
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "worker", "--no-poll", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)

    await wait_for(lambda: _published(control, connection_id, 500), 60, "the worker to import a few pages")
    child.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(child.wait(), control.settings.importer.stop_grace_s + 20) == 0
    assert not all(c.done for c in await control.checkpoints.import_checkpoints(connection_id))
    held = await control.pool.fetchval("SELECT count(*) FROM import_slices WHERE connection_id = $1 "
                                       "AND claimed_by IS NOT NULL", connection_id)
    assert held == 0  # every claim given back: another worker goes on now, not when the leases lapse
    outcome = await worker.importer.run_connection(connection_id)
    assert outcome.slices > 0
    assert (await import_until_done(worker, connection_id, 0.1)).state == "done"
    sim.set_faults()
    expected = sim_objects(sim, account)
    envelopes = await published_envelopes(control.settings, sum(len(v) for v in expected.values()))
    assert by_type(envelopes) == expected


async def test_an_object_stripe_lists_malformed_is_left_out_counted_in_health_and_the_import_goes_on(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    """One object the import cannot make a snapshot of (its type is an object holding a card number) is left
    out alone and shown in the tenant's health, once however often it is listed; the rest of its import and
    another tenant's import finish; nothing of the object reaches Kafka or the API."""
    hostile, other = sim.create_account(customers=20).id, sim.create_account(customers=20).id
    for account in (hostile, other):
        sim.set_rate_limit(account, 1000)
    charges = sorted(sim.state.accounts[hostile].store(False).all("charge"), key=lambda c: c["created"])
    bad = charges[len(charges) // 2]
    bad["object"] = {"card": {"number": "4242424242424242", "cvc": "123"}}
    tenant, token, hostile_connection, _ = await connect(control, sim, hostile, name="Hostile")
    _, _, other_connection, _ = await connect(control, sim, other, name="Other")
    outcomes = {o.connection_id: o.state
                for o in await worker.importer.run_pending(among={hostile_connection, other_connection})}
    assert outcomes[hostile_connection] == outcomes[other_connection] == "done"

    expected = {account: sim_objects(sim, account) for account in (hostile, other)}
    expected[hostile]["charge"].discard(bad["id"])
    total = sum(len(ids) for objects in expected.values() for ids in objects.values())
    envelopes = await published_envelopes(control.settings, total)
    assert len(envelopes) == total
    assert not any("4242424242424242" in e.payload or "4242424242424242" in e.object_type for e in envelopes)
    merged: dict[str, set[str]] = {}
    for objects in expected.values():
        for kind, ids in objects.items():
            merged.setdefault(kind, set()).update(ids)
    assert by_type(envelopes) == merged

    async def health() -> dict:  # type: ignore[type-arg]
        status, view = await control.call("GET", f"/api/tenants/{tenant}", token)
        assert status == 200 and "4242424242424242" not in orjson.dumps(view).decode()
        return view["unreadable_events"]  # type: ignore[no-any-return]

    unreadable = await health()
    assert unreadable["count"] == 1 and unreadable["by_reason"] == {"malformed_object": 1}
    assert unreadable["latest"][0]["event_id"] == bad["id"] and "charges" in unreadable["latest"][0]["message"]
    status, _ = await control.call("POST", f"/api/tenants/{tenant}/connections/test/import", token, {})
    assert status == 202
    assert (await worker.importer.run_connection(hostile_connection)).state == "done"
    assert (await health())["count"] == 1  # listed again, counted once


async def test_an_unexpected_error_in_one_tenants_import_leaves_the_others_going(
    control: ControlClient, worker: Worker, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug met in one tenant's data (here: an error quoting a card number) fails that import's pass alone; the
    worker goes on with the others, and what it reports names the error's site, not its message."""
    broken, fine = sim.create_account(customers=5).id, sim.create_account(customers=5).id
    for account in (broken, fine):
        sim.set_rate_limit(account, 1000)
    broken_tenant, _, broken_connection, _ = await connect(control, sim, broken, name="Broken")
    _, _, fine_connection, _ = await connect(control, sim, fine, name="Fine")
    pages = worker.importer._pages
    listed_page = pages.listed_page

    async def failing_for_one(body, resource, tenant_id, *args):  # type: ignore[no-untyped-def]
        if tenant_id == broken_tenant:
            raise ValueError("invalid literal for int() with base 10: '4242424242424242'")
        return await listed_page(body, resource, tenant_id, *args)

    monkeypatch.setattr(pages, "listed_page", failing_for_one)
    outcomes = {o.connection_id: o
                for o in await worker.importer.run_pending(among={broken_connection, fine_connection})}
    assert outcomes[fine_connection].state == "done"
    assert outcomes[broken_connection].state == "failed"
    assert outcomes[broken_connection].detail.startswith("ValueError at ")
    assert "4242" not in outcomes[broken_connection].detail


async def test_a_tenant_whose_account_is_rate_limited_does_not_hold_up_another_tenants_import(
    control: ControlClient, worker: Worker, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenant's own systems use its account's limit: Stripe answers 429, and every process waits it out, the
    tenant's slices queued for tokens, each holding one of the worker's pages in flight. With one pool for all, that
    tenant came to hold them all, and every other import stood still until its block ended. Here the worker has 4
    pages in flight; the blocked tenant holds its share, and the other tenant's import finishes meanwhile."""
    blocked, healthy = sim.create_account(customers=30).id, sim.create_account(customers=5).id
    for account in (blocked, healthy):
        sim.set_rate_limit(account, 1000)
    _, _, blocked_connection, _ = await connect(control, sim, blocked, name="Blocked")
    _, _, healthy_connection, _ = await connect(control, sim, healthy, name="Healthy")
    monkeypatch.setattr(worker.importer, "_pages_in_flight", FairShares(4))
    await control.pool.execute(  # a 429 with Retry-After: 8, as every process of the account sees it
        "INSERT INTO stripe_request_budgets (budget_key, tokens, refilled_at, blocked_until) "
        "VALUES ($1, 0, clock_timestamp(), clock_timestamp() + interval '8 seconds') ON CONFLICT (budget_key) DO "
        "UPDATE SET blocked_until = excluded.blocked_until", blocked_connection)
    stop = asyncio.Event()
    passes = asyncio.create_task(worker.importer.run_pending(stop, among={blocked_connection, healthy_connection}))
    try:
        await wait_for(lambda: _imported(control, healthy_connection), 6, "the other tenant's import, meanwhile")
        assert not await _imported(control, blocked_connection)
    finally:
        stop.set()
        await passes


async def test_a_pass_held_up_by_a_tenants_rate_limit_does_not_hold_up_another_tenants_next_passes(
    control: ControlClient, worker: Worker, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass ends after its pages in flight, and a page of a tenant whose account Stripe blocks (a 429's Retry-After)
    waits out the block: the worker ran its passes in rounds, and every other import waited for that pass before its
    next one. Here a pass lasts 0.2 s, the blocked tenant's 90 s; the other tenant's import takes several passes, and
    finishes meanwhile (in about 5 s; with rounds, it stood still after its first pass)."""
    blocked, healthy = sim.create_account(customers=30).id, sim.create_account(customers=150).id
    for account in (blocked, healthy):
        sim.set_rate_limit(account, 1000)
    _, _, blocked_connection, _ = await connect(control, sim, blocked, name="Blocked")
    _, _, healthy_connection, _ = await connect(control, sim, healthy, name="Healthy")
    await control.pool.execute(
        "INSERT INTO stripe_request_budgets (budget_key, tokens, refilled_at, blocked_until) "
        "VALUES ($1, 0, clock_timestamp(), clock_timestamp() + interval '90 seconds') ON CONFLICT (budget_key) DO "
        "UPDATE SET blocked_until = excluded.blocked_until", blocked_connection)
    importer = worker.importer
    monkeypatch.setattr(importer, "_settings", importer._settings.model_copy(
        # The blocked tenant's page waits out its block (not given up `page_overrun_s` after its pass: on a loaded CI
        # machine the other import can take longer than the default 30 s, and the blocked pass then ends meanwhile).
        update={"pass_s": 0.2, "scan_interval_s": 0.1, "page_overrun_s": 120.0}))
    passes: list[ImportOutcome] = []
    run_connection = importer.run_connection

    async def counted(connection_id: str, stop: asyncio.Event | None = None) -> ImportOutcome:
        outcome = await run_connection(connection_id, stop)
        passes.append(outcome)
        return outcome

    monkeypatch.setattr(importer, "run_connection", counted)
    sim.set_faults({"kind": "latency", "latency_ms": 150})  # a few pages per pass
    stop = asyncio.Event()
    running = asyncio.create_task(importer.run_forever(stop, among={blocked_connection, healthy_connection}))
    try:
        await wait_for(lambda: _imported(control, healthy_connection), 60, "the other tenant's import, meanwhile")
        assert not await _imported(control, blocked_connection)
        # More than one pass: its next ones ran while the blocked tenant's first still did (a whole suite's load made
        # its passes longer, two where three were asserted, once).
        assert sum(o.connection_id == healthy_connection for o in passes) >= 2
        assert [o for o in passes if o.connection_id == blocked_connection] == []  # the blocked one's first still runs
    finally:
        sim.set_faults()
        stop.set()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_pass_whose_pages_stripe_keeps_refusing_ends_soon_after_its_time(
    control: ControlClient, worker: Worker, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stripe answers 429 to every request (the tenant's own systems at the account's limit): each page is retried
    with backoff, eight times over a minute or so, and the pass held its place of the worker's concurrent imports
    all that time (a few such tenants held them all). A page still waiting `page_overrun_s` after the pass's time is
    given up: the pass ends, to be tried again, with nothing of that page kept."""
    account = sim.create_account(customers=30).id
    sim.set_rate_limit(account, 1000)
    _, _, connection_id, _ = await connect(control, sim, account)
    importer = worker.importer
    monkeypatch.setattr(importer, "_settings", importer._settings.model_copy(
        update={"pass_s": 0.2, "page_overrun_s": 1.0}))
    sim.set_faults({"kind": "status", "status": 429})
    try:
        outcome = await asyncio.wait_for(importer.run_connection(connection_id), 10)  # the retries alone: ~30 s
    finally:
        sim.set_faults()
    assert outcome.state == "retry_later" and "after its pass's time" in outcome.detail, outcome
    assert await control.pool.fetchval(
        "SELECT coalesce(sum(objects_published), 0) FROM import_slices WHERE connection_id = $1", connection_id) == 0
    assert (await import_until_done(worker, connection_id, 0.1)).state == "done"  # Stripe answers again: it goes on
    await published_each_object_once(control, sim, account)


async def test_a_worker_told_to_stop_while_it_looks_for_imports_starts_none(
    control: ControlClient, worker: Worker, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while the worker looks for pending imports: a pass started then would spend the worker's grace time
    on its start (claims, the rate's new start, checkpoints) instead of finishing what is in flight."""
    account = sim.create_account(customers=5).id
    sim.set_rate_limit(account, 1000)
    _, _, connection_id, _ = await connect(control, sim, account)
    importer = worker.importer
    stop = asyncio.Event()
    look = importer._checkpoints.connections_with_pending_imports
    passes: list[str] = []

    async def stopped_while_looking() -> list[str]:
        found = await look()
        stop.set()  # the signal comes while the answer is on its way
        return found

    async def counted(connection_id: str, stop: asyncio.Event | None = None) -> ImportOutcome:
        passes.append(connection_id)
        return ImportOutcome(connection_id, "done")

    monkeypatch.setattr(importer._checkpoints, "connections_with_pending_imports", stopped_while_looking)
    monkeypatch.setattr(importer, "run_connection", counted)
    await asyncio.wait_for(importer.run_forever(stop, among={connection_id}), 30)
    assert passes == []
    assert not await _imported(control, connection_id)


async def _imported(control: ControlClient, connection_id: str) -> bool:
    return all(c.done for c in await control.checkpoints.import_checkpoints(connection_id))


async def test_a_page_that_says_more_with_no_objects_does_not_end_its_slice(
    control: ControlClient, worker: Worker, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page with no objects that says `has_more` was taken for the end of its slice: the rest of the slice's range
    was never read, and the import said done. It is a failure to try again, as a 5xx is."""
    account = sim.create_account(customers=30).id
    sim.set_rate_limit(account, 1000)
    _, _, connection_id, _ = await connect(control, sim, account)
    pages = worker.importer._pages
    listed_page = pages.listed_page
    emptied: list[str] = []

    async def first_charges_page_empty(body, resource, *args):  # type: ignore[no-untyped-def]
        listed = await listed_page(body, resource, *args)
        if resource == "charges" and not emptied:
            emptied.append(resource)
            return ListedPage([], True)
        return listed

    monkeypatch.setattr(pages, "listed_page", first_charges_page_empty)
    assert (await import_until_done(worker, connection_id, 0.1)).state == "done"
    assert emptied
    expected = sim_objects(sim, account)
    envelopes = await published_envelopes(control.settings, sum(len(ids) for ids in expected.values()))
    assert by_type(envelopes) == expected  # the emptied page's slice was read to its end
    health = await control.store.get_connection(connection_id)
    assert health is not None and health.last_error_code == "stripe_empty_page"  # shown: it may not go away


async def test_a_cursor_stripe_does_not_follow_publishes_nothing_again_and_shows_in_health(
    control: ControlClient, worker: Worker, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Something between us and Stripe drops `starting_after` from the charges' lists: every page after the first lists
    the cursor's second again from its top. Kept, those objects went to the topic again at every request (and a second
    holding more than a page of objects, a bulk migration's, was paged for ever). Nothing of such a page is kept, the
    connection's health says why the import stands still, and it goes on once the cursor is followed."""
    account = sim.create_account(customers=120).id
    sim.set_rate_limit(account, 1000)
    _, _, connection_id, _ = await connect(control, sim, account)
    list_page_body = StripeReader.list_page_body
    dropping = True

    async def without_cursor(self: StripeReader, resource: str, params: Any) -> Any:
        if dropping and resource == "charges":
            params = {name: value for name, value in params.items() if name != "starting_after"}
        return await list_page_body(self, resource, params)

    monkeypatch.setattr(StripeReader, "list_page_body", without_cursor)
    for _ in range(3):
        outcome, = await worker.importer.run_pending(among={connection_id})
        assert outcome.state != "done", outcome
    charges = len(sim_objects(sim, account)["charge"])
    assert charges > 300  # more than a page in each of the two initial slices
    others = sum(len(ids) for kind, ids in sim_objects(sim, account).items() if kind != "charge")
    charges_published = await control.pool.fetchval(
        "SELECT objects_published FROM import_runs WHERE connection_id = $1 AND resource = 'charges'", connection_id)
    envelopes = await published_envelopes(control.settings, others + charges_published)  # all there is
    copies = Counter((e.object_type, e.object_id) for e in envelopes)
    assert max(copies.values()) == 1, copies.most_common(3)  # nothing published twice
    health = await control.store.get_connection(connection_id)
    assert health is not None and health.last_error_code == "stripe_cursor_ignored"

    dropping = False
    assert (await import_until_done(worker, connection_id, 0.1)).state == "done"
    await published_each_object_once(control, sim, account)


async def test_a_claim_renewal_that_fails_for_good_stops_the_pass(
    control: ControlClient, worker: Worker, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task renewing a pass's claims ended quietly on an error that is not Postgres being away (a bug): the
    slices went on being paged while their claims lapsed, and another process could claim and page them too. The
    pass stops at its next pages and fails as a bug does (the import goes on in a later pass)."""
    account = sim.create_account(customers=300).id
    sim.set_rate_limit(account, 1000)
    sim.set_faults({"kind": "latency", "latency_ms": 100})
    _, _, connection_id, _ = await connect(control, sim, account)
    checkpoints = worker.importer._checkpoints
    join_import = checkpoints.join_import
    joined: list[float] = []

    async def failing_after_the_first(*args, **kwargs):  # type: ignore[no-untyped-def]
        joined.append(time.monotonic())
        if len(joined) > 1:
            raise ValueError("a bug in the renewal")
        return await join_import(*args, **kwargs)

    monkeypatch.setattr(checkpoints, "join_import", failing_after_the_first)
    outcome, = await asyncio.wait_for(worker.importer.run_pending(among={connection_id}), 30)
    sim.set_faults()
    assert outcome.state == "failed" and outcome.detail.startswith("ValueError at "), outcome  # said, and stopped
    assert not all(c.done for c in await control.checkpoints.import_checkpoints(connection_id))
    monkeypatch.setattr(checkpoints, "join_import", join_import)
    assert (await import_until_done(worker, connection_id, 0.1)).state == "done"  # and goes on in the next pass


def dies_on_a_tenants_charges(hostile_tenant: str, marker: str, body: bytes, resource: str, tenant_id: str,
                              *args):  # type: ignore[no-untyped-def]
    """In a pool process: a tenant whose charges kill the process reading them (a crash in a C extension, say), once
    another tenant's page waits behind it (`marker` exists)."""
    if tenant_id == hostile_tenant and resource == "charges":
        deadline = time.monotonic() + 60  # then it dies anyway, and the test says the other page was not re-read
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(70)
    return page_pool._listed_page_in_pool(body, resource, tenant_id, *args)


async def test_a_page_that_kills_the_process_reading_it_pauses_its_import_alone(
    control: ControlClient, worker: Worker, sim: SimServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A tenant whose pages kill the page pool's process pauses its own import, shown on its connection; the other
    tenant's pages that were in that pool are read again, and its import finishes with every object."""
    hostile, other = sim.create_account(customers=20).id, sim.create_account(customers=20).id
    for account in (hostile, other):
        sim.set_rate_limit(account, 1000)
    hostile_tenant, token, hostile_connection, _ = await connect(control, sim, hostile, name="Hostile")
    other_tenant, _, other_connection, _ = await connect(control, sim, other, name="Other")
    marker = tmp_path / "another-page-waits"
    pool = PagePool(1, partial(dies_on_a_tenants_charges, hostile_tenant, str(marker)))
    in_pool, made_alone, read_again = pool._in_pool, pool._made_alone, []

    async def spied_in_pool(fn, *args):  # type: ignore[no-untyped-def]
        if args[2] == other_tenant:
            marker.touch()  # the other tenant's page is about to wait behind the hostile one
        return await in_pool(fn, *args)

    async def spied_alone(resource, args, *rest):  # type: ignore[no-untyped-def]
        read_again.append(args[2])
        return await made_alone(resource, args, *rest)

    monkeypatch.setattr(pool, "_in_pool", spied_in_pool)
    monkeypatch.setattr(pool, "_made_alone", spied_alone)
    monkeypatch.setattr(worker.importer, "_pages", pool)
    ours = {hostile_connection, other_connection}
    outcomes = {o.connection_id: o for o in await worker.importer.run_pending(among=ours)}
    assert outcomes[other_connection].state == "done" and other_tenant in read_again
    assert marker.exists()  # the spy saw the other tenant's page go in (it reads the tenant where the pool passes it)
    outcome = outcomes[hostile_connection]
    if outcome.state == "retry_later":  # one of its pages killed a process alone: the kernel may have done it
        again = {o.connection_id: o for o in await worker.importer.run_pending(among=ours)}  # read alone; kills again
        outcome = again[hostile_connection]
    assert (outcome.state, outcome.detail) == ("paused", "unreadable_page")

    expected = sim_objects(sim, other)
    envelopes = await published_envelopes(control.settings, sum(len(ids) for ids in expected.values()))
    assert by_type([e for e in envelopes if e.tenant_id == other_tenant]) == expected  # nothing lost
    assert not any(e.tenant_id == hostile_tenant and e.object_type == "charge" for e in envelopes)
    _, view = await control.call("GET", f"/api/tenants/{hostile_tenant}/connections/test", token)
    assert view["import"]["state"] == "paused" and view["import"]["paused_reason"] == "unreadable_page"
    before = len(sim.state.request_log[hostile])
    assert (await worker.importer.run_connection(hostile_connection)).state == "paused"  # until a person acts
    assert len(sim.state.request_log[hostile]) == before

    # Resumed (a key Test) in a worker that has not met the page (another one, or restarted): it reads the tenant's
    # pages alone from the start, so the pool other tenants use never meets the page again.
    assert (await control.store.get_connection(hostile_connection)).pages_read_alone_since is not None
    fresh = PagePool(1, partial(dies_on_a_tenants_charges, hostile_tenant, str(marker)))
    fresh_in_pool, in_shared_pool = fresh._in_pool, []

    async def spied_fresh_in_pool(fn, *args):  # type: ignore[no-untyped-def]
        in_shared_pool.append(args[2])
        return await fresh_in_pool(fn, *args)

    monkeypatch.setattr(fresh, "_in_pool", spied_fresh_in_pool)
    monkeypatch.setattr(worker.importer, "_pages", fresh)
    await control.checkpoints.resume_import(hostile_connection)
    states = [(await worker.importer.run_connection(hostile_connection)).state]
    if states[-1] == "retry_later":  # its first death in this worker
        states.append((await worker.importer.run_connection(hostile_connection)).state)
    assert states[-1] == "paused" and hostile_tenant not in in_shared_pool
    assert all(isinstance(tenant, str) for tenant in in_shared_pool)  # tenant ids the spy read, not pages


async def test_a_cleared_read_alone_mark_puts_the_tenants_pages_back_in_the_pool_without_a_restart(
    control: ControlClient, worker: Worker, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenant blamed here is read alone (and marked for every worker) even by a pass that found no mark; a
    worker that learns the mark from the database reads it alone too; once a person clears the mark (`ingestor
    read-alone clear`), each of them reads its pages in the shared pool again from its next pass, not restarted,
    and its import brings every object; the tenant sees the mark while it stands; clearing it twice, or text that
    is no tenant, is refused and changes nothing."""
    account = sim.create_account(customers=5).id
    sim.set_rate_limit(account, 1000)
    tenant, token, connection_id, _ = await connect(control, sim, account, name="Once hostile")
    in_shared_pool: list[str] = []

    def spied_pool() -> PagePool:
        pool = PagePool(1)
        in_pool = pool._in_pool

        async def spied_in_pool(fn, *args):  # type: ignore[no-untyped-def]
            in_shared_pool.append(args[2])
            return await in_pool(fn, *args)

        monkeypatch.setattr(pool, "_in_pool", spied_in_pool)
        return pool

    blamed_here, learnt = spied_pool(), spied_pool()
    monkeypatch.setattr(worker.importer, "_pages", blamed_here)
    blamed_here.read_alone(tenant)  # blamed in this worker, the mark not stored yet: the pass finds none, keeps it
    assert (await worker.importer.run_connection(connection_id)).state == "done"
    assert tenant not in in_shared_pool and blamed_here.reads_alone(tenant)
    assert (await control.store.get_connection(connection_id)).pages_read_alone_since is not None
    _, progress = await control.call("GET", f"/api/tenants/{tenant}/connections/test/import", token)
    assert progress["read_alone_since"] is not None  # the tenant sees why its import is slower
    importer = worker.importer  # another worker process (or this one restarted) shares its database and Kafka
    other_worker = StripeImporter(SourceDeps(worker.store, worker.checkpoints, importer._readers, importer._publisher),
                                  control.settings.importer)
    monkeypatch.setattr(other_worker, "_pages", learnt)
    await control.call("POST", f"/api/tenants/{tenant}/connections/test/import", token, {})
    assert (await other_worker.run_connection(connection_id)).state == "done"
    assert tenant not in in_shared_pool and learnt.reads_alone(tenant)  # learnt from the database

    monkeypatch.setenv("INGESTOR_POSTGRES__DSN", control.settings.postgres.dsn.get_secret_value())

    async def run_cli(*args: str) -> Result:  # in a thread: the command runs its own event loop
        return await asyncio.to_thread(CliRunner().invoke, cli, list(args))

    listed = await run_cli("read-alone", "list")
    assert listed.exit_code == 0 and f"tenant {tenant}: read alone since " in listed.output  # with other tests'
    cleared = await run_cli("read-alone", "clear", tenant)
    assert cleared.exit_code == 0 and "share the page pool again (1 connection(s))" in cleared.output
    assert tenant not in (await run_cli("read-alone", "list")).output
    for refused in (tenant, "ten_no_such_tenant", "\udcff"):  # cleared already, unknown, no text at all
        again = await run_cli("read-alone", "clear", refused)
        assert again.exit_code == 1 and "has no connection whose import pages are read alone" in again.output
        assert again.exception is None or isinstance(again.exception, SystemExit)  # a message, no traceback

    for importer, pool in ((worker.importer, blamed_here), (other_worker, learnt)):
        in_shared_pool.clear()
        status, _ = await control.call("POST", f"/api/tenants/{tenant}/connections/test/import", token, {})
        assert status == 202
        assert (await importer.run_connection(connection_id)).state == "done"
        assert tenant in in_shared_pool and not pool.reads_alone(tenant)  # the same worker, not restarted
    assert (await control.store.get_connection(connection_id)).pages_read_alone_since is None  # not marked again
    _, view = await control.call("GET", f"/api/tenants/{tenant}/connections/test", token)
    assert view["import"]["read_alone_since"] is None
    expected = sim_objects(sim, account)
    envelopes = await published_envelopes(control.settings, 4 * sum(len(ids) for ids in expected.values()))
    assert by_type([e for e in envelopes if e.tenant_id == tenant]) == expected
