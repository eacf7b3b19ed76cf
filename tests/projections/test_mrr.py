"""MRR by Stripe's Billing-analytics definition, one rule per test."""

from __future__ import annotations

from datetime import datetime, timezone
from fractions import Fraction
from typing import Any

import pytest

from ingestor.envelope.snapshots import snapshot_envelope
from projections.handlers.mrr import subscription_mrr as canonical_mrr
from projections.handlers.writes import writes_for
from schemas.stripe_objects import UnreadableObjectError, read_subscription
from stripe_sim import CURRENT_VERSION
from stripe_sim.objects import template


def price(amount: int | None, interval: str = "month", count: int = 1, usage: str = "licensed") -> dict[str, Any]:
    return {"id": "price_x", "unit_amount": amount, "currency": "usd",
            "recurring": {"interval": interval, "interval_count": count, "usage_type": usage}}


def sub(*items: tuple[dict[str, Any], int], status: str = "active", **extra: Any) -> dict[str, Any]:
    return {"id": "sub_x", "object": "subscription", "customer": "cus_x", "created": 1_700_000_000,
            "status": status, "items": {"data": [{"price": p, "quantity": q} for p, q in items]}, **extra}


def subscription_mrr(obj: dict[str, Any]) -> Fraction:
    """MRR of a raw subscription of any version, read through the canonical model as the projector reads it."""
    return canonical_mrr(read_subscription(obj))


def test_yearly_price_is_a_twelfth() -> None:
    assert subscription_mrr(sub((price(120_000, "year"), 1))) == 10_000


def test_interval_count_and_quantity() -> None:
    assert subscription_mrr(sub((price(3_000, "month", 3), 4))) == 4_000
    assert subscription_mrr(sub((price(700, "week"), 1))) == Fraction(700 * 52, 12)


def test_all_items_count() -> None:
    assert subscription_mrr(sub((price(1_000), 2), (price(12_000, "year"), 1))) == 3_000


@pytest.mark.parametrize("status", ["trialing", "unpaid", "canceled", "incomplete", "incomplete_expired", "paused"])
def test_only_active_and_past_due_count(status: str) -> None:
    assert subscription_mrr(sub((price(1_000), 1), status=status)) == 0


def test_past_due_counts() -> None:
    assert subscription_mrr(sub((price(1_000), 1), status="past_due")) == 1_000


def test_metered_and_free_prices_count_zero() -> None:
    assert subscription_mrr(sub((price(50, usage="metered"), 1), (price(0), 1))) == 0


def test_only_forever_coupons_reduce_mrr() -> None:
    base = sub((price(10_000), 1))
    assert subscription_mrr(base | {"discount": {"coupon": {"duration": "forever", "applies_to": None, "percent_off": 25, "amount_off": None}}}) == 7_500
    assert subscription_mrr(base | {"discount": {"coupon": {"duration": "once", "percent_off": 25, "amount_off": None}}}) == 10_000
    assert subscription_mrr(base | {"discount": {"coupon": {"duration": "repeating", "percent_off": 50, "amount_off": None}}}) == 10_000


def test_amount_coupon_is_normalised_by_the_billing_interval() -> None:
    coupon = {"duration": "forever", "applies_to": None, "percent_off": None, "amount_off": 12_000, "currency": "usd"}
    yearly = sub((price(120_000, "year"), 1), discount={"coupon": coupon})
    assert subscription_mrr(yearly) == 9_000


def test_cancel_at_period_end_still_counts_until_it_ends() -> None:
    assert subscription_mrr(sub((price(1_000), 1), cancel_at_period_end=True)) == 1_000


def test_never_negative() -> None:
    coupon = {"coupon": {"duration": "forever", "applies_to": None, "percent_off": None, "amount_off": 5_000, "currency": "usd"}}
    assert subscription_mrr(sub((price(1_000), 1), discount=coupon)) == 0


