"""A customer's own discount (`customer.discount`) in the MRR of its subscriptions that have none of their own.

Stripe: a subscription's discounts, "if not specified or empty, inherit the discount from the subscription's
customer". The customer's discount changes on the customer's events, which say nothing of its subscriptions, and the
two arrive in any order on different partitions: every order must give the same MRR history, never the subscription
at full price while its customer has 20% off for ever (what every figure showed before).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ingestor.envelope.build import envelope_for_event, is_read_resource
from projections.errors import UnknownObjectError
from projections.handlers import customer_discounts
from projections.handlers.customer_discounts import BASIS_UNKNOWN, DiscountState, StoredVersion, plan
from projections.handlers.mrr import (
    CustomerDiscountBasis,
    Line,
    customer_discount_basis,
    customer_forever_coupon,
    mrr_with_customer_discount,
)
from projections.handlers.writes import writes_for
from projections.projector.customer_join import CUSTOMER_LOCK_BUCKETS, PROBLEMS_TOPIC
from projections.projector.store import PostgresProjectionStore
from schemas import Envelope, Source
from schemas.stripe_objects import Coupon, UnreadableObjectError, read_customer, read_subscription
from stripe_sim.objects import template
from tests.projections.support import mrr_figures

V2019 = "2019-12-03"
CLOVER = "2025-09-30.clover"
JAN, MAR, MAY, JUL = (int(datetime(2025, m, 10, tzinfo=timezone.utc).timestamp()) for m in (1, 3, 5, 7))


def coupon(coupon_id: str = "TWENTY", products: list[str] | None = None, **terms: Any) -> dict[str, Any]:
    """A forever coupon as the write path fills it in: with its `applies_to` (None: every product)."""
    return {**template("coupon"), "id": coupon_id, "duration": "forever", "percent_off": 20, "amount_off": None,
            "applies_to": {"products": products} if products is not None else None, **terms}


def discount(on: dict[str, Any] | None) -> dict[str, Any] | None:
    """A customer's discount in a 2019 shape: its coupon embedded (`coupon`)."""
    if on is None:
        return None
    return {"id": "di_cus", "object": "discount", "customer": "cus_d", "subscription": None, "start": JAN, "end": None,
            "coupon": on}


def customer(with_discount: dict[str, Any] | None, customer_id: str = "cus_d") -> dict[str, Any]:
    return {**template("customer"), "id": customer_id, "currency": "usd", "discount": discount(with_discount)}


def subscription(quantity: int = 1, sub_id: str = "sub_d", own: dict[str, Any] | None = None,
                 product: str = "prod_pro", status: str = "active", customer_id: str = "cus_d") -> dict[str, Any]:
    """A $100/month subscription of `product` (2019 shape: `discount`, items with plans' prices)."""
    price = {**template("price"), "id": f"price_{product}", "product": product, "unit_amount": 10_000,
             "unit_amount_decimal": "10000", "currency": "usd",
             "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"}}
    item = {"id": f"si_{sub_id}", "object": "subscription_item", "price": price, "quantity": quantity}
    return {"id": sub_id, "object": "subscription", "customer": customer_id, "status": status, "currency": "usd",
            "created": JAN, "start_date": JAN, "trial_end": None, "cancel_at_period_end": False, "canceled_at": None,
            "ended_at": None, "current_period_start": JAN, "current_period_end": JAN + 30 * 86_400,
            "discount": {"id": "di_own", "object": "discount", "coupon": own} if own else None,
            "items": {"object": "list", "data": [item], "has_more": False}}


def envelope(event_id: str, event_type: str, created: int, obj: dict[str, Any], tenant: str = "t",
             source: Source = Source.WEBHOOK) -> Envelope:
    payload = {"id": event_id, "object": "event", "type": event_type, "created": created, "livemode": False,
               "api_version": V2019, "data": {"object": obj}}
    return Envelope(tenant, event_id, event_type, obj["object"], obj["id"],
                    datetime.fromtimestamp(created, timezone.utc), datetime.now(timezone.utc), source, False,
                    V2019, None, json.dumps(payload))


def history(tenant: str = "t") -> list[Envelope]:
    """Jan: subscribed at $100; Mar: the customer gets 20% off for ever; May: two seats; Jul: the discount removed."""
    return [
        envelope("evt_sub_jan", "customer.subscription.created", JAN, subscription(), tenant),
        envelope("evt_cus_mar", "customer.updated", MAR, customer(coupon()), tenant),
        envelope("evt_sub_may", "customer.subscription.updated", MAY, subscription(quantity=2), tenant),
        envelope("evt_cus_jul", "customer.updated", JUL, customer(None), tenant),
    ]


