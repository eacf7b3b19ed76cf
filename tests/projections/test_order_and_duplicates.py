"""Order independence and exactly-once effect of the store, against the real Postgres."""

from __future__ import annotations

import dataclasses
import json
import random
import uuid
from datetime import datetime, timezone
from typing import Any

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestor.envelope.snapshots import snapshot_envelope
from ingestor.sources.deps import SourceDeps
from ingestor.sources.importer import StripeImporter
from ingestor.stripe_api.client import PageBody
from plumbing.settings import ImporterSettings
from projections.handlers.writes import STATE_COLUMNS, Writes, writes_for
from projections.projector.store import PostgresProjectionStore
from schemas import Envelope, Source
from stripe_sim import CURRENT_VERSION, SimServer
from tests.projections.support import apply_all, bind_tenant, dump, history_envelopes

pytestmark = pytest.mark.integration


def retenant(envelopes: list[Envelope], tenant_id: str) -> list[Envelope]:
    return [dataclasses.replace(e, tenant_id=tenant_id) for e in envelopes]


async def test_three_random_orders_and_twice_over_give_identical_tables(pool: asyncpg.Pool) -> None:
    async with SimServer(seed=5) as sim:
        account = sim.create_account(api_version=CURRENT_VERSION, customers=25, months=12)
        base = history_envelopes(sim, account.id, "t")
    store = PostgresProjectionStore(pool, "order-test")
    dumps = []
    for seed in (1, 2, 3):
        tenant = f"order_{seed}_{uuid.uuid4().hex[:6]}"
        envelopes = retenant(base, tenant)
        random.Random(seed).shuffle(envelopes)
        await apply_all(store, envelopes, batch=97)
        await apply_all(store, list(reversed(envelopes)), batch=41)  # everything delivered twice over
        async with pool.acquire() as conn:
            dumps.append(await dump(conn, tenant))
    assert dumps[0]["charges"] and dumps[0]["subscription_versions"] and dumps[0]["mrr_by_month"]
    assert dumps[0] == dumps[1] == dumps[2]


def event(obj: dict[str, Any], event_type: str, event_id: str, created: int, tenant: str,
          source: Source = Source.WEBHOOK) -> Envelope:
    payload = {"id": event_id, "object": "event", "type": event_type, "created": created, "livemode": False,
               "api_version": "2024-06-20", "data": {"object": obj}}
    return Envelope(tenant, event_id, event_type, obj["object"], obj["id"],
                    datetime.fromtimestamp(created, timezone.utc), datetime.now(timezone.utc), source, False,
                    "2024-06-20", None, json.dumps(payload))


T = 1_760_000_000
INVOICE = {"id": "in_1", "object": "invoice", "created": T, "currency": "usd", "customer": "cus_1", "subscription": "sub_1",
           "total": 2000, "amount_due": 2000, "amount_paid": 0, "amount_remaining": 2000}
CHARGE = {"id": "ch_1", "object": "charge", "created": T, "currency": "usd", "customer": "cus_1", "amount": 5000,
          "amount_captured": 5000, "amount_refunded": 0, "captured": True}
SUBSCRIPTION: dict[str, Any] = {"id": "sub_1", "object": "subscription", "created": T, "currency": "usd", "customer": "cus_1",
                "items": {"data": [{"id": "si_1", "quantity": 1, "price": {"id": "price_1", "unit_amount": 1000,
                                                                             "recurring": {"interval": "month", "interval_count": 1}}}]}}
PAYMENT_INTENT = {"id": "pi_1", "object": "payment_intent", "created": T, "currency": "usd", "customer": "cus_1",
                  "amount": 5000, "amount_received": 0}
CUSTOMER = {"id": "cus_1", "object": "customer", "created": T, "email": "jenny@example.com", "name": "Jenny"}

