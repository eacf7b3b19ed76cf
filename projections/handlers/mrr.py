"""Monthly recurring revenue of one subscription state, by Stripe's Billing-analytics definition.

MRR counts subscriptions in status `active` or `past_due`; each item contributes its price's unit
amount × quantity normalised to a month (a year ÷ 12, a week × 52 ÷ 12, a day × 365 ÷ 12, each ÷
the interval count), so $1,200/year is $100. Trialing, unpaid, canceled, incomplete and paused
subscriptions count 0; metered prices count 0 (usage is not recurring revenue); free prices count
0; taxes are not in unit amounts. Only `forever` coupons reduce MRR (`once` and `repeating` are
temporary); a percent coupon scales the total, an amount coupon is normalised by the first item's
interval. A subscription set to cancel at period end keeps its MRR until it actually ends.

Deviation: Stripe's newer API versions list `discounts` as ids; without the coupon object we cannot
tell its duration, so such a subscription's MRR is counted before discounts. Results are exact
fractions of a minor unit; round only when presenting.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

MONTHS_PER_INTERVAL: Mapping[str, Fraction] = {
    "month": Fraction(1),
    "year": Fraction(1, 12),
    "week": Fraction(52, 12),
    "day": Fraction(365, 12),
}
MRR_STATUSES = frozenset({"active", "past_due"})


def monthly_factor(price: Mapping[str, Any]) -> Fraction:
    """Returns what turns one billing period's amount of `price` into a month's."""
    recurring = price.get("recurring") or {}
    interval = recurring.get("interval", "month")
    count = int(recurring.get("interval_count") or 1)
    return MONTHS_PER_INTERVAL.get(interval, Fraction(1)) / count


def _price(item: Mapping[str, Any]) -> Mapping[str, Any]:
    price = item.get("price") or item.get("plan") or {}
    return price if isinstance(price, Mapping) else {}


def _item_amount(item: Mapping[str, Any]) -> Fraction:
    price = _price(item)
    recurring = price.get("recurring") or {}
    if recurring.get("usage_type") == "metered" or price.get("usage_type") == "metered":
        return Fraction(0)
    unit = price.get("unit_amount")
    if unit is None:
        unit = price.get("amount")  # legacy plan objects
    if unit is None:
        return Fraction(0)
    quantity = item.get("quantity")
    return Fraction(int(unit) * (1 if quantity is None else int(quantity))) * monthly_factor(price)


def _forever_coupons(sub: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    discounts: list[Any] = []
    if isinstance(sub.get("discount"), Mapping):
        discounts.append(sub["discount"])
    discounts.extend(d for d in sub.get("discounts") or [] if isinstance(d, Mapping) and d not in discounts)
    coupons = []
    for discount in discounts:
        coupon = discount.get("coupon") or (discount.get("source") or {}).get("coupon")
        if isinstance(coupon, Mapping) and coupon.get("duration") == "forever":
            coupons.append(coupon)
    return coupons


def subscription_mrr(sub: Mapping[str, Any]) -> Fraction:
    """Returns the MRR of one subscription state in minor units of its currency."""
    if sub.get("status") not in MRR_STATUSES:
        return Fraction(0)
    items = (sub.get("items") or {}).get("data") or []
    total = sum((_item_amount(item) for item in items), Fraction(0))
    for coupon in _forever_coupons(sub):
        if coupon.get("percent_off") is not None:
            total *= 1 - Fraction(str(coupon["percent_off"])) / 100
        elif coupon.get("amount_off") and items:
            total -= int(coupon["amount_off"]) * monthly_factor(_price(items[0]))
    return max(total, Fraction(0))


def as_decimal(value: Fraction) -> Decimal:
    """Returns `value` as a Decimal with six places (the column's scale)."""
    return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal("0.000001"))