def discount_event(event_id: str, event_type: str, created: int, obj: dict[str, Any], tenant: str = "t",
                   version: str = V2019) -> Envelope:
    """A `customer.discount.*` event as the write path publishes it (`envelope_for_event`)."""
    event = {"id": event_id, "object": "event", "type": event_type, "created": created, "livemode": False,
             "api_version": version, "data": {"object": obj}}
    assert is_read_resource(event)
    return envelope_for_event(event, tenant, Source.WEBHOOK, datetime.now(timezone.utc))


def history_of_discount_events(tenant: str = "t") -> list[Envelope]:
    """The same history, the customer's discount changed by `customer.discount.*` events alone (as a version before
    discounts had ids renders them: no `id`)."""
    given = {k: v for k, v in discount(coupon()).items() if k != "id"}  # type: ignore[union-attr]
    return [
        envelope("evt_sub_jan", "customer.subscription.created", JAN, subscription(), tenant),
        discount_event("evt_dis_mar", "customer.discount.created", MAR, given, tenant),
        envelope("evt_sub_may", "customer.subscription.updated", MAY, subscription(quantity=2), tenant),
        discount_event("evt_dis_jul", "customer.discount.deleted", JUL, given, tenant),
    ]


# What that history is worth each month end (minor units): 100, 80 from March, 160 from May, 200 from July.
EXPECTED = {"2025-01": 10_000.0, "2025-02": 10_000.0, "2025-03": 8_000.0, "2025-04": 8_000.0, "2025-05": 16_000.0,
            "2025-06": 16_000.0, "2025-07": 20_000.0}


# --- reading (pure) ---------------------------------------------------------------------------------------------

def test_a_customers_discount_event_writes_the_customers_discount_and_nothing_else_of_it() -> None:
    """A `customer.discount.*` event holds the discount, not the customer: its e-mail and name are not overwritten."""
    given, switched, removed = history_of_discount_events()[1], discount_event(
        "evt_dis_apr", "customer.discount.updated", MAR + 1, discount(coupon("TEN", percent_off=10))  # type: ignore
    ), history_of_discount_events()[3]
    for envelope_, expected in ((given, "TWENTY"), (switched, "TEN"), (removed, None)):
        writes = writes_for(envelope_)
        assert not writes.states and not writes.versions and len(writes.customer_discounts) == 1
        row = writes.customer_discounts[0]
        assert (row.customer_id, row.state_time, row.state_event_id) == ("cus_d", envelope_.event_time.timestamp()
                                                                          * 1000, envelope_.event_id)
        assert (json.loads(row.coupon)["id"] if row.coupon else None) == expected
    # Ranked as the customer's updates: the same change as a `customer.updated` of the same second ties with it.
    assert given.object_id == "cus_d" and writes_for(given).customer_discounts[0].state_rank == \
        writes_for(envelope("evt_c", "customer.updated", MAR, customer(coupon()))).customer_discounts[0].state_rank


@pytest.mark.parametrize("names", [{"subscription": "sub_d"}, {"subscription_item": "si_d"}, {"invoice": "in_d"},
                                   {"customer": None}],
                         ids=["a subscription's", "an item's", "an invoice's", "no customer"])
def test_a_discount_event_not_about_a_customers_own_discount_is_not_read(names: dict[str, Any]) -> None:
    """Stripe has sent `customer.discount.*` for a subscription's discounts too: taken for the customer's, it would
    reduce every other subscription of the customer. Their changes come on the subscription's own events."""
    event = {"id": "evt_x", "object": "event", "type": "customer.discount.created", "created": MAR, "livemode": False,
             "data": {"object": {**discount(coupon()), **names}}}  # type: ignore[dict-item]
    assert not is_read_resource(event)


def test_a_discount_envelope_whose_object_is_not_its_customers_discount_is_refused() -> None:
    """What reaches the topic another way (a replay of an altered record) is dead-lettered, not taken for a discount
    of a customer it does not name."""
    other = discount_event("evt_dis", "customer.discount.created", MAR, discount(coupon()))  # type: ignore[arg-type]
    with pytest.raises(UnknownObjectError):
        writes_for(dataclasses.replace(other, object_id="cus_other"))
    with pytest.raises(UnknownObjectError):
        writes_for(dataclasses.replace(other, payload=json.dumps({"type": "charge.succeeded", "data": {"object": {
            "id": "ch_1", "object": "charge"}}})))


def test_a_customers_forever_discount_is_read_with_its_products() -> None:
    read = customer_forever_coupon(read_customer(customer(coupon(products=["prod_pro"]))))
    assert read is not None and read.percent_off == 20 and read.products == ("prod_pro",)


def test_a_customer_without_a_lasting_discount_has_no_coupon_for_mrr() -> None:
    assert customer_forever_coupon(read_customer(customer(None))) is None
    assert customer_forever_coupon(read_customer(customer(coupon(duration="repeating")))) is None


