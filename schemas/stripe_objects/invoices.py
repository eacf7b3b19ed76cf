"""Invoices of any version: totals, amounts due and paid, status and when it was paid, and their subscription.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.stripe_objects.reader import FieldReader, ref
from schemas.stripe_objects.records import Invoice

INVOICE_STATUSES = frozenset({"draft", "open", "paid", "uncollectible", "void", "deleted"})


def read_invoice(obj: Mapping[str, Any]) -> Invoice:
    """An invoice of any version. Rules: see docs/metrics.md, "Field derivations: invoice"."""
    r = FieldReader(obj)
    currency = r.currency(obj.get("currency"))
    total = r.money(obj.get("total"), "total")
    amount_due = r.amount(obj.get("amount_due"), "amount_due")
    status = _invoice_status(r, obj)
    found = obj.get("status_transitions")
    transitions: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    if "amount_paid" in obj:  # since 2018-04-04
        amount_paid = r.amount(obj["amount_paid"], "amount_paid")
    elif isinstance(obj.get("paid"), bool):
        amount_paid = amount_due if obj["paid"] else 0
    else:
        raise r.fail("amount_paid", "is missing and cannot be derived (no amount_paid, no paid flag)")
    amount_remaining = (r.amount(obj["amount_remaining"], "amount_remaining") if "amount_remaining" in obj
                        else max(amount_due - amount_paid, 0))
    return Invoice(
        id=r.id, created=r.when(obj.get("created", obj.get("date")), "created"),
        customer_id=ref(obj.get("customer")), subscription_id=invoice_subscription(obj), status=status,
        currency=currency, billing_reason=r.text(obj.get("billing_reason"), "billing_reason"), total=total,
        amount_due=amount_due, amount_paid=amount_paid, amount_remaining=amount_remaining,
        period_start=r.time(obj.get("period_start"), "period_start"),
        period_end=r.time(obj.get("period_end"), "period_end"),
        paid_at=r.time(transitions.get("paid_at"), "status_transitions.paid_at"),
        number=r.text(obj.get("number"), "number"),
        attempt_count=attempts if isinstance(attempts := obj.get("attempt_count"), int) and attempts >= 0 else 0,
    )


def invoice_subscription(invoice: Mapping[str, Any]) -> str | None:
    """The invoice's subscription: `subscription` (until 2025-03-31) or `parent.subscription_details.subscription`."""
    legacy = ref(invoice.get("subscription"))
    if legacy:
        return legacy
    parent = invoice.get("parent")
    details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
    return ref(details.get("subscription")) if isinstance(details, Mapping) else None


def _invoice_status(r: FieldReader, obj: Mapping[str, Any]) -> str:
    """`status` (2018-11-08 on); before, from `paid`, `forgiven` and `closed`."""
    status = obj.get("status")
    if status is None:
        if obj.get("paid") is True:
            status = "paid"
        elif obj.get("forgiven") is True:
            status = "uncollectible"
        elif isinstance(obj.get("closed"), bool) or isinstance(obj.get("paid"), bool):
            status = "open"
    return r.status(status, INVOICE_STATUSES)
