"""A subscription's MRR history from its update events: the state each event shows, and the state before it
(`previous_attributes`) when that one can be derived — never a guessed one, never the event lost for it."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from ingestor.envelope.discounts import Expanded, with_expanded
from projections.handlers.writes import STATE_COLUMNS, writes_for
from projections.projector.store import PostgresProjectionStore
from schemas import Envelope, Source
from stripe_sim.objects import template
from stripe_sim.render import VERSIONS, render_event
from tests.projections.support import bind_tenant

BASIL = "2025-03-31.basil"
START = int(datetime(2025, 4, 10, tzinfo=timezone.utc).timestamp())
UPDATED = int(datetime(2025, 5, 12, tzinfo=timezone.utc).timestamp())
MRR = STATE_COLUMNS["subscriptions"].index("mrr")


def subscription(**fields: Any) -> dict[str, Any]:
    """An active $100/month basil subscription (Stripe's example subscription and item), periods on the item."""
    price = {**template("price"), "unit_amount": 10_000, "unit_amount_decimal": "10000"}
    plan = {"id": price["id"], "object": "plan", "amount": 10_000, "amount_decimal": "10000", "currency": "usd",
            "interval": "month", "interval_count": 1, "billing_scheme": "per_unit", "usage_type": "licensed"}
    item = {**template("subscription_item"), "price": price, "plan": plan, "quantity": 1, "discounts": [],
            "current_period_start": UPDATED - 2 * 86_400, "current_period_end": UPDATED + 28 * 86_400}
    return {**template("subscription"), "id": "sub_hist", "customer": "cus_hist", "status": "active",
            "created": START, "start_date": START, "trial_end": None, "trial_start": None, "cancel_at": None,
            "cancel_at_period_end": False, "canceled_at": None, "ended_at": None, "discounts": [],
            "items": {"object": "list", "data": [item], "has_more": False}, **fields}


def half_off_forever() -> dict[str, Any]:
    """The discount as the write path fills it in (basil: the coupon embedded in the discount)."""
    coupon = {**template("coupon"), "id": "HALF", "duration": "forever", "percent_off": 50,
              "applies_to": None}
    return {**{k: v for k, v in template("discount").items() if k != "source"}, "id": "di_old",
            "subscription": "sub_hist", "coupon": coupon}


def event(event_id: str, event_type: str, created: int, obj: dict[str, Any], tenant: str = "t",
          previous: dict[str, Any] | None = None, source: Source = Source.WEBHOOK) -> Envelope:
    data: dict[str, Any] = {"object": obj} | ({"previous_attributes": previous} if previous is not None else {})
    payload = {"id": event_id, "object": "event", "type": event_type, "created": created, "livemode": False,
               "api_version": BASIL, "data": data}
    return Envelope(tenant, event_id, event_type, "subscription", obj["id"],
                    datetime.fromtimestamp(created, timezone.utc), datetime.now(timezone.utc), source, False,
                    BASIL, None, json.dumps(payload))


def removal(tenant: str = "t") -> Envelope:
    """Basil: the discount removed; `previous_attributes` names it by id, as Stripe sends it."""
    return event("evt_removed", "customer.subscription.updated", UPDATED, subscription(), tenant,
                 previous={"discounts": ["di_old"]})


def test_removing_a_discount_writes_the_new_state_and_no_guessed_state_before() -> None:
    """The lost update: the state before (a discount known by id) was underivable and failed the whole event."""
    writes = writes_for(removal())
    assert writes.states[0].values[MRR] == 10_000
    assert [(v.state_event_id, v.mrr) for v in writes.versions] == [("evt_removed", Decimal(10_000))]
    assert writes.health == []  # what every removal leaves (Stripe never shows a removed discount again): not named


def test_a_state_before_that_can_be_derived_is_still_written() -> None:
    two_seats = {"object": "list", "data": [{**subscription()["items"]["data"][0], "quantity": 2}], "has_more": False}
    writes = writes_for(event("evt_seats", "customer.subscription.updated", UPDATED, subscription(),
                              previous={"items": two_seats}))
    period_start = subscription()["items"]["data"][0]["current_period_start"]
    assert [(v.state_event_id, v.state_time, v.mrr) for v in writes.versions] == [
        ("evt_seats", UPDATED * 1000, Decimal(10_000)),
        ("evt_seats:before", START * 1000, Decimal(20_000)),  # from its start, as a snapshot of that moment
        ("evt_seats:before", period_start * 1000, Decimal(20_000))]  # and since its period began


def test_a_hostile_amount_in_previous_attributes_is_refused_at_once_and_the_update_still_counts() -> None:
    item = {**subscription()["items"]["data"][0]}
    item["price"] = {**item["price"], "unit_amount": None, "unit_amount_decimal": "1e-1000000000"}
    writes = writes_for(event("evt_evil", "customer.subscription.updated", UPDATED, subscription(),
                              previous={"items": {"object": "list", "data": [item]}}))
    assert [(v.state_event_id, v.mrr) for v in writes.versions] == [("evt_evil", Decimal(10_000))]
    assert [(row.event_id, row.reason) for row in writes.health] == [("evt_evil", "UnreadableObjectError")]


def test_a_state_before_whose_tiered_price_cannot_be_read_is_named_in_health_not_left_to_the_snapshot() -> None:
    """An upgrade from a tiered price whose tiers were not filled in (read without the key's Prices permission):
    the months before it showed the import's snapshot, the new price from the start, and health said nothing."""
    item = {**subscription()["items"]["data"][0]}
    item["price"] = {**item["price"], "id": "price_left", "billing_scheme": "tiered", "tiers_mode": "graduated",
                     "unit_amount": None, "unit_amount_decimal": None}
    writes = writes_for(event("evt_moved", "customer.subscription.updated", UPDATED, subscription(),
                              previous={"items": {"object": "list", "data": [item]}}))
    assert [(v.state_event_id, v.mrr) for v in writes.versions] == [("evt_moved", Decimal(10_000))]  # it counts
    row, = writes.health
    assert (row.tenant_id, row.event_id) == ("t", "evt_moved")
    assert "the state before this update cannot be read" in row.message and "price.tiers are needed" in row.message
    again, = writes_for(event("evt_moved", "customer.subscription.updated", UPDATED, subscription(),
                              previous={"items": {"object": "list", "data": [item]}})).health
    assert again == row  # the same key: counted once, however often the event is applied or replayed


@pytest.mark.integration
async def test_a_removed_discount_shows_as_expansion_and_the_full_mrr(pool: asyncpg.Pool) -> None:
    tenant = f"hist_{uuid.uuid4().hex[:8]}"
    store = PostgresProjectionStore(pool, "history-test")
    created = event("evt_created", "customer.subscription.created", START,
                    subscription(discounts=[half_off_forever()]), tenant)
    for envelope in (created, removal(tenant)):
        await store.apply([(tenant, envelope.event_id, writes_for(envelope))], {})
    async with pool.acquire() as conn:
        await bind_tenant(conn, tenant)
        mrr = await conn.fetchval("SELECT mrr FROM projection.subscriptions WHERE tenant_id = $1", tenant)
        months = {r["month"]: r for r in await conn.fetch(
            "SELECT * FROM projection.mrr_movements WHERE tenant_id = $1 AND currency = 'usd'", tenant)}
    assert mrr == 10_000
    april, may = months[date(2025, 4, 1)], months[date(2025, 5, 1)]
    assert (april["new_mrr"], april["closing_mrr"]) == (5_000, 5_000)
    assert (may["opening_mrr"], may["expansion_mrr"], may["closing_mrr"]) == (5_000, 5_000, 10_000)
    assert Decimal(months[max(months)]["closing_mrr"]) == 10_000


def at(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=timezone.utc).timestamp())