UNREADABLE = {
    "clover coupon by id": {"id": "di_cus", "object": "discount", "source": {"type": "coupon", "coupon": "TWENTY"}},
    "no coupon (stripe-mock's)": {"id": "di_cus", "object": "discount", "source": {"type": "coupon", "coupon": None}},
    "discount by id": "di_cus",
    "forever without applies_to": discount({k: v for k, v in coupon().items() if k != "applies_to"}),
    "a percent no coupon has": discount(coupon(percent_off=250, duration="once")),
}


@pytest.mark.parametrize("shape", list(UNREADABLE))
def test_a_customers_discount_that_cannot_be_read_is_kept_as_such_never_taken_for_none(shape: str) -> None:
    """The customer itself still counts (its e-mail, name); the discount is refused where it would reduce MRR."""
    writes = writes_for(envelope("evt_c", "customer.updated", MAR, {**customer(None), "discount": UNREADABLE[shape]}))
    assert writes.states and writes.customer_discounts[0].coupon is not None
    kept = json.loads(writes.customer_discounts[0].coupon)
    assert "customer cus_d: discount" in kept["unreadable"]
    assert kept["coupon_id"] == {"discount by id": None, "no coupon (stripe-mock's)": None,
                                 "a percent no coupon has": "TWENTY"}.get(shape, "TWENTY")
    with pytest.raises(UnreadableObjectError, match="customer cus_d: discount"):
        customer_forever_coupon(read_customer({**customer(None), "discount": UNREADABLE[shape]}))
    assert read_customer({**customer(None), "discount": UNREADABLE[shape]}).email is None  # the customer still reads


def test_an_amount_coupon_is_read_whatever_its_currency_and_refused_where_it_cannot_apply() -> None:
    """A customer's €5 off on a customer billed in USD: read (it is the customer's discount), and each subscription
    it would reduce keeps its MRR without it and names it, like a subscription's own coupon in another currency."""
    euros = customer_forever_coupon(read_customer(customer(coupon(percent_off=None, amount_off=500, currency="eur"))))
    assert euros is not None and euros.amount_off == 500
    joined = plan([DiscountState(2_000, 0, "evt_c", euros)], [version(1_000, "evt_s")])
    assert joined.current == {"sub": Decimal(10_000)} and "currency_options for usd" in str(joined.problems[0])


def test_only_a_subscription_without_discounts_of_its_own_takes_its_customers() -> None:
    assert customer_discount_basis(read_subscription(subscription())) is not None
    assert customer_discount_basis(read_subscription(subscription(own=coupon("ONCE", duration="once")))) is None
    assert customer_discount_basis(read_subscription(subscription(status="trialing"))) is None
    assert customer_discount_basis(read_subscription(subscription(status="canceled"))) is None


def test_a_customer_coupon_restricted_to_products_reduces_only_their_items() -> None:
    basis = CustomerDiscountBasis("sub", "usd", (Line("si_a", "prod_pro", Fraction(1)),
                                                 Line("si_b", "prod_basic", Fraction(1, 12))),
                                  (Fraction(10_000), Fraction(1_000)))
    restricted = Coupon("PRO", "forever", Fraction(50), None, None, applies_to_known=True, products=("prod_pro",))
    assert mrr_with_customer_discount(basis, restricted) == 6_000
    amount = Coupon("FIVE", "forever", None, 1_200, "usd", applies_to_known=True, products=("prod_basic",))
    # $12 off each yearly period of the basic item: $1 a month off its $10 month amount
    assert mrr_with_customer_discount(basis, amount) == 10_900


BASIS = CustomerDiscountBasis("sub", "usd", (Line("si", "prod", Fraction(1)),), (Fraction(10_000),))
HALF = Coupon("HALF", "forever", Fraction(50), None, None, applies_to_known=True)
TENTH = Coupon("TENTH", "forever", Fraction(10), None, None, applies_to_known=True)


def version(at: int, event_id: str, rank: int = 0, basis: Any = BASIS, mrr: int = 10_000) -> StoredVersion:
    return StoredVersion("sub", at, rank, event_id, "active", "usd", Decimal(mrr), None, basis)


def test_a_change_in_a_versions_own_millisecond_applies_to_it_and_adds_no_point() -> None:
    """Stripe's Checkout creates the customer's discount and the subscription in one second."""
    joined = plan([DiscountState(1_000, 0, "evt_c", HALF)], [version(1_000, "evt_s", rank=5)])
    assert joined.mrr == {("sub", 1_000, 5, "evt_s"): (Decimal(5_000), "evt_c")} and joined.added == []


def test_the_newest_customer_state_of_a_millisecond_decides_and_repeats_add_nothing() -> None:
    discounts = [DiscountState(2_000, 1, "evt_a", HALF), DiscountState(2_000, 2, "evt_b", None),  # removed at once
                 DiscountState(3_000, 0, "evt_c", TENTH), DiscountState(4_000, 0, "evt_d", TENTH)]  # the same again
    joined = plan(discounts, [version(1_000, "evt_s")])
    assert [(a.state_time, a.mrr) for a in joined.added] == [(3_000, Decimal(9_000))]