# Pairs of states of one object in the same second: (older, newer) by the written rule.
SAME_SECOND_PAIRS = [
    ("invoice finalized/paid", (INVOICE | {"status": "open"}, "invoice.finalized"),
     (INVOICE | {"status": "paid", "amount_paid": 2000, "amount_remaining": 0}, "invoice.paid"), "invoices", "paid"),
    # Both open: the failed attempt is the later state (attempts only grow); failed-payment recovery reads it.
    ("invoice finalized/payment failed", (INVOICE | {"status": "open", "attempt_count": 0, "attempted": False},
                                          "invoice.finalized"),
     (INVOICE | {"status": "open", "attempt_count": 1, "attempted": True}, "invoice.payment_failed"), "invoices", "open"),
    ("charge authorised/captured", (CHARGE | {"status": "succeeded", "captured": False, "amount_captured": 0},
                                    "charge.succeeded"),
     (CHARGE | {"status": "succeeded"}, "charge.captured"), "charges", "succeeded"),
    ("charge succeeded/refunded", (CHARGE | {"status": "succeeded"}, "charge.succeeded"),
     (CHARGE | {"status": "succeeded", "amount_refunded": 1500}, "charge.refunded"), "charges", "succeeded"),
    ("subscription created/updated", (SUBSCRIPTION | {"status": "incomplete"}, "customer.subscription.created"),
     (SUBSCRIPTION | {"status": "active"}, "customer.subscription.updated"), "subscriptions", "active"),
    ("payment intent created/succeeded", (PAYMENT_INTENT | {"status": "requires_confirmation"}, "payment_intent.created"),
     (PAYMENT_INTENT | {"status": "succeeded", "amount_received": 5000}, "payment_intent.succeeded"), "payment_intents", "succeeded"),
    ("customer updated/deleted", (CUSTOMER, "customer.updated"), (CUSTOMER | {"deleted": True}, "customer.deleted"), "customers", None),
    # A creation and an update of the same status in its second: the creation is the object's first state.
    ("subscription created/updated, both active", (SUBSCRIPTION | {"status": "active"}, "customer.subscription.created"),
     (SUBSCRIPTION | {"status": "active", "items": {"data": [SUBSCRIPTION["items"]["data"][0] | {"quantity": 3}]}},
      "customer.subscription.updated"), "subscriptions", "active"),
    ("customer created/updated", (CUSTOMER | {"email": None}, "customer.created"), (CUSTOMER, "customer.updated"),
     "customers", None),
    ("draft invoice created/updated", (INVOICE | {"status": "draft", "total": 0, "amount_due": 0, "amount_remaining": 0},
                                       "invoice.created"), (INVOICE | {"status": "draft"}, "invoice.updated"),
     "invoices", "draft"),
]


@pytest.mark.parametrize("name,older,newer,table,status", SAME_SECOND_PAIRS, ids=[p[0] for p in SAME_SECOND_PAIRS])
async def test_same_second_states_resolve_the_same_in_either_order(
    pool: asyncpg.Pool, name: str, older: tuple[dict[str, Any], str], newer: tuple[dict[str, Any], str],
    table: str, status: str | None,
) -> None:
    store = PostgresProjectionStore(pool, "tie-test")
    results = []
    for order in ("older_first", "newer_first"):
        tenant = f"tie_{uuid.uuid4().hex[:8]}"
        # Event ids chosen so the id tie-break alone would pick the older state: the rank must decide.
        first = event(older[0], older[1], "evt_zzz_older", T, tenant)
        second = event(newer[0], newer[1], "evt_aaa_newer", T, tenant)
        sequence = [first, second] if order == "older_first" else [second, first]
        for envelope in sequence:
            await store.apply([(tenant, envelope.event_id, writes_for(envelope))], {})
        row = await pool.fetchrow(f"SELECT * FROM projection.{table} WHERE tenant_id = $1", tenant)
        results.append(row)
        assert row["state_event_id"] == "evt_aaa_newer", order
        if status is not None:
            assert row["status"] == status
        else:
            assert row["deleted"] is bool(newer[0].get("deleted"))
    assert {k: v for k, v in results[0].items() if k != "tenant_id"} == {k: v for k, v in results[1].items() if k != "tenant_id"}


