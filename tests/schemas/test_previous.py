"""The state before an update, as Stripe builds `previous_attributes`: a nested hash by its changed keys only (since
2015-01-26), an array whole (since 2017-05-25; before, only its changed elements — which cannot be laid over)."""

from __future__ import annotations

from typing import Any

import pytest

from ingestor.envelope.discounts import Expanded, unexpanded, with_expanded
from projections.handlers.mrr import subscription_mrr
from schemas.stripe_objects import UnreadableObjectError, read_subscription
from schemas.stripe_objects.previous import MAX_DEPTH, laid_over, state_before

QUARTER = {"id": "QUARTER", "object": "coupon", "duration": "forever", "percent_off": 25, "amount_off": None,
           "currency": None, "name": "QUARTER", "applies_to": {"products": ["prod_new"]}}


def subscription(discount: dict[str, Any]) -> dict[str, Any]:
    """A 2024-06-20 subscription of one $100 a month item, with one discount."""
    price = {"id": "price_1", "object": "price", "currency": "usd", "unit_amount": 10_000, "product": "prod_1",
             "billing_scheme": "per_unit", "recurring": {"interval": "month", "interval_count": 1,
                                                         "usage_type": "licensed"}}
    return {"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active", "currency": "usd",
            "created": 1_700_000_000, "start_date": 1_700_000_000, "current_period_start": 1_710_000_000,
            "current_period_end": 1_712_600_000, "discount": discount, "discounts": [discount["id"]],
            "items": {"object": "list", "has_more": False, "url": "/v1/subscription_items?subscription=sub_1",
                      "data": [{"id": "si_1", "object": "subscription_item", "price": price, "quantity": 1}]}}


NOW = subscription({"id": "di_B", "object": "discount", "customer": "cus_1", "start": 1_711_000_000, "end": None,
                    "coupon": QUARTER})
# A coupon switched for another forever one: Stripe names what changed of the discount and of its coupon only.
SWITCHED = {"discount": {"id": "di_A", "start": 1_700_000_000, "coupon": {"id": "HALF", "name": "HALF",
                                                                          "percent_off": 50}},
            "discounts": ["di_A"]}


def test_a_hash_is_laid_over_by_its_changed_keys_and_an_array_replaced_whole() -> None:
    before = laid_over(NOW, SWITCHED)
    assert before["discount"]["id"] == "di_A" and before["discount"]["customer"] == "cus_1"
    assert before["discount"]["coupon"]["duration"] == "forever"  # the same on both: not named, kept
    assert before["discounts"] == ["di_A"]
    assert laid_over(NOW, {"items": {"data": []}})["items"] == {**NOW["items"], "data": []}  # basil's renewal form
    assert NOW["discount"]["coupon"] is QUARTER and QUARTER["percent_off"] == 25  # nothing laid into the object


def test_what_the_write_path_filled_in_is_not_lent_to_another_coupon_or_price() -> None:
    """QUARTER's products (laid in by the write path; Stripe sends none in an event) are not HALF's: HALF without
    its own is unreadable, not reduced on QUARTER's products."""
    before = laid_over(NOW, SWITCHED)
    assert "applies_to" not in before["discount"]["coupon"]
    with pytest.raises(UnreadableObjectError, match="HALF came without applies_to"):
        subscription_mrr(read_subscription(before))
    same_coupon = laid_over(NOW, {"discount": {"id": "di_A", "start": 1_700_000_000}})  # the coupon unchanged
    assert same_coupon["discount"]["coupon"]["applies_to"] == QUARTER["applies_to"]


def test_the_fill_in_asks_for_the_coupon_left_and_lays_its_products_into_the_partial_hash() -> None:
    event = {"id": "evt_1", "type": "customer.subscription.updated", "api_version": "2024-06-20",
             "data": {"object": {**NOW, "discount": {**NOW["discount"], "coupon": {
                 k: v for k, v in QUARTER.items() if k != "applies_to"}}}, "previous_attributes": SWITCHED}}
    assert set(unexpanded(event).coupons) == {"QUARTER", "HALF"}  # HALF's duration is QUARTER's: not named
    half = {"id": "HALF", "duration": "forever", "percent_off": 50, "applies_to": None}
    filled = with_expanded(event, Expanded(coupons={"HALF": half, "QUARTER": QUARTER}))
    before = state_before(filled["data"]["object"], filled["data"]["previous_attributes"], "2024-06-20")
    assert subscription_mrr(read_subscription(before)) == 5_000  # half off every product


@pytest.mark.parametrize(("version", "readable"), [("2017-04-06", False), ("2017-05-25", True), ("2019-02-19", True)])
def test_an_array_named_before_2017_05_25_holds_changed_elements_only_and_is_not_laid_over(
        version: str, readable: bool) -> None:
    """Up to 2017-04-06 an updated array named only its changed elements: two items, one of them changed, gave the
    state before one item — a silent underestimate. Refused instead (the update itself still counts)."""
    previous = {"items": {"data": [{"id": "si_1", "quantity": 3}]}}
    if readable:
        assert state_before(NOW, previous, version)["items"]["data"] == [{"id": "si_1", "quantity": 3}]
    else:
        with pytest.raises(UnreadableObjectError, match="changed elements only"):
            state_before(NOW, previous, version)
    assert state_before(NOW, {"status": "past_due"}, "2016-07-06")["status"] == "past_due"  # no array: laid over


def test_a_hostile_nesting_is_laid_over_within_a_bound() -> None:
    deep: dict[str, Any] = {"x": 1}
    now: dict[str, Any] = {"x": 2}
    for _ in range(5 * MAX_DEPTH):
        deep, now = {"n": deep}, {"n": now}
    assert laid_over({"metadata": now}, {"metadata": deep})["metadata"] is not None  # no recursion error
    with pytest.raises(UnreadableObjectError):
        state_before(NOW, {"metadata": {"a": [1]}}, "2016-07-06")
