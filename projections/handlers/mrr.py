"""Monthly recurring revenue of one subscription state, by Stripe's Billing-analytics definition.

MRR counts subscriptions in status `active` or `past_due`; each item contributes its price's amount for
one billing period (unit amount × quantity, or the tiers' amount for the quantity) normalised to a
month (a year ÷ 12, a week × 52 ÷ 12, a day × 365 ÷ 12, each ÷ the interval count), so $1,200/year is
$100. Trialing, unpaid, canceled, incomplete and paused subscriptions count 0; metered prices count 0
(usage is not recurring revenue); free prices count 0; taxes are not in unit amounts. Only `forever`
coupons reduce MRR (`once` and `repeating` are temporary); a percent coupon scales the total, an amount
coupon is normalised by the first item's interval. A subscription set to cancel at period end keeps its
MRR until it actually ends.

Reads only the canonical record (`schemas.stripe_objects`), whatever API version the state came in.
A discount known only by its id leaves the MRR of an active subscription underivable: that raises
UnreadableObjectError rather than count the subscription before its discount. Results are exact
fractions of a minor unit; round only when presenting.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from schemas.stripe_objects import MONTHS_PER_INTERVAL, Item, Subscription, UnreadableObjectError

MRR_STATUSES = frozenset({"active", "past_due"})


def monthly_factor(item: Item) -> Fraction:
    """Returns what turns one billing period's amount of `item` into a month's."""
    return MONTHS_PER_INTERVAL[item.interval] / item.interval_count


def subscription_mrr(sub: Subscription, status: str | None = None) -> Fraction:
    """Returns the MRR of one subscription state (in `status`, default its own) in minor units of its currency."""
    if (status or sub.status) not in MRR_STATUSES:
        return Fraction(0)
    if sub.unresolved_discounts:
        raise UnreadableObjectError(
            "subscription", sub.id, "discounts",
            f"name {', '.join(sub.unresolved_discounts)} by id only: their coupons decide the MRR",
        )
    total = sum((item.period_amount * monthly_factor(item) for item in sub.items), Fraction(0))
    for coupon in sub.coupons:
        if coupon.duration != "forever":
            continue
        if coupon.percent_off is not None:
            total *= 1 - coupon.percent_off / 100
        elif coupon.amount_off and sub.items:
            total -= coupon.amount_off * monthly_factor(sub.items[0])
    return max(total, Fraction(0))


def as_decimal(value: Fraction) -> Decimal:
    """Returns `value` as a Decimal with six places (the column's scale)."""
    return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal("0.000001"))