JAN_10, PERIOD = at(2025, 1, 10), (at(2025, 5, 10), at(2025, 6, 10))
MONTH_ENDS = [at(2025, month + 1, 1) * 1000 - 1 for month in range(1, 6)]  # January to May


def in_period(status: str, seats: int = 1, period: tuple[int, int] = PERIOD, **fields: Any) -> dict[str, Any]:
    """The subscription started on January 10th in `status` with `seats`, its current period `period` (May 10th to
    June 10th)."""
    sub = subscription(status=status, created=JAN_10, start_date=JAN_10, **fields)
    sub["items"]["data"][0].update(current_period_start=period[0], current_period_end=period[1], quantity=seats)
    return sub


def imported(when: int, obj: dict[str, Any]) -> Envelope:
    """The import's snapshot of the subscription (its history older than the events window derived from it)."""
    return event("snap_1", "customer.subscription.snapshot", when, obj, source=Source.IMPORT)


def as_of(envelope: Envelope, version: str) -> Envelope:
    """The envelope as an account pinned to `version` is sent it: the object and its `previous_attributes` as the
    simulator renders that version (the events above are written in its stored shape, periods on the items)."""
    payload = render_event(json.loads(envelope.payload), version)
    return dataclasses.replace(envelope, api_version=version, payload=json.dumps(payload))


