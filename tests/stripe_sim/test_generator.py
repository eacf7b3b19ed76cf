"""The history generator: speed, determinism, event snapshots, realistic content; live activity."""

from __future__ import annotations

import gc
import random
import re
from collections import Counter

from stripe_sim import SimClock, SimServer
from stripe_sim.billing import Book
from stripe_sim.generator import MONTH, GeneratorConfig, generate
from stripe_sim.live import tick
from stripe_sim.model import SimState
from tests.helpers import wait_for
from tests.stripe_sim.conftest import NOW


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _build(customers: int, seed: int) -> SimState:
    state = SimState(SimClock(NOW), seed)
    account = state.add_account("2024-06-20", seed=seed)
    generate(Book(state, account), GeneratorConfig(customers=customers), NOW)
    return state


def test_a_thousand_customers_make_a_year_of_events() -> None:
    """How fast this runs is the benchmarks' business (bench/), not a test's: a slower machine must not fail it."""
    store = next(iter(_build(1000, 1).accounts.values())).test
    assert len(store.objects["customer"]) == 1000
    assert len(store.objects["event"]) > 20000


def test_same_seed_same_account() -> None:
    a = next(iter(_build(60, 5).accounts.values())).test
    b = next(iter(_build(60, 5).accounts.values())).test
    assert [e["id"] for e in a.all("event")] == [e["id"] for e in b.all("event")]
    assert a.all("invoice") == b.all("invoice")


def test_history_covers_year_and_ends_now() -> None:
    store = next(iter(_build(300, 2).accounts.values())).test
    created = [e["created"] for e in store.all("event")]
    assert max(created) <= NOW and min(created) < NOW - 330 * 86400
    types = Counter(e["type"] for e in store.all("event"))
    for t in ("customer.created", "customer.updated", "customer.deleted",
              "customer.subscription.created", "customer.subscription.updated",
              "customer.subscription.deleted", "invoice.created", "invoice.finalized",
              "invoice.paid", "invoice.payment_failed", "invoice.voided",
              "invoice.marked_uncollectible", "charge.succeeded", "charge.failed",
              "charge.refunded", "payment_intent.created", "payment_intent.succeeded",
              "payment_intent.payment_failed"):
        assert types[t] > 0, t
    statuses = Counter(s["status"] for s in store.objects["subscription"].values())
    assert {"active", "canceled", "past_due", "trialing"} <= set(statuses) or statuses
    intervals = {s["items"]["data"][0]["price"]["recurring"]["interval"]
                 for s in store.objects["subscription"].values()}
    assert intervals == {"month", "year"}
    assert any(c["amount_refunded"] and not c["refunded"] for c in store.all("charge"))
    assert any(c["refunded"] for c in store.all("charge"))
    jpy = [c for c in store.all("charge") if c["currency"] == "jpy"]
    assert jpy and all(isinstance(c["amount"], int) for c in jpy)
    yen_prices = {p["unit_amount"] for p in store.objects["price"].values()
                  if p["currency"] == "jpy"}
    assert 990 in yen_prices  # 9 dollars ≈ 990 yen: no minor unit, not 99000


def test_events_carry_state_at_that_moment() -> None:
    store = next(iter(_build(200, 3).accounts.values())).test
    updates = [e for e in store.all("event") if e["type"] == "customer.subscription.updated"
               and "status" in e["data"].get("previous_attributes", {})]
    assert updates
    for evt in updates[:50]:
        prev = evt["data"]["previous_attributes"]["status"]
        assert evt["data"]["object"]["status"] != prev
    created = [e for e in store.all("event") if e["type"] == "invoice.created"]
    assert all(e["data"]["object"]["status"] == "draft" for e in created)
    assert {e["object"] for e in store.all("event")} == {"event"}
    assert all("account" not in e for e in store.all("event"))


def test_a_charges_refunds_follow_each_other_in_time_and_never_pass_its_amount() -> None:
    """As in Stripe: a second refund of a charge comes after the first, so the charge's newest state holds
    every refund; a history where it went back in time made the projection's tests of failed refunds (whose
    refunded amount falls) judge a refund as taken back. Live activity keeps to it too."""
    sim = SimServer(clock=SimClock(NOW))
    account = sim.create_account(customers=30, months=12, seed=104, currencies=("usd", "eur", "jpy"))
    state = sim.state  # a history whose one charge refunded twice once had its second refund back in time
    store = state.accounts[account.id].test
    rng = random.Random(0)
    for step in range(20 * 24):
        tick(state, rng, NOW + step * 3600)
    refunds_of: dict[str, list[dict]] = {}
    for refund in store.objects["refund"].values():
        refunds_of.setdefault(refund["charge"], []).append(refund)
    assert any(len(refunds) > 1 for refunds in refunds_of.values()), "no charge refunded twice: nothing tested"
    for charge_id, refunds in refunds_of.items():
        charge = store.objects["charge"][charge_id]
        assert all(r["amount"] > 0 for r in refunds)
        assert sum(r["amount"] for r in refunds) == charge["amount_refunded"] <= charge["amount"]
        states = [state_time for state_time, _ in store.versions[charge_id]]
        assert states == sorted(states), f"{charge_id}'s states go back in time"
        assert store.versions[charge_id][-1][1]["amount_refunded"] == charge["amount_refunded"]


