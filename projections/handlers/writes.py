"""From one envelope to the rows it writes: the projection handlers, as pure functions.

`writes_for(envelope)` reads the (redacted) Stripe JSON once, turns its object into the canonical record
(`schemas.stripe_objects`: one rule per field, whatever API version rendered it) and returns typed
values — the current-state row of the object, and for charges and subscriptions the history rows the
aggregates are derived from. No I/O, no clock: the store applies what this returns. An object whose
money cannot be derived raises UnreadableObjectError (the record is dead-lettered; nothing is guessed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from plumbing.health_rows import HealthRow
from projections.errors import UnknownObjectError
from projections.handlers.customer_discounts import coupon_json, unreadable_json
from projections.handlers.mrr import as_decimal, customer_forever_coupon, subscription_mrr
from projections.handlers.ordering import state_rank
from projections.handlers.subscription_history import (
    SubscriptionVersion,
    epoch_seconds,
    subscription_versions,
    versions_before,
)
from schemas import Envelope, Source
from schemas.stripe_objects import (
    Canonical,
    Charge,
    Customer,
    Invoice,
    Subscription,
    UnreadableObjectError,
    read_event_object,
    read_object,
)
from schemas.stripe_objects.reader import MAX_UNIX_S

# Column order of each state table after the common (tenant_id, id, state_time, state_rank,
# state_event_id, livemode) prefix; `data` is always last.
STATE_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "customers": ("deleted", "created", "email", "name", "currency", "data"),
    "charges": (
        "created", "customer_id", "invoice_id", "payment_intent_id", "currency", "amount", "amount_captured",
        "amount_refunded", "status", "captured", "failure_code", "card_brand", "card_last4", "description", "data",
    ),
    "subscriptions": (
        "deleted", "customer_id", "status", "currency", "created", "start_date", "trial_end",
        "current_period_start", "current_period_end", "cancel_at_period_end", "canceled_at", "ended_at",
        "mrr", "items", "data",
    ),
    "invoices": (
        "deleted", "created", "customer_id", "subscription_id", "status", "currency", "billing_reason", "total",
        "amount_due", "amount_paid", "amount_remaining", "period_start", "period_end", "paid_at", "number", "data",
    ),
    "payment_intents": (
        "created", "customer_id", "invoice_id", "status", "currency", "amount", "amount_received", "data",
    ),
}
CUSTOMER_DISCOUNT = "discount"  # a customer's own (`customer.discount.*`): a change of its customer's discount
TABLE_OF_OBJECT = {
    "customer": "customers", "charge": "charges", "subscription": "subscriptions",
    "invoice": "invoices", "payment_intent": "payment_intents",
}


class StateRow(NamedTuple):
    """The state of one object as one event shows it, with its last-writer-wins order."""

    table: str
    tenant_id: str
    object_id: str
    state_time: int
    state_rank: int
    state_event_id: str
    livemode: bool
    values: tuple[Any, ...]

    @property
    def order(self) -> tuple[int, int, str]:
        """Returns the last-writer-wins key (see projections/handlers/ordering.py)."""
        return (self.state_time, self.state_rank, self.state_event_id)


class RefundRow(NamedTuple):
    """A refund Stripe listed on a charge."""

    tenant_id: str
    refund_id: str
    charge_id: str
    currency: str
    amount: int
    status: str
    created: datetime
    seen_at: int  # state time (ms) of the event that listed it: lineage keeps the earliest
    event_id: str
    state_rank: int  # the listing charge state's rank: (seen_at, state_rank, event_id) orders the refund's states


class RefundState(NamedTuple):
    """A charge state's refunded amount (zero too), at its state time and rank, and its event (lineage): in time
    order, they date the refunds Stripe did not list."""

    tenant_id: str
    charge_id: str
    state_time: int
    state_rank: int
    amount_refunded: int
    event_id: str


class CustomerDiscountRow(NamedTuple):
    """One customer state's discount: its forever coupon (JSON; or why it cannot be read), or None."""

    tenant_id: str
    customer_id: str
    state_time: int
    state_rank: int
    state_event_id: str
    coupon: bytes | None


@dataclass(slots=True)
class Writes:
    """Everything one or more envelopes write."""

    states: list[StateRow] = field(default_factory=list)
    refunds: list[RefundRow] = field(default_factory=list)
    refund_states: list[RefundState] = field(default_factory=list)
    versions: list[SubscriptionVersion] = field(default_factory=list)
    customer_discounts: list[CustomerDiscountRow] = field(default_factory=list)
    health: list[HealthRow] = field(default_factory=list)  # what of an applied event could not be derived

    def extend(self, other: Writes) -> None:
        """Adds `other`'s writes to these."""
        self.states.extend(other.states)
        self.refunds.extend(other.refunds)
        self.refund_states.extend(other.refund_states)
        self.versions.extend(other.versions)
        self.customer_discounts.extend(other.customer_discounts)
        self.health.extend(other.health)

    def customers(self) -> set[tuple[str, str]]:
        """The (tenant, customer) pairs whose subscriptions' MRR these writes may change."""
        return {(v.tenant_id, v.customer_id) for v in self.versions} | \
            {(d.tenant_id, d.customer_id) for d in self.customer_discounts}