def test_a_discount_known_only_by_id_leaves_active_mrr_underivable_not_undiscounted() -> None:
    with pytest.raises(UnreadableObjectError, match="di_1 by id only"):
        subscription_mrr(sub((price(10_000), 1), discounts=["di_1"]))
    assert subscription_mrr(sub((price(10_000), 1), status="canceled", discounts=["di_1"])) == 0


def test_a_clover_discount_with_its_coupon_expanded_under_source_counts() -> None:
    expanded = {"id": "di_1", "object": "discount", "source": {"type": "coupon", "coupon": {
        "id": "co_1", "duration": "forever", "applies_to": None, "percent_off": 10, "amount_off": None}}}
    assert subscription_mrr(sub((price(10_000), 1), discounts=[expanded])) == 9_000


def test_a_legacy_plan_counts_by_its_own_interval() -> None:
    """The silent 12x: a yearly legacy plan (interval at the top of the plan) was counted as monthly."""
    plan = {"id": "gold", "object": "plan", "amount": 120_000, "currency": "usd", "interval": "year", "interval_count": 1}
    legacy = {"id": "sub_x", "object": "subscription", "customer": "cus_x", "created": 1_500_000_000,
              "status": "active", "plan": plan, "quantity": 2}
    assert subscription_mrr(legacy) == 20_000
    assert read_subscription(legacy).currency == "usd"


def test_a_quantity_transform_bills_packs_not_units() -> None:
    """25 seats in packs of 10 (rounded up) at $10 a pack: $30, not $250."""
    packs = {**template("price"), "unit_amount": 1000, "unit_amount_decimal": "1000",
             "transform_quantity": {"divide_by": 10, "round": "up"}}
    assert subscription_mrr(sub((packs, 25))) == 3_000
    assert subscription_mrr(sub((packs | {"transform_quantity": {"divide_by": 10, "round": "down"}}, 25))) == 2_000


def yen(amount: int) -> dict[str, Any]:
    return {**template("price"), "currency": "jpy", "unit_amount": amount, "unit_amount_decimal": str(amount)}


def amount_coupon(amount_off: int, currency: str | None, **extra: Any) -> dict[str, Any]:
    return {"coupon": {**template("coupon"), "duration": "forever", "applies_to": None, "percent_off": None, "amount_off": amount_off,
                       "currency": currency, **extra}}


def test_an_amount_coupon_takes_off_only_an_amount_in_the_subscriptions_currency() -> None:
    """The ¥500 from $5: a USD amount coupon on a JPY subscription was subtracted as yen."""
    in_yen = sub((yen(5_000), 1), currency="jpy", discount=amount_coupon(500, "usd"))
    with pytest.raises(UnreadableObjectError, match="currency_options for jpy"):
        subscription_mrr(in_yen)
    assert subscription_mrr(in_yen | {"discount": amount_coupon(500, "usd", currency_options={
        "usd": {"amount_off": 500}, "jpy": {"amount_off": 800}})}) == 4_200
    assert subscription_mrr(in_yen | {"discount": amount_coupon(500, "jpy")}) == 4_500
    with pytest.raises(UnreadableObjectError, match="currency"):
        subscription_mrr(in_yen | {"discount": amount_coupon(500, None)})  # whose 500?
    assert subscription_mrr(in_yen | {"status": "canceled"}) == 0


def test_an_items_forever_discount_reduces_that_item_before_the_subscriptions() -> None:
    """Item discounts were ignored: half off one item counted at full price."""
    half = {**template("discount"), "id": "di_item", "source": {"type": "coupon", "coupon": {
        **template("coupon"), "duration": "forever", "applies_to": None, "percent_off": 50}}}
    items = {"data": [{**template("subscription_item"), "price": template("price"), "quantity": 1, "discounts": [half]},
                      {**template("subscription_item"), "id": "si_2", "price": template("price"), "quantity": 1}]}
    assert subscription_mrr(sub(items=items)) == 1_000 + 2_000
    off = amount_coupon(500, "usd")["coupon"]
    items["data"][0]["discounts"] = [{"id": "di_amount", "object": "discount", "coupon": off}]
    ten_percent = {"coupon": {**template("coupon"), "duration": "forever", "applies_to": None, "percent_off": 10}}
    assert subscription_mrr(sub(items=items, discount=ten_percent)) == 3_150  # (1,500 + 2,000) × 0.9
    items["data"][0]["discounts"] = [{"id": "di_once", "coupon": off | {"duration": "once"}}]
    assert subscription_mrr(sub(items=items)) == 4_000