def test_a_state_naming_a_coupon_another_of_the_customers_states_read_takes_it_from_there() -> None:
    """Coupons never change: a state published before the write path filled coupons in (by id, or without its
    products) is read through the same coupon read in another state, not dropped."""
    discounts = [DiscountState(2_000, 0, "evt_a", HALF), DiscountState(2_500, 0, "evt_b", None),
                 DiscountState(3_000, 0, "evt_c", None, "names HALF by id only", "HALF"),
                 DiscountState(3_500, 0, "evt_d", None, "names GONE by id only", "GONE")]
    joined = plan(discounts, [version(1_000, "evt_s")])
    assert [(a.state_time, a.mrr) for a in joined.added] == [(2_000, 5_000), (2_500, 10_000), (3_000, 5_000)]
    assert [p.event_id for p in joined.problems] == ["evt_d"]  # a coupon no state read: not received


def test_a_version_projected_before_customer_discounts_keeps_its_mrr_and_is_named() -> None:
    joined = plan([DiscountState(2_000, 0, "evt_c", HALF)], [version(1_000, "evt_s", basis=BASIS_UNKNOWN, mrr=7_000)])
    assert joined.current == {"sub": Decimal(7_000)} and joined.added == []
    assert "replay the tenant" in str(joined.problems[0]) and joined.problems[0].event_id == "evt_c"


def test_past_its_bounds_the_plan_prices_the_versions_only_whatever_the_order() -> None:
    """A tenant toggling a customer's discount by the thousand: the work stays bounded, each of the subscription's
    own versions still counts the discount in effect at its time, and health says points were left out."""
    toggles = [DiscountState(2_000 + i, 0, f"evt_t{i}", HALF if i % 2 == 0 else None) for i in range(9)]
    versions = [version(1_000, "evt_s1"), version(2_004, "evt_s2")]  # the 5th toggle (HALF) is in effect at 2,004
    for order in (toggles, list(reversed(toggles))):
        joined = plan(order, versions, "cus_d", max_changes=4)
        assert joined.added == [] and joined.current == {"sub": Decimal(5_000)}
        assert joined.mrr == {("sub", 2_004, 0, "evt_s2"): (Decimal(5_000), "evt_t4")}
        assert "changed more than 4 times" in str(joined.problems[-1])
    assert plan(toggles, versions, max_added=3).added == []


def test_the_plan_adds_a_point_only_where_the_discount_changes_what_the_subscription_is_worth() -> None:
    basis = CustomerDiscountBasis("sub", "usd", (Line("si", "prod", Fraction(1)),), (Fraction(10_000),))
    half = Coupon("HALF", "forever", Fraction(50), None, None, applies_to_known=True)
    versions = [StoredVersion("sub", 1_000, 0, "evt_a", "active", "usd", Decimal(10_000), None, basis),
                StoredVersion("sub", 5_000, 0, "evt_b", "canceled", "usd", Decimal(0), None, None)]
    discounts = [DiscountState(2_000, 0, "evt_c1", half), DiscountState(3_000, 0, "evt_c2", half),
                 DiscountState(6_000, 0, "evt_c3", None)]
    joined = plan(discounts, versions)
    assert [(a.state_time, a.mrr, a.copied.event_id) for a in joined.added] == [(2_000, Decimal(5_000), "evt_a")]
    assert joined.mrr == {} and joined.current == {"sub": Decimal(0)}


# --- through the store (Postgres) ---------------------------------------------------------------------------------

async def projected(pool: asyncpg.Pool, tenant: str, envelopes: list[Envelope], group: str = "cd") -> None:
    store = PostgresProjectionStore(pool, group)
    for e in envelopes:
        await store.apply([(e.tenant_id, e.event_id, writes_for(e))], {})


async def current_mrr(pool: asyncpg.Pool, tenant: str, sub_id: str = "sub_d") -> Decimal:
    return Decimal(await pool.fetchval("SELECT mrr FROM projection.subscriptions WHERE tenant_id = $1 AND id = $2",
                                       tenant, sub_id))


async def months(pool: asyncpg.Pool, tenant: str) -> dict[str, float]:
    async with pool.acquire() as conn:
        figures = await mrr_figures(conn, tenant)
    return {m: f["usd"] for m, f in figures.items() if "2025-01" <= m <= "2025-07"}


async def each_order_gives_the_expected_mrr(pool: asyncpg.Pool, prefix: str,
                                            orders: Iterable[Sequence[Envelope]]) -> None:
    """Projects each order of the history under a tenant of its own: every month and the current MRR as expected."""
    for n, order in enumerate(orders):
        tenant = f"{prefix}_{n}"
        await projected(pool, tenant, [dataclasses.replace(e, tenant_id=tenant) for e in order])
        assert await months(pool, tenant) == EXPECTED, [e.event_id for e in order]
        assert await current_mrr(pool, tenant) == 20_000


