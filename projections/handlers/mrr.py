"""Monthly recurring revenue of one subscription state, by Stripe's Billing-analytics definition.

MRR counts subscriptions in status `active` or `past_due`; each item contributes its price's amount for
one billing period (unit amount × quantity — the quantity first divided and rounded by the price's
`transform_quantity` — or the tiers' amount for the quantity) normalised to a month (a year ÷ 12, a week
× 52 ÷ 12, a day × 365 ÷ 12, each ÷ the interval count), so $1,200/year is $100. Trialing, unpaid,
canceled, incomplete and paused subscriptions count 0; metered prices count 0 (usage is not recurring
revenue); free prices count 0; taxes are not in unit amounts. Only `forever` coupons reduce MRR (`once`
and `repeating` are temporary): an item's own discounts first, on that item (never below 0), then the
subscription's on the items they apply to (a coupon's `applies_to.products`, or every item). A percent
coupon scales; an amount coupon takes off its amount in the subscription's currency (the coupon's
`currency_options` when it is in another), normalised by the item's interval (the subscription's: by the
first item it applies to), at most the amount of the items it applies to. A subscription set to cancel
at period end keeps its MRR until it actually ends. A subscription without discounts of its own takes its customer's
(`customer.discount`, Stripe's rule), applied after its items' own like a subscription's: the projector joins the two
histories (`customer_discounts`), from the basis this module gives.

Reads only the canonical record (`schemas.stripe_objects`), whatever API version the state came in. A
discount known only by its id, a forever coupon without its `applies_to` (Stripe includes it only when
asked; the write path fills it in), or an amount coupon with no amount in the subscription's currency,
leaves the MRR of an active subscription underivable: that raises UnreadableObjectError rather than
count the subscription without its discount. Results are exact fractions of a minor unit; round only
when presenting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from schemas.stripe_objects import MONTHS_PER_INTERVAL, Coupon, Customer, Item, Subscription, UnreadableObjectError

MRR_STATUSES = frozenset({"active", "past_due"})


def monthly_factor(item: Item) -> Fraction:
    """Returns what turns one billing period's amount of `item` into a month's."""
    return MONTHS_PER_INTERVAL[item.interval] / item.interval_count


@dataclass(frozen=True, slots=True)
class Line:
    """What a coupon of the subscription (or its customer's) reads of one item: the item, its product, and what turns
    one billing period into a month."""

    item_id: str | None
    product_id: str | None
    factor: Fraction


@dataclass(frozen=True, slots=True)
class CustomerDiscountBasis:
    """What the customer's discount reduces of a subscription state in an MRR status that has no discounts of its own
    (Stripe: a subscription's discounts "if not specified or empty, inherit the discount from the subscription's
    customer"): each item's month amount after the item's own discounts, in the subscription's currency."""

    subscription_id: str
    currency: str
    lines: tuple[Line, ...]
    amounts: tuple[Fraction, ...]


def subscription_mrr(sub: Subscription, status: str | None = None) -> Fraction:
    """Returns the MRR of one subscription state (in `status`, default its own) in minor units of its currency,
    without its customer's discount (`mrr_with_customer_discount` adds it)."""
    if (status or sub.status) not in MRR_STATUSES:
        return Fraction(0)
    if sub.unresolved_discounts:
        raise UnreadableObjectError(
            "subscription", sub.id, "discounts",
            f"name {', '.join(sub.unresolved_discounts)} by id only: their coupons decide the MRR",
        )
    amounts = _discounted(sub.id, sub.currency, [_item_mrr(sub, item) for item in sub.items],
                          [_line(item) for item in sub.items], sub.coupons)
    return max(sum(amounts, Fraction(0)), Fraction(0))


def customer_discount_basis(sub: Subscription, status: str | None = None) -> CustomerDiscountBasis | None:
    """What a customer's discount would reduce of this state, or None when none can change its MRR: not in an MRR
    status, or discounts of its own (of any duration: they take the customer's place)."""
    if (status or sub.status) not in MRR_STATUSES or sub.coupons or sub.unresolved_discounts:
        return None
    return CustomerDiscountBasis(sub.id, sub.currency, tuple(_line(item) for item in sub.items),
                                 tuple(_item_mrr(sub, item) for item in sub.items))


def mrr_with_customer_discount(basis: CustomerDiscountBasis, coupon: Coupon | None) -> Fraction:
    """The MRR of a subscription state with no discounts of its own under its customer's forever coupon (None: the
    customer has none). Raises UnreadableObjectError when the coupon's amount is not in the subscription's currency."""
    amounts = list(basis.amounts) if coupon is None else \
        _discounted(basis.subscription_id, basis.currency, basis.amounts, basis.lines, (coupon,))
    return max(sum(amounts, Fraction(0)), Fraction(0))


def customer_forever_coupon(customer: Customer) -> Coupon | None:
    """The forever coupon of a customer's discount (None: no discount, or one that does not last), read as MRR needs
    it; raises UnreadableObjectError when it cannot be: named by id only, or without the products it reduces."""
    if customer.discount_problem is not None:
        raise UnreadableObjectError("customer", customer.id, "discount", f"cannot be read ({customer.discount_problem})")
    if customer.unresolved_discounts:
        raise UnreadableObjectError(
            "customer", customer.id, "discount",
            f"names {', '.join(customer.unresolved_discounts)} by id only: its coupon decides the MRR of the "
            "customer's subscriptions without discounts of their own",
        )
    coupon = next((c for c in customer.coupons if c.duration == "forever"), None)
    if coupon is not None and not coupon.applies_to_known:
        raise UnreadableObjectError(
            "customer", customer.id, f"discount coupon {coupon.id}",
            "came without applies_to (Stripe includes it only when asked): which items a forever coupon reduces "
            "decides the MRR",
        )
    return coupon  # an amount in a currency a subscription is not billed in: refused where it would reduce it


def _line(item: Item) -> Line:
    return Line(item.id, item.product_id, monthly_factor(item))


def _item_mrr(sub: Subscription, item: Item) -> Fraction:
    """One item's MRR after its own forever discounts (applied before the subscription's), never below 0."""
    if item.unresolved_discounts:  # the write path fills them in; a coupon gone from Stripe cannot be
        raise UnreadableObjectError(
            "subscription", sub.id, f"item {item.id} discounts",
            f"name {', '.join(item.unresolved_discounts)} by id only: their coupons decide the MRR",
        )
    amount = item.period_amount * monthly_factor(item)
    return max(_discounted(sub.id, sub.currency, [amount], (_line(item),), item.coupons)[0], Fraction(0))


def _discounted(subscription_id: str, currency: str, amounts: Sequence[Fraction], lines: Sequence[Line],
                coupons: Iterable[Coupon]) -> list[Fraction]:
    """The month's amounts of the items (`lines`) after the forever coupons, each on the items it applies to (those
    worth nothing aside). A percent scales them; an amount, taken off each billing period of the first item it applies
    to, comes off their sum, at most all of it, shared in proportion (as Stripe spreads a discount over an invoice's
    lines)."""
    amounts = list(amounts)
    for coupon in coupons:
        if coupon.duration != "forever":
            continue
        reduced = [i for i, line in enumerate(lines) if amounts[i] > 0 and _reduces(subscription_id, coupon, line)]
        if not reduced:
            continue
        if coupon.percent_off is not None:
            for i in reduced:
                amounts[i] *= 1 - coupon.percent_off / 100
        elif coupon.amount_off:
            base = sum((amounts[i] for i in reduced), Fraction(0))
            off = min(_amount_off(subscription_id, currency, coupon) * lines[reduced[0]].factor, base)
            for i in reduced:
                amounts[i] -= off * amounts[i] / base
    return amounts


def _reduces(subscription_id: str, coupon: Coupon, line: Line) -> bool:
    """Whether a forever coupon reduces an item: every item, or those of the products it is restricted to. Unknown
    (Stripe sent the coupon without `applies_to`, which it includes only when asked) is an error, never "all"."""
    if not coupon.applies_to_known:
        raise UnreadableObjectError(
            "subscription", subscription_id, f"coupon {coupon.id}",
            "came without applies_to (Stripe includes it only when asked): which items a forever coupon reduces "
            "decides the MRR",
        )
    if coupon.products is None:
        return True
    if line.product_id is None:
        raise UnreadableObjectError(
            "subscription", subscription_id, f"item {line.item_id}",
            f"names no product, and coupon {coupon.id} reduces only some products",
        )
    return line.product_id in coupon.products


def _amount_off(owner_id: str, currency: str, coupon: Coupon) -> int:
    """An amount coupon's amount in the subscription's currency: its own when they match, else its
    `currency_options` amount for that currency (as Stripe bills it) — never an amount in another currency."""
    if coupon.currency == currency and coupon.amount_off is not None:
        return coupon.amount_off
    options = dict(coupon.currency_options)
    if currency in options:
        return options[currency]
    raise UnreadableObjectError(
        "subscription", owner_id, f"coupon {coupon.id}",
        f"takes {coupon.amount_off} off in {coupon.currency or 'no currency'} from a subscription in {currency}, "
        f"and the coupon's currency_options for {currency} are not included",
    )


def as_decimal(value: Fraction) -> Decimal:
    """Returns `value` as a Decimal with six places (the column's scale)."""
    return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal("0.000001"))
