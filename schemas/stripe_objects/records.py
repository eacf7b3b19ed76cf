"""The canonical records the projections read: one per Stripe object, whatever version rendered it, and the
error an object that cannot give one raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction


class UnreadableObjectError(ValueError):
    """A Stripe object lacks a field revenue needs, or holds it in a form no API version uses."""

    retriable = False

    def __init__(self, kind: str, object_id: str, field: str, problem: str):
        super().__init__(f"{kind} {object_id}: {field} {problem}")
        self.kind, self.object_id, self.field = kind, object_id, field
        self.event_id = ""  # set by whoever knows the event


@dataclass(frozen=True, slots=True)
class Refund:
    """A refund listed on a charge."""

    id: str
    amount: int
    currency: str
    status: str
    created: datetime


@dataclass(frozen=True, slots=True)
class Charge:
    id: str
    created: datetime
    customer_id: str | None
    invoice_id: str | None
    payment_intent_id: str | None
    currency: str
    amount: int
    amount_captured: int
    amount_refunded: int
    status: str
    captured: bool
    failure_code: str | None
    card_brand: str | None
    card_last4: str | None
    description: str | None
    refunds: tuple[Refund, ...]


@dataclass(frozen=True, slots=True)
class Coupon:
    """What MRR needs of a coupon: how long it lasts and how much it takes off."""

    id: str
    duration: str
    percent_off: Fraction | None
    amount_off: int | None
    currency: str | None  # of amount_off
    # amount_off in other currencies (`currency_options`, included when expanded): (currency, amount_off) pairs
    currency_options: tuple[tuple[str, int], ...] = ()
    # Which products it reduces (`applies_to.products`; Stripe includes `applies_to` only when asked): None when
    # it reduces every item. `applies_to_known` False: not included, so which items it reduces is not known.
    applies_to_known: bool = False
    products: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Item:
    """One subscription item as MRR sees it: its per-period amount (None when metered) and its interval."""

    id: str | None
    price_id: str | None
    product_id: str | None  # of its price (or plan): decides which coupons restricted to products reduce it
    quantity: int | None
    currency: str
    interval: str
    interval_count: int
    metered: bool
    period_amount: Fraction  # unit amount × quantity for one billing period, in minor units
    coupons: tuple[Coupon, ...] = ()  # of the item's own discounts (applied before the subscription's)
    unresolved_discounts: tuple[str, ...] = ()  # the item's discounts named only by id


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    customer_id: str
    status: str
    currency: str
    created: datetime
    start_date: datetime | None
    trial_end: datetime | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    items: tuple[Item, ...]
    coupons: tuple[Coupon, ...]
    # Discounts named only by id (API versions since 2024-04 list ids; clover names coupons by id):
    # their terms are unknown here, so MRR cannot be derived from this state alone. An item's own are on the item.
    unresolved_discounts: tuple[str, ...]
    # When each item's current period began (since basil, where items may renew at different times; before, none).
    item_period_starts: tuple[datetime, ...] = ()


@dataclass(frozen=True, slots=True)
class Invoice:
    id: str
    created: datetime
    customer_id: str | None
    subscription_id: str | None
    status: str
    currency: str
    billing_reason: str | None
    total: int
    amount_due: int
    amount_paid: int
    amount_remaining: int
    period_start: datetime | None
    period_end: datetime | None
    paid_at: datetime | None
    number: str | None
    attempt_count: int = 0  # payment attempts so far (not money: absent is 0); only grows


@dataclass(frozen=True, slots=True)
class PaymentIntent:
    id: str
    created: datetime
    customer_id: str | None
    invoice_id: str | None
    status: str
    currency: str
    amount: int
    amount_received: int


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    deleted: bool
    created: datetime | None
    email: str | None
    name: str | None
    currency: str | None
    # The customer's own discount (`discount`): it applies to each of its subscriptions without discounts of their
    # own. `discount_known` False: the object did not say (a deleted customer's stub).
    discount_known: bool = False
    coupons: tuple[Coupon, ...] = ()
    unresolved_discounts: tuple[str, ...] = ()  # named only by id, or with its coupon by id only
    discount_start: datetime | None = None  # when the discount was applied (`discount.start`)
    discount_problem: str | None = None  # why the discount cannot be read (its shape), when it cannot
    discount_coupon_id: str | None = None  # the coupon the discount names, read or not


Canonical = Charge | Subscription | Invoice | PaymentIntent | Customer