def state_time_ms(envelope: Envelope) -> int:
    """Returns the state time in ms; a snapshot's is floored to its second (see ordering)."""
    ms = int(envelope.event_time.timestamp() * 1000)
    return ms - ms % 1000 if envelope.source is Source.IMPORT else ms


def _values(record: Canonical, deleted: bool, data: bytes) -> tuple[Any, ...]:
    """The state columns of one canonical record, in STATE_COLUMNS order."""
    if isinstance(record, Customer):
        return (deleted or record.deleted, record.created, record.email, record.name, record.currency, data)
    if isinstance(record, Charge):
        return (
            record.created, record.customer_id, record.invoice_id, record.payment_intent_id, record.currency,
            record.amount, record.amount_captured, record.amount_refunded, record.status, record.captured,
            record.failure_code, record.card_brand, record.card_last4, record.description, data,
        )
    if isinstance(record, Subscription):
        items = [{"id": i.id, "price": i.price_id, "quantity": i.quantity} for i in record.items]
        return (
            deleted, record.customer_id, record.status, record.currency, record.created, record.start_date,
            record.trial_end, record.current_period_start, record.current_period_end, record.cancel_at_period_end,
            record.canceled_at, record.ended_at, as_decimal(subscription_mrr(record)), orjson.dumps(items), data,
        )
    if isinstance(record, Invoice):
        return (
            deleted, record.created, record.customer_id, record.subscription_id, record.status, record.currency,
            record.billing_reason, record.total, record.amount_due, record.amount_paid, record.amount_remaining,
            record.period_start, record.period_end, record.paid_at, record.number, data,
        )
    return (  # PaymentIntent
        record.created, record.customer_id, record.invoice_id, record.status, record.currency, record.amount,
        record.amount_received, data,
    )


def _rank_fields(record: Canonical) -> dict[str, Any]:
    """What the same-second tie-break reads: the status and what only grows (see ordering.GROWING_FIELD)."""
    if isinstance(record, Charge):
        return {"status": record.status, "captured": record.captured, "amount_refunded": record.amount_refunded}
    if isinstance(record, Invoice):
        return {"status": record.status, "attempt_count": record.attempt_count}
    return {"status": getattr(record, "status", None)}


def writes_for(envelope: Envelope) -> Writes:
    """Returns the rows one envelope writes; raises UnknownObjectError for objects we do not project and
    UnreadableObjectError for an object whose money cannot be derived."""
    if envelope.object_type == CUSTOMER_DISCOUNT:
        return _customer_discount_change(envelope)
    table = TABLE_OF_OBJECT.get(envelope.object_type)
    if table is None:
        raise UnknownObjectError(f"no projection for object type {envelope.object_type!r}")
    event = orjson.loads(envelope.payload)
    obj = event["data"]["object"]
    record = read_object(obj, event.get("api_version"))
    deleted = bool(obj.get("deleted")) or (
        envelope.event_type.endswith(".deleted") and envelope.object_type in ("customer", "invoice")
    )
    from_event = envelope.source is not Source.IMPORT
    time_ms = state_time_ms(envelope)
    rank = state_rank(envelope.object_type, _rank_fields(record), deleted, from_event,
                      creation=envelope.event_type.endswith(".created"))
    writes = Writes()
    writes.states.append(StateRow(table, envelope.tenant_id, envelope.object_id, time_ms, rank,
                                  envelope.event_id, envelope.livemode, _values(record, deleted, orjson.dumps(obj))))
    previous = (event.get("data") or {}).get("previous_attributes")
    if isinstance(record, Charge):
        writes.extend(_charge_history(envelope.tenant_id, record, time_ms, rank, envelope.event_id))
    elif isinstance(record, Customer) and record.discount_known:
        removed = previous.get("discount") if isinstance(previous, Mapping) else None
        writes.customer_discounts.extend(_customer_discounts(
            envelope, record, time_ms, discount_rank(rank, record, removed)))
    elif isinstance(record, Subscription):
        writes.versions.extend(subscription_versions(envelope, record, time_ms, rank))
        if isinstance(previous, Mapping) and previous:
            versions, health = versions_before(envelope, obj, record, previous, time_ms, event.get("api_version"))
            writes.versions.extend(versions)
            writes.health.extend(health)
    return writes