def mrr_at_month_ends(envelopes: list[Envelope]) -> list[float]:
    """Each month end's MRR as the views read it: the latest version by time, then rank (then event id); of versions
    with one key (time, rank, event id), the first written, as `ON CONFLICT DO NOTHING` keeps it."""
    stored: dict[tuple[int, int, str], Any] = {}
    for version in (v for e in envelopes for v in writes_for(e).versions):
        stored.setdefault((version.state_time, version.state_rank, version.state_event_id), version)
    versions = [stored[key] for key in sorted(stored)]
    return [float([v for v in versions if v.state_time <= end][-1].mrr) for end in MONTH_ENDS]


def one_seat(seats: int = 1, period: tuple[int, int] = PERIOD) -> dict[str, Any]:
    return {"object": "list", "data": [in_period("active", seats, period)["items"]["data"][0]], "has_more": False}


TRIAL = {"trial_start": JAN_10, "trial_end": at(2025, 3, 1)}
SINCE_APRIL_20 = (at(2025, 4, 20), at(2025, 5, 20))


@pytest.mark.parametrize(("case", "envelopes", "truth"), [
    # Renewed on May 10th unpaid (past due), then unpaid, then paid: active all along by month ends. The state before
    # the last update (unpaid) outranked the earlier ones at the start: 0 from January to April.
    ("unpaid, then paid", [
        event("evt_due", "customer.subscription.updated", PERIOD[0] + 3600, in_period("past_due"),
              previous={"status": "active"}),
        event("evt_unpaid", "customer.subscription.updated", at(2025, 5, 20), in_period("unpaid"),
              previous={"status": "past_due"}),
        event("evt_paid", "customer.subscription.updated", at(2025, 5, 25), in_period("active"),
              previous={"status": "unpaid"}),
        imported(at(2025, 6, 1), in_period("active"))], [10_000.0] * 5),
    # A seat added while past due: the snapshot's two seats stood from the start to the current period's start.
    ("upgraded while past due", [
        event("evt_due", "customer.subscription.updated", PERIOD[0] + 3600, in_period("past_due"),
              previous={"status": "active"}),
        event("evt_seat", "customer.subscription.updated", at(2025, 5, 15), in_period("past_due", seats=2),
              previous={"items": one_seat()}),
        imported(at(2025, 5, 30), in_period("past_due", seats=2))], [10_000.0] * 4 + [20_000.0]),
    # Active: the state before counted from the current period's start only, two seats from the start until then.
    ("upgraded while active", [
        event("evt_seat", "customer.subscription.updated", at(2025, 5, 15), in_period("active", seats=2),
              previous={"items": one_seat()}),
        imported(at(2025, 5, 30), in_period("active", seats=2))], [10_000.0] * 4 + [20_000.0]),
    # A trial until March 1st, then a seat added: nothing during the trial, one seat from its end.
    ("upgraded after a trial", [
        event("evt_seat", "customer.subscription.updated", at(2025, 5, 15),
              in_period("active", seats=2, trial_start=JAN_10, trial_end=at(2025, 3, 1)),
              previous={"items": one_seat()}),
        imported(at(2025, 5, 30), in_period("active", seats=2, trial_start=JAN_10, trial_end=at(2025, 3, 1)))],
     [0.0, 0.0, 10_000.0, 10_000.0, 20_000.0]),
    # A trial until March 1st, its first invoice unpaid (past due, then unpaid), paid on May 15th, only that event
    # left: at March 1st the state before gives "active from the trial end" and "unpaid since the period began",
    # which were one row (same time, rank and id): the database kept the first, active.
    ("unpaid from the trial's end, then paid", [
        event("evt_paid", "customer.subscription.updated", at(2025, 5, 15),
              in_period("active", period=(at(2025, 3, 1), at(2025, 6, 1)), **TRIAL), previous={"status": "unpaid"}),
        imported(at(2025, 5, 30), in_period("active", period=(at(2025, 3, 1), at(2025, 6, 1)), **TRIAL))],
     [0.0, 0.0, 0.0, 0.0, 10_000.0]),
    # Its period began April 20th; a seat added May 5th whose proration failed (past due), paid May 8th: the state
    # before the payment, past due with two seats since April 20th, spoke for April.
    ("a seat added, its proration paid late", [
        event("evt_seat", "customer.subscription.updated", at(2025, 5, 5),
              in_period("past_due", 2, SINCE_APRIL_20), previous={"items": one_seat(1, SINCE_APRIL_20), "status": "active"}),
        event("evt_paid", "customer.subscription.updated", at(2025, 5, 8), in_period("active", 2, SINCE_APRIL_20),
              previous={"status": "past_due"}),
        imported(at(2025, 5, 15), in_period("active", 2, SINCE_APRIL_20))], [10_000.0] * 4 + [20_000.0]),
    ("seats cut, then past due, then paid", [
        event("evt_cut", "customer.subscription.updated", at(2025, 5, 5), in_period("active", 1, SINCE_APRIL_20),
              previous={"items": one_seat(3, SINCE_APRIL_20)}),
        event("evt_due", "customer.subscription.updated", at(2025, 5, 6), in_period("past_due", 1, SINCE_APRIL_20),
              previous={"status": "active"}),
        event("evt_paid", "customer.subscription.updated", at(2025, 5, 12), in_period("active", 1, SINCE_APRIL_20),
              previous={"status": "past_due"}),
        imported(at(2025, 5, 15), in_period("active", 1, SINCE_APRIL_20))], [30_000.0] * 4 + [10_000.0]),
])
@pytest.mark.parametrize("version", VERSIONS)
def test_the_states_before_updates_older_than_the_events_window_give_each_month_end_its_mrr(
        case: str, envelopes: list[Envelope], truth: list[float], version: str) -> None:
    """Older than the events window, a subscription's history is its snapshot (now) and the states before the
    updates still listed: each month end's MRR is the truth, January to May, whatever the account's API version
    (a state before names its period at the top before basil, on the items since)."""
    envelopes = [as_of(envelope, version) for envelope in envelopes]
    for envelope in envelopes:  # no two rows one key: the database would keep the first alone
        keys = [(v.state_time, v.state_rank, v.state_event_id) for v in writes_for(envelope).versions]
        assert len(keys) == len(set(keys)), (case, envelope.event_id)
    assert mrr_at_month_ends(envelopes) == truth, case