async def test_an_authorisation_stored_before_uncaptured_charges_ranked_a_step_down_gives_way_to_its_capture(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored by a projector before migration 0090 (an authorisation ranked as a capture), then its capture of the
    same second: the capture wins once the migration ran; and a capture refunded in that second, stored before,
    stays newer than its authorisation redelivered now (captured states keep their ranks)."""
    from projections import MIGRATIONS_DIR
    from projections.handlers import ordering

    store = PostgresProjectionStore(pool, "uncaptured-step-test")
    tenant, other = f"step_{uuid.uuid4().hex[:8]}", f"step_{uuid.uuid4().hex[:8]}"
    authorised = CHARGE | {"status": "succeeded", "captured": False, "amount_captured": 0}
    with monkeypatch.context() as before:
        before.setattr(ordering, "UNCAPTURED_PROGRESS", 2)
        stored = [event(authorised, "charge.succeeded", "evt_zzz_authorised", T, tenant),
                  event(CHARGE | {"status": "succeeded", "amount_refunded": 300}, "charge.refunded", "evt_aaa_refunded",
                        T, other)]
        await store.apply([(e.tenant_id, e.event_id, writes_for(e)) for e in stored], {})
    [migration] = MIGRATIONS_DIR.glob("0090_*.sql")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(migration.read_text())
    arriving = [event(CHARGE | {"status": "succeeded"}, "charge.captured", "evt_aaa_captured", T, tenant),
                event(authorised, "charge.succeeded", "evt_zzz_authorised", T, other)]
    await store.apply([(e.tenant_id, e.event_id, writes_for(e)) for e in arriving], {})
    rows = {r["tenant_id"]: r for r in await pool.fetch(
        "SELECT tenant_id, state_event_id, captured, amount_refunded FROM projection.charges WHERE tenant_id = ANY($1)",
        [tenant, other])}
    assert (rows[tenant]["state_event_id"], rows[tenant]["captured"]) == ("evt_aaa_captured", True)
    assert (rows[other]["state_event_id"], rows[other]["amount_refunded"]) == ("evt_aaa_refunded", 300)


async def test_a_late_older_event_cannot_undo_a_deletion(pool: asyncpg.Pool) -> None:
    store = PostgresProjectionStore(pool, "tomb-test")
    tenant = f"tomb_{uuid.uuid4().hex[:8]}"
    deleted = event(CUSTOMER | {"deleted": True}, "customer.deleted", "evt_del", T + 10, tenant)
    late_update = event(CUSTOMER | {"name": "Jenny Rosen"}, "customer.updated", "evt_upd", T + 5, tenant)
    for envelope in (deleted, late_update):
        await store.apply([(tenant, envelope.event_id, writes_for(envelope))], {})
    row = await pool.fetchrow("SELECT deleted, name FROM projection.customers WHERE tenant_id = $1", tenant)
    assert row["deleted"] is True and row["name"] == "Jenny"


class _PageOnItsWay:
    """A key session whose page comes back `latency_s` after it was asked for: the clock moves while it waits."""

    def __init__(self, clock: list[float], body: bytes, latency_s: float):
        self.clock, self.body, self.latency_s = clock, body, latency_s

    async def call(self, request: object) -> PageBody:
        self.clock[0] += self.latency_s
        return PageBody(self.body, self.latency_s)


@pytest.mark.parametrize("deleted_first", [True, False], ids=["deletion_first", "snapshot_first"])
async def test_a_customer_deleted_while_an_import_page_was_on_its_way_stays_deleted(
    pool: asyncpg.Pool, deleted_first: bool
) -> None:
    """Stripe read the customer just after the request left (T + 0.8 s), the customer was deleted at T + 1.2 s (its
    event of second T + 1) and the page came back at T + 2.1 s: the snapshot is the older state, whatever the order
    they are projected in. Dated when the page came back, it was the newer one and brought the customer back for
    good (Stripe's list never shows a deleted customer to correct it)."""
    clock = [T + 0.8]
    deps = SourceDeps(None, None, None, None, clock=lambda: clock[0])  # type: ignore[arg-type]
    importer = StripeImporter(deps, ImporterSettings(page_processes=0))
    body = json.dumps({"object": "list", "data": [CUSTOMER], "has_more": False}).encode()
    page = await importer._fetch(_PageOnItsWay(clock, body, 1.3), "customers", {})  # type: ignore[arg-type]
    tenant = f"race_{uuid.uuid4().hex[:8]}"
    snapshot = snapshot_envelope(CUSTOMER, tenant, False, "2026-10-28.endive", page.asked_at)
    deleted = event(CUSTOMER | {"deleted": True}, "customer.deleted", "evt_deleted", T + 1, tenant)
    store = PostgresProjectionStore(pool, "race-test")
    for envelope in (deleted, snapshot) if deleted_first else (snapshot, deleted):
        await store.apply([(tenant, envelope.event_id, writes_for(envelope))], {})
    row = await pool.fetchrow("SELECT deleted, state_event_id FROM projection.customers WHERE tenant_id = $1", tenant)
    assert row["deleted"] is True and row["state_event_id"] == "evt_deleted"


async def test_an_event_is_applied_once_however_often_and_wherever_it_comes_from(pool: asyncpg.Pool) -> None:
    store = PostgresProjectionStore(pool, "dup-test")
    tenant = f"dup_{uuid.uuid4().hex[:8]}"
    charge = CHARGE | {"status": "succeeded"}
    webhook = event(charge, "charge.succeeded", "evt_same", T, tenant, Source.WEBHOOK)
    poll = dataclasses.replace(webhook, source=Source.POLL)
    first = await store.apply([(tenant, "evt_same", writes_for(webhook)), (tenant, "evt_same", writes_for(webhook))], {})
    second = await store.apply([(tenant, "evt_same", writes_for(poll))], {})
    assert (first.new_events, second.new_events, second.duplicates) == (1, 0, 1)
    async with pool.acquire() as conn:
        await bind_tenant(conn, tenant)
        row = await conn.fetchrow("SELECT gross FROM projection.daily_revenue WHERE tenant_id = $1", tenant)
    assert row["gross"] == 5000


async def test_positions_only_move_forward(pool: asyncpg.Pool) -> None:
    store = PostgresProjectionStore(pool, f"pos-{uuid.uuid4().hex[:6]}")
    await store.apply([], {("raw", 0): 100, ("raw", 1): 5})
    await store.apply([], {("raw", 0): 40, ("raw", 1): 9})
    assert await store.positions("raw", [0, 1, 2]) == {0: 100, 1: 9}


def test_writes_read_both_api_versions_of_an_invoice_and_a_subscription() -> None:
    old_invoice = event(INVOICE | {"status": "paid"}, "invoice.paid", "evt_o", T, "t")
    new_shape = {k: v for k, v in INVOICE.items() if k != "subscription"} | {
        "status": "paid", "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_1"}}}
    new_invoice = event(new_shape, "invoice.paid", "evt_n", T, "t")
    column = STATE_COLUMNS["invoices"].index("subscription_id")
    assert writes_for(old_invoice).states[0].values[column] == "sub_1"
    assert writes_for(new_invoice).states[0].values[column] == "sub_1"

    item = SUBSCRIPTION["items"]["data"][0] | {"current_period_start": T, "current_period_end": T + 2_592_000}
    new_sub = event(SUBSCRIPTION | {"status": "active", "items": {"data": [item]}}, "customer.subscription.updated", "evt_s", T, "t")
    old_sub = event(SUBSCRIPTION | {"status": "active", "current_period_start": T, "current_period_end": T + 2_592_000},
                    "customer.subscription.updated", "evt_s2", T, "t")
    columns = STATE_COLUMNS["subscriptions"]
    for envelope in (new_sub, old_sub):
        values = writes_for(envelope).states[0].values
        assert values[columns.index("current_period_end")] == datetime.fromtimestamp(T + 2_592_000, timezone.utc)
        assert values[columns.index("mrr")] == 1000