@pytest.mark.integration
@pytest.mark.asyncio
async def test_every_arrival_order_gives_the_same_mrr_with_the_customers_discount(pool: asyncpg.Pool) -> None:
    await each_order_gives_the_expected_mrr(pool, "t_order", itertools.permutations(history()))


@pytest.mark.integration
@pytest.mark.asyncio
async def test_the_customers_discount_events_alone_or_beside_its_updates_give_the_same_mrr_in_any_order(
        pool: asyncpg.Pool) -> None:
    """Whether Stripe sends `customer.updated` with `customer.discount.*` or not, and in whatever order they come
    (beside the updates, one order in 60 of the 720)."""
    await each_order_gives_the_expected_mrr(pool, "t_dis_order", itertools.permutations(history_of_discount_events()))
    both = history() + history_of_discount_events()[1::2]
    await each_order_gives_the_expected_mrr(pool, "t_dis_both", itertools.islice(itertools.permutations(both), 0,
                                                                                  720, 60))


def _at(given: dict[str, Any] | None, start: int) -> dict[str, Any]:
    return {**discount(given), "start": start}  # type: ignore[dict-item]


TWENTY_SINCE_JAN, TEN_SINCE_MAR = _at(coupon(), JAN), _at(coupon("TEN", percent_off=10), MAR)
SAME_SECOND = {  # (first, then): two states of one second, and the subscription's MRR after them
    "taken away, another given": (
        ("customer.discount.deleted", TWENTY_SINCE_JAN), ("customer.discount.created", TEN_SINCE_MAR), 9_000),
    "given and taken away": (
        ("customer.discount.created", TEN_SINCE_MAR), ("customer.discount.deleted", TEN_SINCE_MAR), 10_000),
    "updates: taken away, another given": (
        ("customer.updated", {**customer(None), "previous": TWENTY_SINCE_JAN}),
        ("customer.updated", {**customer(None), "discount": TEN_SINCE_MAR}), 9_000),
    "updates: an e-mail changed, then taken away": (
        ("customer.updated", {**customer(None), "discount": TWENTY_SINCE_JAN}),
        ("customer.updated", {**customer(None), "previous": TWENTY_SINCE_JAN}), 10_000),
}


@pytest.mark.integration
@pytest.mark.asyncio
@pytest.mark.parametrize("case", list(SAME_SECOND))
@pytest.mark.parametrize("ids", ["first_sorts_first", "first_sorts_last"])
async def test_two_discount_states_of_one_second_end_as_stripe_left_them_whatever_their_ids(
        pool: asyncpg.Pool, case: str, ids: str) -> None:
    """Stripe's times are seconds and event ids are random: a discount taken away and another given in one second
    (`DELETE …/discount`, then a coupon) left the customer without one whenever the deletion's id sorted last."""
    (first_type, first), (then_type, then), expected = SAME_SECOND[case]
    tenant = f"t_second_{list(SAME_SECOND).index(case)}_{ids}"
    names = ("evt_1aaa", "evt_1zzz") if ids == "first_sorts_first" else ("evt_1zzz", "evt_1aaa")

    def state(event_id: str, event_type: str, obj: dict[str, Any]) -> Envelope:
        if event_type.startswith("customer.discount."):
            return discount_event(event_id, event_type, MAY, obj, tenant)
        removed = obj.pop("previous", None)
        payload = {"id": event_id, "object": "event", "type": event_type, "created": MAY, "livemode": False,
                   "api_version": V2019, "data": {"object": obj, **(
                       {"previous_attributes": {"discount": removed}} if removed else {})}}
        return Envelope(tenant, event_id, event_type, "customer", obj["id"], datetime.fromtimestamp(MAY, timezone.utc),
                        datetime.now(timezone.utc), Source.WEBHOOK, False, V2019, None, json.dumps(payload))

    await projected(pool, tenant, [envelope("evt_sub", "customer.subscription.created", JAN, subscription(), tenant),
                                   state(names[0], first_type, dict(first)), state(names[1], then_type, dict(then))])
    assert await current_mrr(pool, tenant) == expected