def with_yearly_item(sub: dict[str, Any], since: int = JAN_10) -> dict[str, Any]:
    """`sub` with a $1,200 a year item beside its monthly one (basil: items may renew at different times), its year
    begun `since`."""
    price = {**template("price"), "id": "price_year", "unit_amount": 120_000, "unit_amount_decimal": "120000",
             "recurring": {**template("price")["recurring"], "interval": "year"}}
    plan = {"id": "price_year", "object": "plan", "amount": 120_000, "amount_decimal": "120000", "currency": "usd",
            "interval": "year", "interval_count": 1, "billing_scheme": "per_unit", "usage_type": "licensed"}
    year = {**template("subscription_item"), "id": "si_year", "price": price, "plan": plan, "quantity": 1,
            "discounts": [], "current_period_start": since, "current_period_end": since + 365 * 86_400}
    return {**sub, "items": {**sub["items"], "data": [*sub["items"]["data"], year]}}


APRIL_10 = (at(2025, 4, 10), at(2025, 5, 10))


@pytest.mark.parametrize(("case", "envelopes", "truth"), [
    # The yearly item removed May 5th, the monthly one renewed May 10th: the removal's state before (both items) had
    # no point at the monthly period's start (its period start is its earliest item's), the renewal's did, and spoke
    # for April with the monthly item alone.
    ("a yearly item removed, then the monthly renewed", [
        event("evt_drop", "customer.subscription.updated", at(2025, 5, 5), in_period("active", period=APRIL_10),
              previous={"items": with_yearly_item(in_period("active", period=APRIL_10))["items"]}),
        event("evt_renew", "customer.subscription.updated", at(2025, 5, 10) + 16, in_period("active"),
              previous={"items": in_period("active", period=APRIL_10)["items"]}),
        imported(at(2025, 6, 1) - 3600, in_period("active"))], [20_000.0] * 4 + [10_000.0]),
    # Unpaid since the monthly item's renewal on May 10th: a snapshot said unpaid since its earliest item's period
    # began (the yearly one's, January 20th): nothing from January to April.
    ("unpaid since the monthly renewal", [
        imported(at(2025, 6, 1) - 3600, with_yearly_item(in_period("unpaid"), since=at(2025, 1, 20)))],
     [20_000.0] * 4 + [0.0]),
])
def test_a_monthly_item_beside_a_yearly_one_gives_each_month_end_its_mrr(
        case: str, envelopes: list[Envelope], truth: list[float]) -> None:
    """Since basil a subscription's items may renew at different times: its period start (the earliest item's) is
    not when its latest renewal was."""
    assert mrr_at_month_ends(envelopes) == truth, case