def test_writes_is_pure() -> None:
    envelope = event(CHARGE | {"status": "succeeded"}, "charge.succeeded", "evt_p", T, "t")
    assert writes_for(envelope) == writes_for(envelope)
    assert isinstance(writes_for(envelope), Writes)


@given(st.permutations(list(range(12))), st.integers(min_value=0, max_value=3))
def test_collapsing_a_batch_keeps_the_newest_state_whatever_the_order(order: list[int], ties: int) -> None:
    from hypothesis import note

    from projections.handlers.writes import StateRow
    from projections.projector.store import newest_per_object

    states = [StateRow("charges", "t", f"ch_{i % 3}", 1000 * (i % (4 - ties) + 1), i % 2, f"evt_{i}", False, (i,))
              for i in range(12)]
    expected = newest_per_object(states)
    shuffled = newest_per_object([states[i] for i in order])
    note(str(shuffled))
    assert {s.object_id: s for s in expected["charges"]} == {s.object_id: s for s in shuffled["charges"]}


@pytest.mark.parametrize("snapshot_first", [True, False], ids=["snapshot-first", "webhook-first"])
async def test_refunds_listed_by_a_snapshot_and_a_later_refund_count_once_each_on_their_days(
    pool: asyncpg.Pool, snapshot_first: bool
) -> None:
    store = PostgresProjectionStore(pool, "refund-test")
    tenant = f"refund_{uuid.uuid4().hex[:8]}"
    day = 86_400
    listed = {"object": "list", "data": [{"id": "re_1", "object": "refund", "amount": 1500, "currency": "usd",
                                          "created": T + day, "status": "succeeded", "charge": "ch_1"}]}
    snapshot = event(CHARGE | {"status": "succeeded", "amount_refunded": 1500, "refunds": listed},
                     "charge.snapshot", "snap_1", T + 2 * day, tenant, Source.IMPORT)
    refunded = event(CHARGE | {"status": "succeeded", "amount_refunded": 5000}, "charge.refunded", "evt_ref",
                     T + 3 * day, tenant)
    for envelope in ([snapshot, refunded] if snapshot_first else [refunded, snapshot]):
        await store.apply([(tenant, envelope.event_id, writes_for(envelope))], {})
    async with pool.acquire() as conn:
        await bind_tenant(conn, tenant)
        rows = await conn.fetch("SELECT day, refunded FROM projection.daily_revenue WHERE tenant_id = $1 AND refunded > 0 "
                                "ORDER BY day", tenant)
    days = [(r["day"] - datetime.fromtimestamp(T, timezone.utc).date()).days for r in rows]
    assert list(zip(days, [r["refunded"] for r in rows])) == [(1, 1500), (3, 3500)]