def _customer_discount_change(envelope: Envelope) -> Writes:
    """A `customer.discount.*` event: the customer's discount from then on (this one; none once deleted), a
    customer state that writes only that (the event holds none of the customer's other fields). It ranks as the
    customer's updates do (the same change may also come as a `customer.updated` of the same second)."""
    event = orjson.loads(envelope.payload)
    obj = (event.get("data") or {}).get("object")
    record = read_event_object(event) if isinstance(obj, dict) and obj.get("object") == "discount" else None
    if not isinstance(record, Customer) or envelope.object_id != record.id:
        raise UnknownObjectError("a customer's discount envelope whose object is not a discount of that customer")
    rank = state_rank("customer", {}, deleted=False, from_event=envelope.source is not Source.IMPORT)
    removed = obj if envelope.event_type.endswith(".deleted") else None
    return Writes(customer_discounts=_customer_discounts(envelope, record, state_time_ms(envelope),
                                                         discount_rank(rank, record, removed)))


def discount_rank(rank: int, customer: Customer, removed: Any) -> int:
    """Orders a customer's states of one second by what they say of its discount, then by `rank` (−1 to 1): a
    state showing a discount applied later, or the removal of the one applied latest, is the later state.

    Stripe's times are seconds, and a discount taken away and another given in the same second (`DELETE
    …/discount` then a coupon) came as `.deleted` and `.created` of one second, ordered by their random event ids:
    half the time the customer kept none. A discount is applied at its `start`, so of two states of a second, one
    showing a discount applied later is the later state, and one removing a discount (`removed`: the `.deleted`
    event's object, or `previous_attributes.discount` of the update that took it away) comes after the state that
    shows it. A state saying nothing of its discount's history (no discount, nothing removed) ranks first: an update
    showing none without `previous_attributes.discount` left it as it was, none, before any discount of its second.
    Ranks: a state showing a discount applied at `s` 8s to 8s + 2, removing it 8s + 4 to 8s + 6 (an import's point
    at `s` is 8s − 1), saying nothing 0 to 2."""
    applied = epoch_seconds(customer.discount_start)
    removed_at = removed.get("start") if isinstance(removed, Mapping) and applied is None else None
    if applied is not None:
        order = 2 * applied
    elif type(removed_at) is int and 0 <= removed_at <= MAX_UNIX_S:
        order = 2 * removed_at + 1
    else:
        order = 0
    return _in_order(order, rank)


# An import's point at a discount's start (`_customer_discounts`): below the states Stripe sent showing it (−1 to 1).
IMPORTED_START_RANK = -2


def _in_order(order: int, rank: int) -> int:
    """The rank of a customer state of discount `order` and of `rank` (−2 to 1) within it."""
    return order * 4 + rank + 1


def _customer_discounts(envelope: Envelope, customer: Customer, time_ms: int, rank: int) -> list[CustomerDiscountRow]:
    """The customer state's discount; for a snapshot, the same from when it was applied (`discount.start`): it
    stands for history the events API no longer has, and of that second's states ranks just below those showing
    this discount (`discount_rank`), above the removal of one applied earlier (its start proves it came after) and
    the states that say nothing of the discount's history."""
    coupon = _discount_json(customer)
    rows = [CustomerDiscountRow(envelope.tenant_id, customer.id, time_ms, rank, envelope.event_id, coupon)]
    start = epoch_seconds(customer.discount_start)
    if envelope.source is Source.IMPORT and coupon is not None and start is not None and start * 1000 < time_ms:
        rows.append(CustomerDiscountRow(envelope.tenant_id, customer.id, start * 1000,
                                        _in_order(2 * start, IMPORTED_START_RANK), envelope.event_id + ":start",
                                        coupon))
    return rows


def _discount_json(customer: Customer) -> bytes | None:
    """The customer's forever coupon as stored; one that cannot be read is stored as such, with the coupon it names
    (the customer's own state still counts): the join reads that coupon from another of the customer's states, or
    else counts the state as not received and names it in health, never taking it for none."""
    try:
        coupon = customer_forever_coupon(customer)
    except UnreadableObjectError as exc:
        return unreadable_json(str(exc), customer.discount_coupon_id)
    return coupon_json(coupon) if coupon is not None else None


def _charge_history(tenant_id: str, charge: Charge, time_ms: int, rank: int, event_id: str) -> Writes:
    writes = Writes()
    writes.refund_states.append(RefundState(tenant_id, charge.id, time_ms, rank, charge.amount_refunded, event_id))
    for refund in charge.refunds:
        writes.refunds.append(RefundRow(tenant_id, refund.id, charge.id, refund.currency, refund.amount,
                                        refund.status, refund.created, time_ms, event_id, rank))
    return writes
