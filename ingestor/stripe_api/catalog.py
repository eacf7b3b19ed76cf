"""What we read from Stripe, in one place: the five resources, their permissions and event types.

The key test reads each resource (and the events list), the importer pages through the five
resources, the poller asks the events API for `EVENT_TYPES` (in `EVENT_TYPE_LISTS`), and the control API lists
the same event types for the user to select on their webhook endpoint. Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Mapping, Sequence

# How a subscription's discounts are asked for with their coupons, and its items' prices with their tiers (a tiered
# price's `tiers` are included only when asked for): on a retrieve, and the discounts on a list page too. Stripe
# expands at most four levels, a list's `data.` being one: `data.items.data.price.tiers` (five) fails the whole
# page, so the importer fills in tiers by retrieve (`importer._filled_in`), as the receiver and the poller do.
# A retrieve asks for the coupons' products too (`applies_to`, included only when asked; a deleted coupon's as well,
# as the discounts that applied it keep it): four levels. A list cannot (`data.` makes five): the importer asks each
# coupon (`GET /v1/coupons/{id}?expand[]=applies_to`).
# An item's discounts are expanded too (since 2024-04 they are ids); their coupons, five levels down, are asked by id.
DISCOUNT_EXPANSIONS: Final = ("discounts", "discounts.source.coupon", "discounts.source.coupon.applies_to",
                              "items.data.discounts")
TIER_EXPANSIONS: Final = ("items.data.price.tiers",)
# A customer's discount reduces its subscriptions that have none of their own; a coupon deleted since is read from it.
CUSTOMER_DISCOUNT_EXPANSION: Final = "discount.source.coupon.applies_to"
SUBSCRIPTION_EXPANSIONS_IN_LIST: Final = ("data.discounts", "data.discounts.source.coupon",
                                          "data.items.data.discounts")


@dataclass(frozen=True, slots=True)
class Resource:
    """One list endpoint we read: its name, object type, permission and dashboard label."""

    name: str
    object_type: str
    permission: str
    dashboard_label: str
    list_params: Mapping[str, Any]
    # Listed whatever its age, not only within the import's window (`EARLIEST_CREATED` on).
    whole_history: bool = False


IMPORTED: Final = (
    Resource("customers", "customer", "rak_customer_read", "Customers", {}),
    # Refunds expanded: their own dates (a charge snapshot alone only says how much was refunded).
    Resource("charges", "charge", "rak_charge_read", "Charges", {"expand": ["data.refunds"]}),
    # Discounts expanded with their coupons: forever coupons decide MRR (this needs the coupon permission); tiered
    # prices' tiers, which decide their amount, filled in by retrieve. Every one, whatever its age: a subscription created before
    # the window may be live now, and MRR counts it (within the window only, a business older than the window lost
    # every such subscription from its MRR, silently).
    Resource("subscriptions", "subscription", "rak_subscription_read", "Subscriptions",
             {"status": "all", "expand": list(SUBSCRIPTION_EXPANSIONS_IN_LIST)}, whole_history=True),
    Resource("invoices", "invoice", "rak_invoice_read", "Invoices", {}),
    Resource("payment_intents", "payment_intent", "rak_payment_intent_read", "PaymentIntents", {}),
)
EARLIEST_CREATED: Final = 0  # where a resource read whole starts (Unix time): no object of Stripe's is older
EVENTS: Final = Resource("events", "event", "rak_event_read", "Events", {})
# Coupons: a subscription's discounts name them, and MRR counts forever coupons. Since 2024-04 Stripe
# names a subscription's discounts by id; expanding them (and their coupons) needs this permission, and so does
# asking a forever coupon for the products it is restricted to (`GET /v1/coupons/{id}?expand[]=applies_to`).
COUPONS: Final = Resource("coupons", "coupon", "rak_coupon_read", "Coupons", {})
# Everything the key test reads: the five resources, the events list the poller needs, and coupons.
TESTED: Final = (*IMPORTED, EVENTS, COUPONS)
BY_NAME: Final = {r.name: r for r in TESTED}
BY_PERMISSION: Final = {r.permission: r for r in TESTED}


def in_words(labels: Sequence[str]) -> str:
    """"A, B and C"."""
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


# What a user sets to "Read" when creating the key, as every instruction says it: the key test refuses a key without
# one of them, so an instruction naming fewer (Coupons was left out of all of them) fails the user's first Test.
READ_ACCESS: Final = in_words([r.dashboard_label for r in TESTED])
# Not tested, so optional: a tiered price a subscription has left since is read from the price (`discounts.py`).
OPTIONAL_READ_ACCESS: Final = "Prices, if you bill with tiered prices"

# The event types about the five resources that revenue depends on, and a customer's own discount (it reduces the
# MRR of its subscriptions without discounts of their own; whether Stripe also sends `customer.updated` for its
# changes is not documented). A payment authorised first and captured later counts when `charge.captured` comes (its
# `charge.succeeded` says nothing was captured); `invoice.paid` covers every `invoice.payment_succeeded` (and
# invoices paid out of band), so that one is left out.
EVENT_TYPES: Final = (
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "charge.succeeded",
    "charge.captured",
    "charge.failed",
    "charge.refunded",
    "invoice.created",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "payment_intent.created",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "customer.discount.created",
    "customer.discount.updated",
    "customer.discount.deleted",
)
MAX_EVENT_TYPES_PER_LIST: Final = 20  # the events API's most `types` in one list
# The poller's lists each cycle: two, the second of the discount types alone (one request when none came).
EVENT_TYPE_LISTS: Final = tuple(EVENT_TYPES[i:i + MAX_EVENT_TYPES_PER_LIST]
                                for i in range(0, len(EVENT_TYPES), MAX_EVENT_TYPES_PER_LIST))
