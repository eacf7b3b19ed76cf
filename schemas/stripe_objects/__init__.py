"""One canonical model of the five Stripe objects we read, whatever API version rendered them (2015 on).

Stripe renders an event at the API version in force when it was created, so one tenant's topic holds
many shapes. This package turns any of them into the record the projections need, with one documented
rule per field (docs/metrics.md, "Field derivations", lists them); the projections read only these
records. Pure: no I/O, no clock.

**Never a silent default for money.** A money amount, currency, interval or quantity that is required
and cannot be derived raises `UnreadableObjectError` naming the field and the shapes tried: the record is
dead-lettered and counted in the tenant's health, never stored as 0, "" or "month". Fields that are not
money (a customer's e-mail, an invoice number) may be absent.

The receiver runs the same model on every delivery before publishing (an object that cannot be read is
refused with a 400), and the projector runs it on every record (what got onto the topic another way is
dead-lettered).

One module per kind of object (`charges`, `subscriptions`, `invoices`, `payments`: payment intents and customers),
the records they return (`records`), the field rules they share (`reader`), and every rule as data (`derivations`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.stripe_objects.charges import CHARGE_STATUSES, read_charge
from schemas.stripe_objects.derivations import DERIVATIONS
from schemas.stripe_objects.invoices import invoice_subscription, read_invoice
from schemas.stripe_objects.payments import read_customer, read_customer_discount, read_payment_intent
from schemas.stripe_objects.reader import ref
from schemas.stripe_objects.records import (
    Canonical,
    Charge,
    Coupon,
    Customer,
    Invoice,
    Item,
    PaymentIntent,
    Refund,
    Subscription,
    UnreadableObjectError,
)
from schemas.stripe_objects.subscriptions import MONTHS_PER_INTERVAL, read_subscription

__all__ = [
    "CHARGE_STATUSES", "DERIVATIONS", "MONTHS_PER_INTERVAL", "Canonical", "Charge", "Coupon", "Customer", "Invoice",
    "Item", "PaymentIntent", "Refund", "Subscription", "UnreadableObjectError", "invoice_subscription", "read_charge",
    "read_customer", "read_event_object", "read_invoice", "read_object", "read_payment_intent", "read_subscription",
    "ref",
]


def read_event_object(event: Mapping[str, Any]) -> Canonical:
    """Returns the canonical record of what a Stripe event is about, as rendered in its version: its object, or for
    a customer's own discount (`customer.discount.*`, the only events we read whose object is not one of the five)
    the customer as it leaves it, only its discount known. Raises UnreadableObjectError."""
    obj = event["data"]["object"]
    if isinstance(obj, Mapping) and obj.get("object") == "discount":
        return read_customer_discount(obj, removed=str(event.get("type")).endswith(".deleted"))
    return read_object(obj, event.get("api_version"))


def read_object(obj: Mapping[str, Any], api_version: Any = None) -> Canonical:
    """Returns the canonical record of any of the five objects as rendered in `api_version` (the event's; None
    when unknown); raises UnreadableObjectError."""
    kind = obj.get("object") if isinstance(obj, Mapping) else None
    if kind == "charge":
        return read_charge(obj, api_version)
    if kind == "subscription":
        return read_subscription(obj)
    if kind == "invoice":
        return read_invoice(obj)
    if kind == "payment_intent":
        return read_payment_intent(obj)
    if kind == "customer":
        return read_customer(obj)
    raise UnreadableObjectError(str(kind), str(obj.get("id") if isinstance(obj, Mapping) else "?"),
                                "object", "is not one of the five objects we read")