def forever(coupon_id: str, percent_off: int) -> dict[str, Any]:
    return {**template("coupon"), "id": coupon_id, "name": coupon_id, "duration": "forever",
            "percent_off": percent_off, "amount_off": None, "currency": None, "applies_to": None}


def discount_of(discount_id: str, coupon: dict[str, Any], start: int) -> dict[str, Any]:
    return {**{k: v for k, v in template("discount").items() if k != "source"}, "id": discount_id,
            "subscription": "sub_hist", "coupon": coupon, "start": start, "end": None}


@pytest.mark.parametrize("version", ["2019-02-19", "2022-11-15", "2024-06-20"])
def test_a_coupon_switched_before_the_window_names_only_what_changed_and_the_months_before_keep_the_old_one(
        version: str) -> None:
    """Stripe names a nested hash by its changed keys only: the coupon left (half off, forever) comes as its id and
    percent_off, its duration the new one's. Laid over whole, the state before had half a coupon — unreadable, and the
    months before showed the new coupon (7,500 a month, not 5,000)."""
    half, quarter = forever("HALF", 50), forever("QUARTER", 25)
    old, new = discount_of("di_A", half, JAN_10), discount_of("di_B", quarter, at(2025, 5, 15))
    now = {**in_period("active"), "discount": new, "discounts": ["di_B"]}
    switch = as_of(event("evt_switch", "customer.subscription.updated", at(2025, 5, 15), now,
                         previous={"discount": old, "discounts": ["di_A"]}), version)
    payload = json.loads(switch.payload)
    named = payload["data"]["previous_attributes"]["discount"]
    assert named["coupon"] == {"id": "HALF", "name": "HALF", "percent_off": 50}  # as Stripe sends it
    filled = with_expanded(payload, Expanded(coupons={"HALF": half, "QUARTER": quarter}))  # as the write path does
    switch = dataclasses.replace(switch, payload=json.dumps(filled))
    snapshot = as_of(imported(at(2025, 5, 30), now), version)
    snapshot = dataclasses.replace(snapshot, payload=json.dumps(with_expanded(json.loads(snapshot.payload),
                                                                              Expanded(coupons={"QUARTER": quarter}))))
    assert writes_for(switch).health == []
    assert mrr_at_month_ends([switch, snapshot]) == [5_000.0] * 4 + [7_500.0]


def test_seats_cut_in_the_update_that_took_a_discount_away_are_named_in_health() -> None:
    """Basil names a removed discount by id only, and Stripe never shows it again: an update of the discounts alone
    is not named (every ordinary removal would be), but one that also cut seats lost them from the months before
    silently (the state before, three seats, unreadable for its discount)."""
    three = {"object": "list", "data": [{**subscription()["items"]["data"][0], "quantity": 3}], "has_more": False}
    cut = writes_for(event("evt_cut", "customer.subscription.updated", UPDATED, subscription(),
                           previous={"items": three, "discounts": ["di_old"]}))
    assert [(v.state_event_id, v.mrr) for v in cut.versions] == [("evt_cut", Decimal(10_000))]  # it counts
    row, = cut.health
    assert row.event_id == "evt_cut" and "di_old by id only" in row.message
    assert writes_for(removal()).health == []  # the discount alone: not named (documented)


@pytest.mark.parametrize("previous", [{"status": ["active"]}, {"status": {"a": 1}}, {"items": {"data": [5]}},
                                      {"trial_end": "soon"}])