@pytest.mark.parametrize("amounts,expected", [
    ((1500, 0), []),  # the one refund failed: nothing is refunded
    ((1500, 3000, 1500), [(1, 1500)]),  # the second of two refunds failed: the first stays, on its day
    ((1500, 3000), [(1, 1500), (2, 1500)]),  # nothing failed: each step on its day, as before
    # The refund failed, and a new one of the same amount was made two days later: it counts on its own day,
    # not on the failed one's (levels kept the day a level was first seen).
    ((1500, 0, 1500), [(3, 1500)]),
    ((1500, 0, 3000), [(3, 3000)]),  # a larger one after the failure: all of it on its day
    ((3000, 1500, 3000), [(1, 1500), (3, 1500)]),  # half failed, then refunded again: that half on its new day
], ids=["failed", "second-failed", "none-failed", "failed-then-again", "failed-then-more", "half-failed-then-again"])
@pytest.mark.parametrize("arrival", ["in-order", "reversed"])
async def test_a_refunded_level_a_failed_refund_took_back_is_not_counted(
    pool: asyncpg.Pool, amounts: tuple[int, ...], expected: list[tuple[int, int]], arrival: str
) -> None:
    """Charge states without a refund list (a charge.refunded webhook since 2022-11-15): their amount_refunded
    levels are the refunds. Stripe takes a failed refund back out of amount_refunded, so a level above the
    charge's newest one is no longer refunded money, whatever order the states arrive in."""
    store = PostgresProjectionStore(pool, "refund-fail-test")
    tenant = f"refund_fail_{uuid.uuid4().hex[:8]}"
    day = 86_400
    states = [event(CHARGE | {"status": "succeeded", "amount_refunded": amount}, "charge.updated", f"evt_{i}",
                    T + (i + 1) * day, tenant) for i, amount in enumerate(amounts)]
    for envelope in (states if arrival == "in-order" else list(reversed(states))):
        await store.apply([(tenant, envelope.event_id, writes_for(envelope))], {})
    async with pool.acquire() as conn:
        await bind_tenant(conn, tenant)
        rows = await conn.fetch("SELECT day, refunded, net FROM projection.daily_revenue WHERE tenant_id = $1 "
                                "ORDER BY day", tenant)
    days = [((r["day"] - datetime.fromtimestamp(T, timezone.utc).date()).days, r["refunded"]) for r in rows]
    assert [d for d in days if d[1]] == expected
    assert sum(r["net"] for r in rows) == 5000 - amounts[-1]  # captured less what is refunded now


async def _unlisted_refunds(pool: asyncpg.Pool, tenant: str) -> list[tuple[int, int, str]]:
    """(day after T, amount, event id) of the refunds dated from the tenant's charge states."""
    async with pool.acquire() as conn:
        await bind_tenant(conn, tenant)
        rows = await conn.fetch("SELECT refunded_at, amount, event_id FROM projection.refund_facts "
                                "WHERE tenant_id = $1 AND refund_id IS NULL ORDER BY refunded_at", tenant)
    start = datetime.fromtimestamp(T, timezone.utc).date()
    return [((r["refunded_at"].date() - start).days, r["amount"], r["event_id"]) for r in rows]