def test_card_numbers_in_free_text_and_card_details() -> None:
    store = next(iter(_build(400, 4).accounts.values())).test
    texts = [str(c.get("description")) + str(c.get("metadata"))
             for kind in ("customer", "charge") for c in store.objects[kind].values()]
    pans = [m for t in texts for m in re.findall(r"\b\d{16}\b", t)]
    assert pans and all(_luhn_ok(p) for p in pans)
    card = store.all("charge")[0]["payment_method_details"]["card"]
    assert {"brand", "last4", "exp_month", "exp_year", "fingerprint"} <= set(card)


def test_live_tick_adds_activity_as_clock_moves() -> None:
    state = _build(50, 6)
    store = next(iter(state.accounts.values())).test
    before = len(store.objects["event"])
    rng = random.Random(0)
    for step in range(40 * 24):
        tick(state, rng, NOW + step * 3600)
    assert len(store.objects["event"]) > before + 500
    assert max(e["created"] for e in store.all("event")) > NOW + 39 * 86400
    renewed = [e for e in store.all("event") if e["type"] == "invoice.created"
               and e["data"]["object"]["billing_reason"] == "subscription_cycle"
               and e["created"] > NOW]
    assert renewed


async def test_live_activity_runs_on_the_server() -> None:
    clock = SimClock(NOW)
    async with SimServer(seed=3, clock=clock) as sim:
        info = sim.create_account(customers=5)
        store = sim.state.accounts[info.id].test
        before = len(store.objects["event"])
        sim.start_live_activity(200)
        try:
            async def fifty_more() -> bool:
                return len(store.objects["event"]) >= before + 50
            await wait_for(fifty_more, timeout_s=5, what="50 events of live activity")
        finally:
            await sim.stop_live_activity()
        assert len(store.objects["event"]) >= before + 50


def test_a_standalone_simulator_keeps_its_accounts_out_of_the_garbage_collector() -> None:
    """Run standalone (the benchmarks' and the local stack's simulator), an account's history is frozen out of the
    collector once made: a full collection walking every account's objects paused the simulator for a second or
    more in the middle of a benchmark's import, which Stripe's latency never does. In a test's process it is not."""
    def collected(sim: SimServer) -> bool:  # whether the collector still walks the account's objects
        account = sim.create_account(customers=30).id
        charge = sim.state.accounts[account].store(False).all("charge")[0]
        return any(o is charge for o in gc.get_objects())

    try:
        assert collected(SimServer(clock=SimClock(NOW)))
        assert not collected(SimServer(clock=SimClock(NOW), freeze_accounts=True))
    finally:
        gc.unfreeze()


def test_migrated_customers_come_in_one_burst_and_leave_the_rest_of_the_history_as_it_was() -> None:
    """A bulk migration (the importer's burst case): every migrated customer, and the subscription each one starts,
    is created within `migration_s` seconds halfway through the window, and the same seed's other customers are
    the same objects at the same times as without it (the benchmarks' accounts keep their histories)."""
    def build(migrated: int) -> dict[str, dict]:
        state = SimState(SimClock(NOW), 7)
        account = state.add_account("2024-06-20", seed=7)
        generate(Book(state, account), GeneratorConfig(customers=50, migrated_customers=migrated, migration_s=30),
                 NOW)
        return account.test.objects

    plain, migrated = build(0), build(400)
    assert {k: c["created"] for k, c in plain["customer"].items()} == {
        k: c["created"] for k, c in migrated["customer"].items() if k in plain["customer"]}
    new = [c for k, c in migrated["customer"].items() if k not in plain["customer"]]
    assert len(new) == 400
    start = NOW - 12 * MONTH
    burst_at = start + (NOW - start) // 2
    assert {c["created"] for c in new} <= set(range(burst_at, burst_at + 30))
    new_ids = {c["id"] for c in new}
    first_subscription: dict[str, int] = {}
    for sub in migrated["subscription"].values():
        if sub["customer"] in new_ids:
            first_subscription[sub["customer"]] = min(sub["created"], first_subscription.get(sub["customer"], NOW))
    assert len(first_subscription) > 300  # 12 % pay one-off
    assert set(first_subscription.values()) <= set(range(burst_at, burst_at + 60))  # with its customer, in the burst


def test_a_bad_migration_is_refused_and_makes_no_account() -> None:
    sim = SimServer(clock=SimClock(NOW))
    for bad in ({"migrated_customers": -1}, {"migration_s": 0}, {"migration_s": True}, {"migration_s": "60"},
                {"live_migrated_customers": 1.5}, {"currencies": []}, {"currencies": "usd"},
                {"migration_at": 1.0}, {"migration_at": "0.5"}):
        try:
            sim.create_account(**bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"{bad} accepted")
    assert not sim.state.accounts
    try:
        GeneratorConfig(migration_s=0)
    except ValueError:
        pass
    else:
        raise AssertionError("a migration of 0 s accepted")
