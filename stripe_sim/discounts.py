"""What discounts take off an invoice: an item's own first, then the subscription's (or, when the subscription
has none of its own, its customer's), each on the lines of its coupon's products.

Pure: used by `billing.Book` as it invoices a period; the month view of the same rules is in `ground_truth`.
"""

from __future__ import annotations

from stripe_sim.clock import add_interval
from stripe_sim.model import Obj


def discount_end(coupon: Obj, at: int) -> int | None:
    """When a discount applied at `at` ends: a repeating coupon's months later, else never (None)."""
    return add_interval(at, "month", coupon["duration_in_months"]) if coupon["duration"] == "repeating" else None


def in_effect(sub: Obj, customer: Obj | None) -> Obj | None:
    """The subscription-level discount an invoice of `sub` gets: its own, or else its customer's (Stripe: "If not
    specified or empty, inherits the discount from the subscription's customer")."""
    own: Obj | None = sub.get("discount")
    if own is not None or customer is None:
        return own
    inherited: Obj | None = customer.get("discount")
    return inherited


def applies(disc: Obj, line: Obj) -> bool:
    """Whether a discount's coupon reduces a line: every line, or those of its products."""
    applies_to = disc["coupon"].get("applies_to")
    return applies_to is None or line["price"]["product"] in applies_to["products"]


def invoice_discount(sub: Obj, disc: Obj | None, lines: list[Obj], period_start: int, billing_reason: str) -> int:
    """What an invoice's discounts take off its lines: each item's own on its line, then `disc` (the subscription's
    or its customer's, `in_effect`) on what is left of the lines of its products."""
    by_item = {it["id"]: it for it in sub["items"]["data"]}
    item_off = [sum(discount_amount(d, line["amount"], period_start, billing_reason)
                    for d in by_item[line["parent"]["subscription_item_details"]["subscription_item"]]["discounts"]
                    if applies(d, line))
                for line in lines]
    left = sum(line["amount"] - off for line, off in zip(lines, item_off) if disc is None or applies(disc, line))
    return sum(item_off) + discount_amount(disc, left, period_start, billing_reason)


def discount_amount(disc: Obj | None, subtotal: int, period_start: int, billing_reason: str) -> int:
    """What one discount takes off `subtotal` on one invoice: a once coupon only on a subscription's first, a
    repeating one until its end."""
    if disc is None:
        return 0
    cpn = disc["coupon"]
    if cpn["duration"] == "once" and billing_reason != "subscription_create":
        return 0
    if cpn["duration"] == "repeating" and disc["end"] is not None and period_start >= disc["end"]:
        return 0
    percent_off: float | None = cpn["percent_off"]
    if percent_off is not None:
        return min(subtotal, round(subtotal * percent_off / 100))
    return min(subtotal, cpn["amount_off"] or 0)