def test_an_items_discount_known_only_by_id_leaves_active_mrr_underivable() -> None:
    items = {"data": [{**template("subscription_item"), "price": template("price"), "quantity": 1,
                       "discounts": ["di_item"]}]}
    with pytest.raises(UnreadableObjectError, match="di_item"):
        subscription_mrr(sub(items=items))
    assert subscription_mrr(sub(status="trialing", items=items)) == 0


def product_price(amount: int, product: str, price_id: str) -> dict[str, Any]:
    return {**template("price"), "id": price_id, "product": product, "unit_amount": amount,
            "unit_amount_decimal": str(amount)}


def two_products(coupon: dict[str, Any]) -> dict[str, Any]:
    """$20 of prod_pro and $10 of prod_basic a month, with `coupon` on the subscription."""
    return sub((product_price(2_000, "prod_pro", "price_pro"), 1), (product_price(1_000, "prod_basic", "price_basic"), 1),
               discounts=[{"id": "di_1", "object": "discount", "source": {"type": "coupon", "coupon": coupon}}])


def test_a_coupon_restricted_to_products_reduces_only_their_items() -> None:
    """A forever 50% off restricted to prod_pro took half of the whole subscription ($15 instead of $20)."""
    half_off_pro = {**template("coupon"), "duration": "forever", "percent_off": 50,
                    "applies_to": {"products": ["prod_pro"]}}
    assert subscription_mrr(two_products(half_off_pro)) == 1_000 + 1_000
    assert subscription_mrr(two_products(half_off_pro | {"applies_to": None})) == 1_500
    elsewhere = half_off_pro | {"applies_to": {"products": ["prod_other"]}}
    assert subscription_mrr(two_products(elsewhere)) == 3_000


def test_an_amount_coupon_restricted_to_products_takes_off_at_most_their_items() -> None:
    """$15 off prod_basic's $10: $10 off, not $15 off the whole subscription."""
    off = {**template("coupon"), "duration": "forever", "percent_off": None, "amount_off": 1_500, "currency": "usd",
           "applies_to": {"products": ["prod_basic"]}}
    assert subscription_mrr(two_products(off)) == 2_000
    assert subscription_mrr(two_products(off | {"amount_off": 400})) == 2_600
    assert subscription_mrr(two_products(off | {"applies_to": None})) == 1_500


def test_a_forever_coupon_without_applies_to_leaves_active_mrr_underivable_not_reducing_everything() -> None:
    """Stripe includes `applies_to` only when asked: a coupon without it may be restricted to some products."""
    unknown = {**template("coupon"), "id": "co_unknown", "duration": "forever", "percent_off": 50}
    with pytest.raises(UnreadableObjectError, match="co_unknown came without applies_to"):
        subscription_mrr(two_products(unknown))
    assert subscription_mrr(two_products(unknown | {"duration": "once"})) == 3_000  # no forever coupon: not needed
    assert subscription_mrr(two_products(unknown) | {"status": "canceled"}) == 0


def test_a_restricted_coupon_on_an_item_without_a_product_leaves_active_mrr_underivable() -> None:
    coupon = {**template("coupon"), "duration": "forever", "percent_off": 50, "applies_to": {"products": ["prod_pro"]}}
    no_product = two_products(coupon)
    no_product["items"]["data"][1]["price"] = {**no_product["items"]["data"][1]["price"], "product": None}
    with pytest.raises(UnreadableObjectError, match="names no product"):
        subscription_mrr(no_product)


