"""Payment intents and customers of any version, and what a customer's discount event says of its customer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.stripe_objects.reader import FieldReader, ref
from schemas.stripe_objects.records import Customer, PaymentIntent, UnreadableObjectError
from schemas.stripe_objects.subscriptions import discount_list

# Before 2019-02-11 payment intents had these names.
PAYMENT_INTENT_STATUS_ALIASES: Mapping[str, str] = {
    "requires_source": "requires_payment_method", "requires_source_action": "requires_action",
}


def read_payment_intent(obj: Mapping[str, Any]) -> PaymentIntent:
    """A payment intent of any version. Rules: see docs/metrics.md, "Field derivations: payment intent"."""
    r = FieldReader(obj)
    status = r.status(obj.get("status"), frozenset({
        "requires_payment_method", "requires_confirmation", "requires_action", "processing", "requires_capture",
        "canceled", "succeeded"}), PAYMENT_INTENT_STATUS_ALIASES)
    amount = r.amount(obj.get("amount"), "amount")
    if "amount_received" in obj:
        received = r.amount(obj["amount_received"], "amount_received")
    else:
        raise r.fail("amount_received", "is missing (every payment intent version has it)")
    return PaymentIntent(
        id=r.id, created=r.when(obj.get("created"), "created"), customer_id=ref(obj.get("customer")),
        invoice_id=ref(obj.get("invoice")), status=status, currency=r.currency(obj.get("currency")),
        amount=amount, amount_received=received,
    )


def read_customer(obj: Mapping[str, Any]) -> Customer:
    """A customer of any version, or the stub a deleted one leaves (`{id, object, deleted: true}`). Its `discount`
    (one, or null; its coupon embedded, or since clover named by id under `source.coupon`) reduces the MRR of its
    subscriptions that have none of their own."""
    r = FieldReader(obj)
    deleted = obj.get("deleted") is True
    currency = obj.get("currency")
    discount = obj.get("discount")
    problem: str | None = None
    try:  # not the customer's own fields: a discount that cannot be read leaves them counted
        coupons, unresolved = discount_list(r, [discount], "discount")
        start = r.time(discount.get("start"), "discount.start") if isinstance(discount, Mapping) else None
    except UnreadableObjectError as exc:
        coupons, unresolved, start, problem = (), (), None, str(exc)
    return Customer(
        id=r.id, deleted=deleted, created=r.time(obj.get("created"), "created"),
        email=r.text(obj.get("email"), "email"), name=r.text(obj.get("name"), "name"),
        currency=r.currency(currency) if currency is not None else None,
        discount_known="discount" in obj, coupons=coupons, unresolved_discounts=unresolved, discount_start=start,
        discount_problem=problem, discount_coupon_id=_coupon_named(discount),
    )


def read_customer_discount(discount: Mapping[str, Any], removed: bool) -> Customer:
    """The customer as a `customer.discount.*` event leaves it: only its discount is known (this one, or none once
    `removed`); the event holds none of its other fields (None here, and never written from it)."""
    customer = discount.get("customer")
    if not isinstance(customer, str) or not customer:
        raise UnreadableObjectError("discount", str(discount.get("id") or "?"), "customer", "is missing")
    return read_customer({"id": customer, "object": "customer", "discount": None if removed else discount})


def _coupon_named(discount: Any) -> str | None:
    """The id of the coupon a discount names (embedded, or by id; under `source` since clover), if any."""
    if not isinstance(discount, Mapping):
        return None
    source = discount.get("source")
    return ref(discount.get("coupon") if discount.get("coupon") is not None or not isinstance(source, Mapping)
               else source.get("coupon"))