@pytest.mark.integration
@pytest.mark.asyncio
async def test_an_imported_discount_counts_from_its_start_over_the_removal_of_an_older_one_that_second(
        pool: asyncpg.Pool) -> None:
    """10% off given in January and taken away in March (its `.deleted`); the discount given in that second has no
    event left (older than the events API's 30 days), only the import's snapshot in May, with its `start`. It ranked
    below every state Stripe sent: the customer was without a discount from March to May. Its start proves it came
    after the removal."""
    tenant = "t_start_over_removal"
    ten_since_jan = _at(coupon("TEN", percent_off=10), JAN)
    await projected(pool, tenant, [
        envelope("evt_sub", "customer.subscription.created", JAN, subscription(), tenant),
        envelope("evt_ten", "customer.updated", JAN, {**customer(None), "discount": ten_since_jan}, tenant),
        discount_event("evt_gone", "customer.discount.deleted", MAR, ten_since_jan, tenant),
        envelope("snap_may", "customer.snapshot", MAY, {**customer(None), "discount": _at(coupon(), MAR)}, tenant,
                 Source.IMPORT)])
    assert {m: v for m, v in (await months(pool, tenant)).items() if m <= "2025-05"} == {
        "2025-01": 9_000.0, "2025-02": 9_000.0, "2025-03": 8_000.0, "2025-04": 8_000.0, "2025-05": 8_000.0}


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_point_names_the_customers_event_that_changed_the_mrr(pool: asyncpg.Pool) -> None:
    await projected(pool, "t_lineage", history("t_lineage"))
    rows = await pool.fetch(
        "SELECT state_time / 1000 AS at, mrr, state_event_id, customer_discount_event_id "
        "FROM projection.subscription_versions WHERE tenant_id = 't_lineage' ORDER BY state_time")
    assert [(r["at"], r["mrr"], r["state_event_id"], r["customer_discount_event_id"]) for r in rows] == [
        (JAN, 10_000, "evt_sub_jan", None),
        (MAR, 8_000, "evt_cus_mar:customer_discount", "evt_cus_mar"),
        (MAY, 16_000, "evt_sub_may", "evt_cus_mar"),
        (JUL, 20_000, "evt_cus_jul:customer_discount", "evt_cus_jul"),  # the customer's event that removed it
    ]


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_subscription_with_its_own_discount_ignores_its_customers(pool: asyncpg.Pool) -> None:
    once = coupon("WELCOME", duration="once")
    await projected(pool, "t_own", [
        envelope("evt_s", "customer.subscription.created", JAN, subscription(own=once), "t_own"),
        envelope("evt_c", "customer.updated", MAR, customer(coupon()), "t_own"),
    ])
    assert await current_mrr(pool, "t_own") == 10_000


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_customers_coupon_restricted_to_another_product_leaves_the_subscription_whole(
        pool: asyncpg.Pool) -> None:
    await projected(pool, "t_prod", [
        envelope("evt_s", "customer.subscription.created", JAN, subscription(product="prod_basic"), "t_prod"),
        envelope("evt_c", "customer.updated", MAR, customer(coupon(products=["prod_pro"])), "t_prod"),
        envelope("evt_s2", "customer.subscription.created", MAY, subscription(sub_id="sub_pro"), "t_prod"),
    ])
    assert await current_mrr(pool, "t_prod") == 10_000
    assert await current_mrr(pool, "t_prod", "sub_pro") == 8_000


@pytest.mark.integration
@pytest.mark.asyncio
async def test_another_tenants_customer_of_the_same_id_keeps_its_own_mrr(pool: asyncpg.Pool) -> None:
    """Stripe ids are per account: a hostile tenant naming our customer's id discounts only its own rows."""
    await projected(pool, "t_victim", [envelope("evt_v", "customer.subscription.created", JAN, subscription(),
                                                "t_victim")])
    await projected(pool, "t_hostile", [envelope("evt_h", "customer.updated", MAR, customer(coupon(percent_off=100)),
                                                 "t_hostile")])
    assert await current_mrr(pool, "t_victim") == 10_000
    assert await pool.fetchval("SELECT count(*) FROM projection.subscription_versions WHERE tenant_id = 't_victim'") == 1


@pytest.mark.integration
@pytest.mark.asyncio
async def test_the_customer_and_its_subscription_applied_at_once_by_two_consumers_still_join(
        pool: asyncpg.Pool) -> None:
    """Different objects, so different partitions and consumers: the subscription's transaction is open, not
    committed, when the customer's discount is applied; alone, the second would miss the first's row."""
    sub, cus = history("t_race")[:2]
    first, second = PostgresProjectionStore(pool, "cd-a"), PostgresProjectionStore(pool, "cd-b")
    async with pool.acquire() as conn:
        async with conn.transaction():
            await first.apply_in(conn, [("t_race", sub.event_id, writes_for(sub))], {})
            applying = asyncio.create_task(second.apply([("t_race", cus.event_id, writes_for(cus))], {}))
            while not applying.done() and not await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"):
                await asyncio.sleep(0)  # yields to the task; the loop ends on what Postgres says, not on time
        await applying
    assert await current_mrr(pool, "t_race") == 8_000