def test_an_amount_coupon_on_several_items_is_shared_in_proportion_before_the_next_coupon() -> None:
    """$15 off Pro ($20) and Basic ($10) takes $10 and $5; 50% off Pro then halves Pro's $10 left: $10 in all."""
    both = {**template("coupon"), "duration": "forever", "percent_off": None, "amount_off": 1_500, "currency": "usd",
            "applies_to": {"products": ["prod_pro", "prod_basic"]}}
    half_pro = {**template("coupon"), "id": "co_half", "duration": "forever", "percent_off": 50,
                "applies_to": {"products": ["prod_pro"]}}
    stacked = two_products(both)
    stacked["discounts"].append({"id": "di_2", "object": "discount", "source": {"type": "coupon", "coupon": half_pro}})
    assert subscription_mrr(stacked) == 500 + 500


def test_an_amount_coupon_is_normalised_by_the_interval_of_the_items_it_reduces() -> None:
    """$120 off a year of Pro, Basic monthly listed first: $10 a month off, not $120 a month (capped at Pro's $100)."""
    yearly_pro = product_price(120_000, "prod_pro", "price_pro") | {
        "recurring": {"interval": "year", "interval_count": 1, "usage_type": "licensed"}}
    off = {**template("coupon"), "duration": "forever", "percent_off": None, "amount_off": 12_000, "currency": "usd",
           "applies_to": {"products": ["prod_pro"]}}
    mixed = sub((product_price(1_000, "prod_basic", "price_basic"), 1), (yearly_pro, 1),
                discounts=[{"id": "di_1", "object": "discount", "source": {"type": "coupon", "coupon": off}}])
    assert subscription_mrr(mixed) == 1_000 + 9_000


def test_an_item_worth_nothing_needs_no_product_for_a_restricted_coupon() -> None:
    coupon = {**template("coupon"), "duration": "forever", "percent_off": 50, "applies_to": {"products": ["prod_pro"]}}
    metered = two_products(coupon)
    metered["items"]["data"][1]["price"] = {**metered["items"]["data"][1]["price"], "product": None,
                                            "recurring": {"interval": "month", "interval_count": 1,
                                                          "usage_type": "metered"}}
    assert subscription_mrr(metered) == 1_000


def test_a_snapshot_computes_the_mrr_of_the_points_it_keeps_only() -> None:
    """A snapshot of a subscription trialing until next month, with a forever coupon whose products are unknown:
    its trial (MRR 0) is stored; the point at the trial's end, later than the snapshot, was computed (and refused
    the whole snapshot) although it is not kept."""
    asked_at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    unknown = {**template("coupon"), "duration": "forever", "percent_off": 50}
    trialing = two_products(unknown) | {"status": "trialing", "start_date": int(asked_at.timestamp()) - 86_400,
                                        "trial_end": int(asked_at.timestamp()) + 30 * 86_400}
    writes = writes_for(snapshot_envelope(trialing, "t", False, CURRENT_VERSION, asked_at))
    assert [(v.status, int(v.mrr)) for v in writes.versions] == [("trialing", 0), ("trialing", 0)]
    with pytest.raises(UnreadableObjectError, match="came without applies_to"):  # active from its start: not known
        writes_for(snapshot_envelope(trialing | {"trial_end": None}, "t", False, CURRENT_VERSION, asked_at))


def test_an_items_amount_off_comes_before_the_subscriptions_percent() -> None:
    """$40 of seats with $10 off the item, then 50% off the subscription: $15 ($10 if the order were the other)."""
    ten_off = {"id": "di_item", "object": "discount", "coupon": {
        **template("coupon"), "duration": "forever", "percent_off": None, "amount_off": 1_000, "currency": "usd",
        "applies_to": None}}
    half = {"coupon": {**template("coupon"), "duration": "forever", "percent_off": 50, "applies_to": None}}
    items = {"data": [{**template("subscription_item"), "price": template("price"), "quantity": 2,
                       "discounts": [ten_off]}]}
    assert subscription_mrr(sub(items=items, discount=half)) == 1_500