def test_a_malformed_state_before_loses_only_itself_and_is_named(previous: dict[str, Any]) -> None:
    """A tenant signs its own webhooks: attributes before an update the reader did not foresee (a list for a status)
    raised TypeError, and the update itself was dead-lettered."""
    sub = subscription()
    obj = {**sub, "plan": sub["items"]["data"][0]["plan"], "quantity": 1}
    writes = writes_for(event("evt_odd", "customer.subscription.updated", UPDATED, obj, previous=previous))
    assert [(v.state_event_id, v.mrr) for v in writes.versions] == [("evt_odd", Decimal(10_000))]
    assert [row.event_id for row in writes.health] == ["evt_odd"]
    items_a_number = writes_for(event("evt_odd", "customer.subscription.updated", UPDATED, obj,
                                      previous={"items": {"data": 5}}))  # TypeError in the period's reading before
    assert items_a_number.versions[0].mrr == 10_000  # the legacy plan beside it is the state before


@pytest.mark.integration
async def test_a_nul_a_tenant_put_in_an_id_is_dropped_from_health_and_the_update_still_counts(pool: asyncpg.Pool) -> None:
    """PostgreSQL `text` refuses NUL: a coupon id with one, quoted by the health row of the state before, failed the
    batch, and the update was dead-lettered whole."""
    tenant = f"hist_{uuid.uuid4().hex[:8]}"
    coupon = {"id": "EVIL\x00", "object": "coupon", "duration": "forever", "percent_off": 50}
    update = event("evt_nul", "customer.subscription.updated", UPDATED, subscription(), tenant,
                   previous={"status": "past_due", "discounts": [{"id": "di_x", "object": "discount",
                                                                   "coupon": coupon}]})
    await PostgresProjectionStore(pool, "history-test").apply([(tenant, update.event_id, writes_for(update))], {})
    async with pool.acquire() as conn:
        await bind_tenant(conn, tenant)
        mrr = await conn.fetchval("SELECT mrr FROM projection.subscriptions WHERE tenant_id = $1", tenant)
    message = await pool.fetchval("SELECT message FROM public.dead_lettered_events WHERE tenant_id = $1", tenant)
    assert mrr == 10_000 and "EVIL" in message and "\x00" not in message


def test_a_seat_change_on_an_account_pinned_before_2017_05_25_is_read_from_its_legacy_plan_and_quantity() -> None:
    """Up to 2017-04-06 Stripe named an array by its changed elements only (`items: {data: [{id, quantity}]}`), which
    cannot be laid over: every seat change was refused, named in health, and the months before it showed the
    import's two seats from the start. The subscription's own `plan` and `quantity` beside it hold its one item."""
    legacy = "2016-07-06"
    seat = as_of(event("evt_seat", "customer.subscription.updated", at(2025, 5, 15), in_period("active", seats=2)),
                 legacy)
    payload = json.loads(seat.payload)
    assert payload["data"]["object"]["quantity"] == 2  # the legacy shape: plan and quantity at the top
    item_id = payload["data"]["object"]["items"]["data"][0]["id"]
    payload["data"]["previous_attributes"] = {"quantity": 1, "items": {"data": [{"id": item_id, "quantity": 1}]}}
    seat = dataclasses.replace(seat, payload=json.dumps(payload))
    assert writes_for(seat).health == []
    snapshot = as_of(imported(at(2025, 5, 30), in_period("active", seats=2)), legacy)
    assert mrr_at_month_ends([seat, snapshot]) == [10_000.0] * 4 + [20_000.0]
    two_items = {**payload, "data": {**payload["data"], "object": {**payload["data"]["object"], "plan": None}}}
    refused = writes_for(dataclasses.replace(seat, payload=json.dumps(two_items))).health  # no plan: not one item
    assert len(refused) == 1 and "changed elements only" in refused[0].message


@pytest.mark.parametrize("version", ["2019-02-19", "2019-10-17", BASIL])
def test_a_snapshot_counts_from_the_subscriptions_start_not_its_current_plans(version: str) -> None:
    """Before 2019-10-17 Stripe shows no `start_date`, and its `start` is when the current plan configuration began
    (a plan changed on March 15th): read as the subscription's start, January and February showed nothing."""
    sub = in_period("active")
    sub["items"]["data"][0]["created"] = at(2025, 3, 15)  # its plan last changed then
    snapshot = as_of(imported(at(2025, 5, 30), sub), version)
    shown = json.loads(snapshot.payload)["data"]["object"]
    assert ("start_date" in shown) is (version >= "2019-10-17")
    assert shown.get("start", at(2025, 3, 15)) == at(2025, 3, 15)
    assert mrr_at_month_ends([snapshot]) == [10_000.0] * 5
