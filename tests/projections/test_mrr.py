"""MRR by Stripe's Billing-analytics definition, one rule per test."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from projections.handlers.mrr import subscription_mrr


def price(amount: int | None, interval: str = "month", count: int = 1, usage: str = "licensed") -> dict[str, Any]:
    return {"id": "price_x", "unit_amount": amount, "recurring": {"interval": interval, "interval_count": count, "usage_type": usage}}


def sub(*items: tuple[dict[str, Any], int], status: str = "active", **extra: Any) -> dict[str, Any]:
    return {"status": status, "items": {"data": [{"price": p, "quantity": q} for p, q in items]}, **extra}


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
    assert subscription_mrr(base | {"discount": {"coupon": {"duration": "forever", "percent_off": 25, "amount_off": None}}}) == 7_500
    assert subscription_mrr(base | {"discount": {"coupon": {"duration": "once", "percent_off": 25, "amount_off": None}}}) == 10_000
    assert subscription_mrr(base | {"discount": {"coupon": {"duration": "repeating", "percent_off": 50, "amount_off": None}}}) == 10_000


def test_amount_coupon_is_normalised_by_the_billing_interval() -> None:
    yearly = sub((price(120_000, "year"), 1), discount={"coupon": {"duration": "forever", "percent_off": None, "amount_off": 12_000}})
    assert subscription_mrr(yearly) == 9_000


def test_cancel_at_period_end_still_counts_until_it_ends() -> None:
    assert subscription_mrr(sub((price(1_000), 1), cancel_at_period_end=True)) == 1_000


def test_never_negative() -> None:
    coupon = {"coupon": {"duration": "forever", "percent_off": None, "amount_off": 5_000}}
    assert subscription_mrr(sub((price(1_000), 1), discount=coupon)) == 0