@pytest.mark.parametrize("arrival", ["in-order", "reversed", "one-batch"])
async def test_a_refund_dated_from_two_events_of_one_state_names_the_same_event_in_any_order(
    pool: asyncpg.Pool, arrival: str
) -> None:
    """Two events showing one charge state (a charge.refunded and a charge.updated of the same second): the
    refund's lineage names the smaller event id, whichever arrives first (a replay must not change it)."""
    store = PostgresProjectionStore(pool, "refund-lineage-test")
    tenant = f"refund_lineage_{uuid.uuid4().hex[:8]}"
    refunded = CHARGE | {"status": "succeeded", "amount_refunded": 1500}
    both = [event(refunded, "charge.refunded", "evt_b", T + 86_400, tenant),
            event(refunded, "charge.updated", "evt_a", T + 86_400, tenant)]
    if arrival == "one-batch":
        await store.apply([(tenant, e.event_id, writes_for(e)) for e in both], {})
    else:
        for envelope in (both if arrival == "in-order" else list(reversed(both))):
            await store.apply([(tenant, envelope.event_id, writes_for(envelope))], {})
    assert await _unlisted_refunds(pool, tenant) == [(1, 1500, "evt_a")]


async def test_a_charge_whose_states_were_not_kept_still_counts_its_newest_refunded_amount(pool: asyncpg.Pool) -> None:
    """A charge projected by a projector older than the kept states (a rolling deploy): its newest state, in the
    charges table, still counts, on its own day."""
    store = PostgresProjectionStore(pool, "refund-no-states-test")
    tenant = f"refund_nostates_{uuid.uuid4().hex[:8]}"
    refunded = event(CHARGE | {"status": "succeeded", "amount_refunded": 1500}, "charge.refunded", "evt_r",
                     T + 2 * 86_400, tenant)
    await store.apply([(tenant, refunded.event_id, writes_for(refunded))], {})
    await pool.execute("DELETE FROM projection.charge_refund_states WHERE tenant_id = $1", tenant)
    assert await _unlisted_refunds(pool, tenant) == [(2, 1500, "evt_r")]


def refunded_charge(status: str, refunded_at: int) -> dict[str, Any]:
    refund = {"id": "re_1", "object": "refund", "amount": 1500, "currency": "usd", "status": status,
              "created": refunded_at, "charge": "ch_1"}
    return CHARGE | {"status": "succeeded", "amount_refunded": 1500, "refunds": {"object": "list", "data": [refund]}}


@pytest.mark.parametrize("older_status,newer_status", [("pending", "succeeded"), ("succeeded", "failed")])
async def test_a_refunds_state_is_its_newest_whatever_order_and_however_often_its_events_come(
    pool: asyncpg.Pool, older_status: str, newer_status: str
) -> None:
    """A refund listed in one state by an older charge event and in another by a newer one: the newer wins in
    either order, in one batch or two, and when the older event is applied again afterwards (a redelivery after
    its dedupe row was pruned). Only a succeeded refund counts in refunded revenue."""
    store = PostgresProjectionStore(pool, "refund-order-test")
    outcomes = []
    for order in ("older_first", "newer_first", "one_batch", "older_again"):
        tenant = f"refund_{uuid.uuid4().hex[:8]}"
        # the older event's id sorts last: the time must decide, not the id
        older = event(refunded_charge(older_status, T + 60), "charge.refunded", "evt_zzz_older", T + 60, tenant)
        newer = event(refunded_charge(newer_status, T + 60), "charge.refund.updated", "evt_aaa_newer", T + 120, tenant)
        if order == "one_batch":
            await store.apply([(tenant, e.event_id, writes_for(e)) for e in (newer, older)], {})
        else:
            sequence = [older, newer] if order == "older_first" else [newer, older]
            for envelope in sequence:
                await store.apply([(tenant, envelope.event_id, writes_for(envelope))], {})
            if order == "older_again":
                await pool.execute("DELETE FROM projection.processed_events WHERE tenant_id = $1", tenant)
                await store.apply([(tenant, older.event_id, writes_for(older))], {})
        row = await pool.fetchrow("SELECT status, event_id FROM projection.refunds WHERE tenant_id = $1", tenant)
        async with pool.acquire() as conn:
            await bind_tenant(conn, tenant)
            refunded = await conn.fetchval("SELECT coalesce(sum(refunded), 0) FROM projection.daily_revenue "
                                           "WHERE tenant_id = $1", tenant)
        outcomes.append((row["status"], row["event_id"], refunded))
    assert [o[:2] for o in outcomes] == [(newer_status, "evt_zzz_older")] * 4, outcomes
    if newer_status == "succeeded":
        assert [o[2] for o in outcomes] == [1500] * 4, "the succeeded refund counts once, in every order"