@pytest.mark.integration
@pytest.mark.asyncio
@pytest.mark.parametrize("case", ["amount in another currency", "coupon by id"])
async def test_a_customers_discount_a_subscription_cannot_take_is_counted_in_health_not_guessed(
        pool: asyncpg.Pool, case: str) -> None:
    tenant = f"t_health_{case.split()[0]}"
    if case == "coupon by id":
        obj, says = {**customer(None), "discount": UNREADABLE["clover coupon by id"]}, "by id only"
    else:  # the customer does not say its currency: checked per subscription
        euros = coupon("FIVE_EUR", percent_off=None, amount_off=500, currency="eur")
        obj, says = {**customer(euros), "currency": None}, "currency_options for usd"
    await projected(pool, tenant, [
        envelope("evt_s", "customer.subscription.created", JAN, subscription(), tenant),
        envelope("evt_c", "customer.updated", MAR, obj, tenant),
    ])
    assert await current_mrr(pool, tenant) == 10_000
    assert await pool.fetchval("SELECT count(*) FROM projection.customers WHERE tenant_id = $1", tenant) == 1
    rows = await pool.fetch("SELECT event_id, message FROM public.dead_lettered_events "
                            "WHERE tenant_id = $1 AND topic = $2", tenant, PROBLEMS_TOPIC)
    assert [r["event_id"] for r in rows] == ["evt_c"] and says in rows[0]["message"], rows


@pytest.mark.integration
@pytest.mark.asyncio
async def test_an_imported_customer_discount_counts_from_when_it_was_applied(pool: asyncpg.Pool) -> None:
    """The import sees the customer in July; its discount says it was applied in March (`start`), older than the
    events API's 30 days: the months between count it."""
    given_in_march = {**customer(coupon()), "discount": {**discount(coupon()), "start": MAR}}  # type: ignore[dict-item]
    await projected(pool, "t_import", [
        envelope("snap_s", "customer.subscription.snapshot", JUL, subscription(), "t_import", Source.IMPORT),
        envelope("snap_c", "customer.snapshot", JUL, given_in_march, "t_import", Source.IMPORT),
    ])
    assert await months(pool, "t_import") == {
        "2025-01": 10_000.0, "2025-02": 10_000.0, **{f"2025-0{m}": 8_000.0 for m in range(3, 8)}}
    added = await pool.fetchval("SELECT state_event_id FROM projection.subscription_versions "
                                "WHERE tenant_id = 't_import' AND derived_from_customer_discount")
    assert added == "snap_c:customer_discount"  # lineage: the customer's snapshot, as a customer-discount point


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_later_customer_state_whose_discount_cannot_be_read_leaves_the_one_before_in_effect(
        pool: asyncpg.Pool) -> None:
    """As a dead-lettered event leaves the state before it: never the subscription back at full price (a false
    expansion) on a discount nobody could read."""
    unreadable = {**customer(None), "discount": {"id": "di_cus", "object": "discount",
                                                 "source": {"type": "coupon", "coupon": "NEVER_READ"}}}
    await projected(pool, "t_later", [
        envelope("evt_s", "customer.subscription.created", JAN, subscription(), "t_later"),
        envelope("evt_c1", "customer.updated", MAR, customer(coupon()), "t_later"),
        envelope("evt_c2", "customer.updated", MAY, unreadable, "t_later"),
    ])
    assert await current_mrr(pool, "t_later") == 8_000
    assert (await months(pool, "t_later"))["2025-07"] == 8_000.0
    rows = await pool.fetch("SELECT event_id, message FROM public.dead_lettered_events WHERE tenant_id = 't_later'")
    assert [r["event_id"] for r in rows] == ["evt_c2"] and "by id only" in rows[0]["message"]


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_version_projected_before_customer_discounts_were_read_is_named_in_health_under_one(
        pool: asyncpg.Pool) -> None:
    """Migration 0091 cannot know whether an older version had discounts of its own: under a customer's coupon it
    keeps the MRR it was projected with and health names it (replay the tenant), never silently."""
    await projected(pool, "t_old", [envelope("evt_s", "customer.subscription.created", JAN, subscription(), "t_old")])
    await pool.execute("UPDATE projection.subscription_versions SET customer_discount_basis = '{\"unknown\": true}' "
                       "WHERE tenant_id = 't_old'")  # what 0091 does to rows projected before it
    await projected(pool, "t_old", [envelope("evt_c", "customer.updated", MAR, customer(coupon()), "t_old")])
    rows = await pool.fetch("SELECT event_id, message FROM public.dead_lettered_events WHERE tenant_id = 't_old'")
    assert [r["event_id"] for r in rows] == ["evt_c"] and "replay the tenant" in rows[0]["message"]
    assert await current_mrr(pool, "t_old") == 10_000


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_customer_toggled_past_the_bounds_gives_the_same_mrr_in_any_order_and_health_says_so(
        pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant signs its own webhooks: a customer's discount toggled by the thousand would make every batch that
    touches the customer rewrite its whole history. Past the bound, the versions are still priced right."""
    monkeypatch.setattr(customer_discounts, "MAX_CHANGES", 4)
    for n, tenant in enumerate(("t_flood_a", "t_flood_b")):
        toggles = [envelope(f"evt_t{i}", "customer.updated", MAR + i, customer(coupon() if i % 2 == 0 else None),
                            tenant) for i in range(9)]
        events = [envelope("evt_s", "customer.subscription.created", JAN, subscription(), tenant), *toggles,
                  envelope("evt_s2", "customer.subscription.updated", MAY, subscription(quantity=2), tenant)]
        await projected(pool, tenant, events if n == 0 else list(reversed(events)))
        assert await current_mrr(pool, tenant) == 16_000  # the last toggle (20% off) is in effect in May
        messages = [r["message"] for r in await pool.fetch(
            "SELECT message FROM public.dead_lettered_events WHERE tenant_id = $1", tenant)]
        assert any("changed more than 4 times" in m for m in messages), messages
    assert await months(pool, "t_flood_a") == await months(pool, "t_flood_b")


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_batch_touching_a_customer_again_rewrites_none_of_its_added_points(pool: asyncpg.Pool) -> None:
    await projected(pool, "t_churn", history("t_churn"))
    added = "SELECT xmin::text FROM projection.subscription_versions WHERE tenant_id = 't_churn' " \
            "AND derived_from_customer_discount ORDER BY state_time"
    before = [r[0] for r in await pool.fetch(added)]
    await projected(pool, "t_churn", [envelope("evt_again", "customer.updated", JUL + 60, customer(None), "t_churn")])
    assert len(before) == 2 and [r[0] for r in await pool.fetch(added)] == before


@pytest.mark.integration
@pytest.mark.asyncio
async def test_one_tenants_batch_never_waits_for_another_tenants_customers(pool: asyncpg.Pool) -> None:
    """Locks are per tenant: a batch holding a thousand of one tenant's customers (an import) leaves another
    tenant's batches to go on at once."""
    many = [envelope(f"evt_{i}", "customer.updated", MAR, customer(coupon(), f"cus_{i}"), "t_busy")
            for i in range(1_000)]
    other = envelope("evt_o", "customer.updated", MAR, customer(coupon()), "t_other")
    async with pool.acquire() as conn, conn.transaction():
        await PostgresProjectionStore(pool, "cd-busy").apply_in(
            conn, [(e.tenant_id, e.event_id, writes_for(e)) for e in many], {})
        await asyncio.wait_for(PostgresProjectionStore(pool, "cd-other").apply(
            [("t_other", other.event_id, writes_for(other))], {}), timeout=30)  # a bound, not a synchronisation


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_batch_of_thousands_of_customers_takes_a_bounded_number_of_locks(pool: asyncpg.Pool) -> None:
    """Postgres shares one lock table among all sessions: a lock per customer of an import batch would exhaust it."""
    batch = [envelope(f"evt_{i}", "customer.updated", MAR, customer(coupon(), f"cus_{i}"), "t_locks")
             for i in range(2_000)]
    store = PostgresProjectionStore(pool, "cd-locks")
    async with pool.acquire() as conn, conn.transaction():
        await store.apply_in(conn, [(e.tenant_id, e.event_id, writes_for(e)) for e in batch], {})
        held = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                   "AND pid = pg_backend_pid()")
    assert 0 < held <= CUSTOMER_LOCK_BUCKETS


