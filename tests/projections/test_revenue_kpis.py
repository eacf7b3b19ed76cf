"""The revenue KPIs (ARR, ARPA, retention, quick ratio, LTV, trials, cohorts, failed-payment recovery) against
values computed by hand — in Python, from the simulator's own objects and their history, not from our tables."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

import asyncpg
import pytest

from plumbing.settings import ReaderSettings
from projections.projector.store import PostgresProjectionStore
from projections.read.client import Level, RevenueReader
from stack import postgres
from stack.up import Platform
from stripe_sim import CURRENT_VERSION, SimServer
from stripe_sim.ground_truth import month_ends, subscription_mrr
from stripe_sim.model import Store
from tests.conftest import TEST_DATABASE
from tests.helpers import SIM_NOW, pinned_sim_clock
from tests.projections.support import apply_all, history_envelopes, reader_credentials

pytestmark = pytest.mark.integration
TENANT = "tenant_kpis"
EXACT = Fraction(1, 10**6)  # the views round ratios to six decimals


@dataclass
class World:
    reader: RevenueReader
    store: Store  # the simulator's objects, with every version they had
    truth: dict[str, Any]  # the simulator's ground truth (ARR, net retention and quick ratio among it)

    async def rows(self, sql: str) -> list[dict[str, Any]]:
        return await self.reader.run_sql(TENANT, Level.SUMMARY, sql)


@pytest.fixture(scope="module")
async def world(platform: Platform, clean_database: str) -> AsyncIterator[World]:
    pool = await asyncpg.create_pool(clean_database, min_size=1, max_size=3)
    projection = PostgresProjectionStore(pool, "kpi-test")
    async with SimServer(seed=4711, clock=pinned_sim_clock()) as sim:
        account = sim.create_account(api_version=CURRENT_VERSION, customers=80, months=12)
        delete_two_customers_without_subscriptions(sim, account.id)
        envelopes = history_envelopes(sim, account.id, TENANT)
        await apply_all(projection, envelopes)
        store = sim.state.accounts[account.id].store(False)
        truth = sim.ground_truth(account.id)
    reader = RevenueReader(ReaderSettings(dsn=postgres.reader_dsn(platform.cluster, TEST_DATABASE)),  # type: ignore[arg-type]
                           reader_credentials(pool))
    yield World(reader, store, truth)
    await reader.close()
    await pool.close()


def delete_two_customers_without_subscriptions(sim: SimServer, account_id: str) -> None:
    """Customers who only ever paid one-off charges, deleted 40 days after they were created: the customer count
    must drop then, and nothing else changes (no subscription is cancelled)."""
    book = sim.book(account_id)
    subscribed = {s["customer"] for s in book.store.objects["subscription"].values()}
    loners = [c for c in book.store.objects["customer"].values()
              if c["id"] not in subscribed and c["created"] + 40 * 86400 < SIM_NOW]
    assert len(loners) >= 2
    for customer in loners[:2]:
        book.delete_customer(customer["id"], customer["created"] + 40 * 86400)


def month(label: str) -> str:
    return f"{label}-01"


def close(ours: Any, truth: Fraction | None) -> bool:
    """Our figure (decimal text, rounded to six places) equals the hand-computed fraction, or both are absent."""
    if ours is None or truth is None:
        return ours is None and truth is None
    return abs(Fraction(Decimal(str(ours))) - truth) <= EXACT * max(1, abs(truth))


def customer_mrr(store: Store) -> tuple[list[str], list[dict[tuple[str, str], Fraction]]]:
    """Each month end's MRR per (customer, currency), from the simulator's subscription histories."""
    subs = list(store.objects["subscription"].values())
    ends = month_ends(min(s["created"] for s in subs), SIM_NOW)
    series = []
    for _, at in ends:
        mrr: dict[tuple[str, str], Fraction] = defaultdict(Fraction)
        for sub in subs:
            state = store.state_at(sub["id"], at)
            if state is not None:
                mrr[(state["customer"], state["currency"])] += subscription_mrr(state)
        series.append(dict(mrr))
    return [label for label, _ in ends], series


def ratio(numerator: Fraction, denominator: Fraction) -> Fraction | None:
    return None if denominator == 0 else numerator / denominator


async def test_arr_arpa_retention_quick_ratio_and_ltv_match_the_hand_computed_values(world: World) -> None:
    labels, series = customer_mrr(world.store)
    ours = {(r["month"], r["currency"]): r for r in await world.rows(
        "SELECT * FROM analytics.revenue_kpis WHERE NOT livemode")}
    seen_before: set[tuple[str, str]] = set()
    checked = {"quick_ratio": 0, "ltv": 0, "net_mrr_retention_12m": 0}
    for i, label in enumerate(labels):
        now, before = series[i], series[i - 1] if i else {}
        for currency in {c for _, c in now}:
            keys = {k for k in (*now, *before) if k[1] == currency}
            mrr = sum((now.get(k, Fraction(0)) for k in keys), Fraction(0))
            subscribers = sum(1 for k in keys if now.get(k, 0) > 0)
            moves: dict[str, Fraction] = defaultdict(Fraction)
            opening = Fraction(0)
            for k in keys:
                o, c = before.get(k, Fraction(0)), now.get(k, Fraction(0))
                opening += o
                kind = ("new" if k not in seen_before else "reactivation") if o == 0 and c > 0 else (
                    "churn" if o > 0 and c == 0 else "expansion" if c > o else "contraction" if c < o else None)
                if kind:
                    moves[kind] += c - o
            lost = -(moves["contraction"] + moves["churn"])
            arpa = ratio(mrr, Fraction(subscribers))
            churn_rate = ratio(lost, opening)
            row = ours[(month(label), currency)]
            assert close(row["arr"], 12 * mrr) and row["subscribers"] == subscribers and close(row["arpa"], arpa)
            assert close(row["gross_mrr_retention"], ratio(opening - lost, opening))
            assert close(row["net_mrr_retention"], ratio(opening + moves["expansion"] - lost, opening))
            assert close(row["quick_ratio"], ratio(moves["new"] + moves["expansion"] + moves["reactivation"], lost))
            ltv = None if arpa is None or not churn_rate else arpa / churn_rate
            assert close(row["ltv"], ltv), f"{label} {currency}: LTV {row['ltv']} vs {ltv}"
            if i >= 12:
                base = {k: v for k, v in series[i - 12].items() if k[1] == currency and v > 0}
                then = sum(base.values(), Fraction(0))
                assert close(row["net_mrr_retention_12m"], ratio(sum((now.get(k, Fraction(0)) for k in base), Fraction(0)), then))
                assert close(row["gross_mrr_retention_12m"],
                             ratio(sum((min(now.get(k, Fraction(0)), v) for k, v in base.items()), Fraction(0)), then))
                checked["net_mrr_retention_12m"] += 1
            checked["quick_ratio"] += row["quick_ratio"] is not None
            checked["ltv"] += row["ltv"] is not None
        seen_before |= {k for k, v in now.items() if v > 0}
    assert all(checked.values()), f"the simulated year exercises every figure: {checked}"


async def test_trials_and_their_conversion_match_the_simulators_subscriptions(world: World) -> None:
    truth: dict[str, dict[str, int]] = defaultdict(lambda: {"trial_starts": 0, "converted": 0, "still_trialing": 0})
    for sub in world.store.objects["subscription"].values():
        start = sub.get("start_date") or sub["created"]
        if not sub.get("trial_end") or sub["trial_end"] <= start:
            continue
        label = datetime.fromtimestamp(sub.get("trial_start") or start, timezone.utc).strftime("%Y-%m")
        converted = any(state["status"] == "active" and t >= sub["trial_end"]
                        for t, state in world.store.versions[sub["id"]])
        truth[label]["trial_starts"] += 1
        truth[label]["converted"] += converted
        truth[label]["still_trialing"] += not converted and sub["status"] == "trialing"
    ours = {r["month"][:7]: r for r in await world.rows("SELECT * FROM analytics.trial_conversions WHERE NOT livemode")}
    assert truth and set(ours) == set(truth)
    for label, expected in truth.items():
        row = ours[label]
        assert {k: row[k] for k in expected} == expected, label
        ended = expected["trial_starts"] - expected["still_trialing"]
        assert close(row["trial_conversion_rate"], ratio(Fraction(expected["converted"]), Fraction(ended)))
    assert sum(t["converted"] for t in truth.values()) > 0


async def test_signup_cohorts_retain_as_the_simulators_customers_did(world: World) -> None:
    labels, series = customer_mrr(world.store)
    paying = [{c for (c, _), v in month_mrr.items() if v > 0} for month_mrr in series]
    cohort_of: dict[str, int] = {}
    for i, customers in enumerate(paying):
        for customer in customers:
            cohort_of.setdefault(customer, i)
    ours = {(r["cohort"][:7], r["months_since"]): r for r in await world.rows(
        "SELECT * FROM analytics.cohort_logo_retention WHERE NOT livemode") if r["month"][:7] <= labels[-1]}
    expected = {}
    for c in set(cohort_of.values()):
        members = {cus for cus, k in cohort_of.items() if k == c}
        for i in range(c, len(labels)):
            expected[(labels[c], i - c)] = (len(members), len(members & paying[i]))
    assert set(ours) == set(expected)
    assert all((ours[k]["customers"], ours[k]["retained"]) == v for k, v in expected.items())
    mrr_rows = await world.rows("SELECT * FROM analytics.cohort_mrr_retention WHERE NOT livemode AND months_since = 3 "
                                f"AND month <= '{labels[-1]}-01'")
    for row in mrr_rows:
        c = labels.index(row["cohort"][:7])
        members = {cus for cus, k in cohort_of.items() if k == c}
        start = sum((v for (cus, cur), v in series[c].items() if cus in members and cur == row["currency"]), Fraction(0))
        then = sum((v for (cus, cur), v in series[c + 3].items() if cus in members and cur == row["currency"]), Fraction(0))
        assert close(row["starting_mrr"], start) and close(row["mrr"], then)
        assert close(row["mrr_retention"], ratio(then, start))
    assert mrr_rows


async def test_failed_payment_recovery_matches_the_simulators_invoices(world: World) -> None:
    truth: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for inv in world.store.objects["invoice"].values():
        failed = inv["amount_due"] > 0 and (inv["attempt_count"] > 1 or (
            inv["attempted"] and inv["status"] in ("open", "uncollectible")))
        if failed:
            key = (datetime.fromtimestamp(inv["created"], timezone.utc).strftime("%Y-%m-01"), inv["currency"])
            paid = inv["status"] == "paid"
            truth[key][0] += 1
            truth[key][1] += paid
            truth[key][2] += inv["amount_due"]
            truth[key][3] += inv["amount_paid"] if paid else 0
    ours = {(r["month"], r["currency"]): r for r in await world.rows(
        "SELECT * FROM analytics.failed_payment_recovery WHERE NOT livemode")}
    assert truth and set(ours) == set(truth)
    for key, (failed, recovered, failed_amount, recovered_amount) in truth.items():
        row = ours[key]
        assert (row["failed_invoices"], row["recovered_invoices"], row["failed_amount"], row["recovered_amount"]) == (
            failed, recovered, failed_amount, recovered_amount), key
    assert sum(v[1] for v in truth.values()) > 0, "the simulated dunning recovers some invoices"


async def test_the_kpis_question_agrees_with_the_simulators_ground_truth(world: World) -> None:
    """What the demo prints beside MRR: ARR, net MRR retention and quick ratio, through the `kpis` question."""
    months = sorted(world.truth["kpis"])[1:]
    compared = 0
    for label in months:
        rows = await world.reader.ask(TENANT, Level.SUMMARY, "kpis", livemode=False, month=label)
        ours = {r["currency"]: r for r in rows}
        for currency, expected in world.truth["kpis"][label].items():
            row = ours[currency]
            assert abs(float(row["arr"]) - expected["arr"]) < 0.01, (label, currency)
            for name in ("net_mrr_retention", "quick_ratio"):
                assert (row[name] is None) == (expected[name] is None), (label, currency, name)
                if expected[name] is not None:
                    assert abs(float(row[name]) - expected[name]) <= 1e-6, (label, currency, name)
            compared += 1
    assert compared >= 12


def subscriber_spans(store: Store) -> list[tuple[int, int | None]]:
    """Each customer's spans of paying (MRR > 0 in any currency), in seconds, from the subscriptions' histories."""
    by_customer: dict[str, list[str]] = defaultdict(list)
    for sub in store.objects["subscription"].values():
        by_customer[sub["customer"]].append(sub["id"])
    spans: list[tuple[int, int | None]] = []
    for subs in by_customer.values():
        times = sorted({t for sub in subs for t, _ in store.versions[sub]})
        start = None
        for t in times:
            paying = sum((subscription_mrr(store.state_at(sub, t)) for sub in subs), Fraction(0)) > 0
            if paying and start is None:
                start = t
            elif not paying and start is not None:
                spans.append((start, t))
                start = None
        if start is not None:
            spans.append((start, None))
    return spans


async def test_stripes_rolling_30_day_subscriber_churn_matches_the_simulator(world: World) -> None:
    spans = subscriber_spans(world.store)
    rows = {r["day"]: r for r in await world.rows("SELECT * FROM analytics.subscriber_churn_30d WHERE NOT livemode")}
    window = 30 * 86_400
    checked = 0
    for day in sorted(rows):
        end = int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp()) + 86_400
        if end > SIM_NOW:
            break
        churned = sum(1 for s, e in spans if e is not None and end - window < e <= end)
        active = sum(1 for s, e in spans if s <= end - window and (e is None or e > end - window))
        new = sum(1 for s, e in spans if end - window < s <= end)
        row = rows[day]
        assert (row["churned_30d"], row["active_30d_ago"], row["new_30d"]) == (churned, active, new), day
        assert close(row["subscriber_churn_rate_30d"], ratio(Fraction(churned), Fraction(active + new)))
        checked += churned > 0
    assert checked > 10, "the simulated year has churn in many 30-day windows"


async def test_customers_beside_subscribers_match_the_simulators_customer_objects(world: World) -> None:
    """Every customer object existing at a month end (deleted ones out from their deletion on), those created
    in the month, and the paying ones (the ground truth's subscribers) — counted from the simulator's objects."""
    customers = list(world.store.objects["customer"].values())
    ends = month_ends(min(c["created"] for c in customers), SIM_NOW)
    ours = {r["month"][:7]: r for r in await world.rows("SELECT * FROM analytics.customer_counts WHERE NOT livemode")}
    previous_end = 0
    deleted_seen = 0
    for label, at in ends:
        alive = [c for c in customers if c["created"] <= at and not (world.store.state_at(c["id"], at) or {}).get("deleted")]
        deleted_seen += sum(1 for c in customers if c["created"] <= at) - len(alive)
        new = sum(1 for c in customers if previous_end < c["created"] <= at)
        subscribers = world.truth["subscribers"].get(label, {}).get("active", 0)
        row = ours[label]
        assert (row["customers"], row["new_customers"], row["subscribers"]) == (len(alive), new, subscribers), label
        assert close(row["paying_share"], ratio(Fraction(subscribers), Fraction(len(alive))))
        previous_end = at
    assert deleted_seen, "the simulated year deletes some customers, so deletion is exercised"
    assert any(r["customers"] > r["subscribers"] for r in ours.values()), "some customers do not pay"
    asked = await world.reader.ask(TENANT, Level.SUMMARY, "customers", livemode=False)
    assert [(r["month"], r["customers"], r["subscribers"]) for r in asked] == [
        (r["month"], r["customers"], r["subscribers"]) for r in sorted(ours.values(), key=lambda r: r["month"])]