@pytest.mark.integration
@pytest.mark.asyncio
async def test_the_upgrade_names_each_customer_projected_before_with_a_lasting_discount(pool: asyncpg.Pool) -> None:
    """0091 cannot rebuild a discount's history from a customer's newest state: health names the customers whose
    subscriptions' MRR does not count theirs until a replay (not the ones whose discount ends)."""
    await projected(pool, "t_upgrade", [
        envelope("evt_forever", "customer.created", JAN, customer(coupon(), "cus_forever"), "t_upgrade"),
        envelope("evt_once", "customer.created", JAN, customer(coupon(duration="once"), "cus_once"), "t_upgrade"),
        envelope("evt_none", "customer.created", JAN, customer(None, "cus_none"), "t_upgrade"),
    ])
    await pool.execute("DELETE FROM public.dead_lettered_events WHERE tenant_id = 't_upgrade'")
    sql = (Path(__file__).parents[2] / "projections/migrations/0091_customer_discounts.sql").read_text()
    seed = sql[sql.index("INSERT INTO public.dead_lettered_events"):sql.index("ON CONFLICT DO NOTHING;")]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL search_path TO projection")
        await conn.execute(seed + " ON CONFLICT DO NOTHING")
        await conn.execute(seed + " ON CONFLICT DO NOTHING")  # once, however often it runs
    rows = await pool.fetch("SELECT event_id, message FROM public.dead_lettered_events WHERE tenant_id = 't_upgrade'")
    assert [r["event_id"] for r in rows] == ["evt_forever"] and "until the tenant is replayed" in rows[0]["message"]
