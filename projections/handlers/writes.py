"""From one envelope to the rows it writes: the projection handlers, as pure functions.

`writes_for(envelope)` reads the (redacted) Stripe JSON once and returns typed values — the
current-state row of the object, and for charges and subscriptions the history rows the
aggregates are derived from. No I/O, no clock: the store applies what this returns.

API versions: an event carries the account's version, so some fields sit in two places. Both
shapes are read: `invoice.subscription` (before 2025-03-31) or
`invoice.parent.subscription_details.subscription` (since); subscription period dates at the top
(before) or on the items (since); the coupon as `discount` (object) or `discounts` (expanded).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from projections.errors import UnknownObjectError
from projections.handlers.mrr import as_decimal, subscription_mrr
from projections.handlers.ordering import state_rank
from schemas import Envelope, Source

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


class RefundLevel(NamedTuple):
    """A refunded amount a charge was seen at, and when."""

    tenant_id: str
    charge_id: str
    amount_refunded: int
    seen_at: int


class SubscriptionVersion(NamedTuple):
    """One point of a subscription's MRR history."""

    tenant_id: str
    subscription_id: str
    state_time: int
    state_rank: int
    state_event_id: str
    customer_id: str
    currency: str
    status: str
    mrr: Decimal


@dataclass(slots=True)
class Writes:
    """Everything one or more envelopes write."""

    states: list[StateRow] = field(default_factory=list)
    refunds: list[RefundRow] = field(default_factory=list)
    refund_levels: list[RefundLevel] = field(default_factory=list)
    versions: list[SubscriptionVersion] = field(default_factory=list)

    def extend(self, other: Writes) -> None:
        """Adds `other`'s writes to these."""
        self.states.extend(other.states)
        self.refunds.extend(other.refunds)
        self.refund_levels.extend(other.refund_levels)
        self.versions.extend(other.versions)


def _ts(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), tz=timezone.utc) if isinstance(value, int) and not isinstance(value, bool) else None


def _id(value: Any) -> str | None:
    """Returns the id of an expandable field (an id string or an expanded object)."""
    if isinstance(value, Mapping):
        return str(value.get("id")) if value.get("id") is not None else None
    return str(value) if value is not None else None


def state_time_ms(envelope: Envelope) -> int:
    """Returns the state time in ms; a snapshot's fetch time is floored to its second (see ordering)."""
    ms = int(envelope.event_time.timestamp() * 1000)
    return ms - ms % 1000 if envelope.source is Source.IMPORT else ms


def invoice_subscription(invoice: Mapping[str, Any]) -> str | None:
    """Returns the invoice's subscription id in either API version's shape."""
    legacy = _id(invoice.get("subscription"))
    if legacy:
        return legacy
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") or {}
    return _id(details.get("subscription"))


def subscription_period(sub: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    """Returns the current period, from the subscription (old versions) or its items (2025-03-31+)."""
    start, end = _ts(sub.get("current_period_start")), _ts(sub.get("current_period_end"))
    if start is None:
        items = (sub.get("items") or {}).get("data") or []
        starts = [_ts(i.get("current_period_start")) for i in items]
        ends = [_ts(i.get("current_period_end")) for i in items]
        start = min((s for s in starts if s), default=None)
        end = max((e for e in ends if e), default=None)
    return start, end


def _values(table: str, obj: Mapping[str, Any], deleted: bool, data: bytes) -> tuple[Any, ...]:
    if table == "customers":
        return (deleted, _ts(obj.get("created")), obj.get("email"), obj.get("name"), obj.get("currency"), data)
    if table == "charges":
        card = ((obj.get("payment_method_details") or {}).get("card")) or {}
        return (
            _ts(obj["created"]), _id(obj.get("customer")), _id(obj.get("invoice")), _id(obj.get("payment_intent")),
            obj["currency"], int(obj["amount"]), int(obj.get("amount_captured") or 0),
            int(obj.get("amount_refunded") or 0), obj["status"], bool(obj.get("captured")),
            obj.get("failure_code"), card.get("brand"), card.get("last4"), obj.get("description"), data,
        )
    if table == "subscriptions":
        start, end = subscription_period(obj)
        items = [
            {"id": i.get("id"), "price": _id(i.get("price") or i.get("plan")), "quantity": i.get("quantity")}
            for i in (obj.get("items") or {}).get("data") or []
        ]
        return (
            deleted, _id(obj["customer"]), obj["status"], obj.get("currency") or "", _ts(obj["created"]),
            _ts(obj.get("start_date")), _ts(obj.get("trial_end")), start, end,
            bool(obj.get("cancel_at_period_end")), _ts(obj.get("canceled_at")), _ts(obj.get("ended_at")),
            as_decimal(subscription_mrr(obj)), orjson.dumps(items), data,
        )
    if table == "invoices":
        transitions = obj.get("status_transitions") or {}
        return (
            deleted, _ts(obj["created"]), _id(obj.get("customer")), invoice_subscription(obj), obj.get("status") or "draft",
            obj["currency"], obj.get("billing_reason"), int(obj.get("total") or 0), int(obj.get("amount_due") or 0),
            int(obj.get("amount_paid") or 0), int(obj.get("amount_remaining") or 0), _ts(obj.get("period_start")),
            _ts(obj.get("period_end")), _ts(transitions.get("paid_at")), obj.get("number"), data,
        )
    return (  # payment_intents
        _ts(obj["created"]), _id(obj.get("customer")), _id(obj.get("invoice")), obj["status"], obj["currency"],
        int(obj["amount"]), int(obj.get("amount_received") or 0), data,
    )


def writes_for(envelope: Envelope) -> Writes:
    """Returns the rows one envelope writes; raises UnknownObjectError for objects we do not project."""
    table = TABLE_OF_OBJECT.get(envelope.object_type)
    if table is None:
        raise UnknownObjectError(f"no projection for object type {envelope.object_type!r}")
    event = orjson.loads(envelope.payload)
    obj = event["data"]["object"]
    deleted = bool(obj.get("deleted")) or (
        envelope.event_type.endswith(".deleted") and envelope.object_type in ("customer", "invoice")
    )
    from_event = envelope.source is not Source.IMPORT
    time_ms = state_time_ms(envelope)
    rank = state_rank(envelope.object_type, obj, deleted, from_event)
    data = orjson.dumps(obj)
    writes = Writes()
    if deleted and envelope.object_type == "customer" and "email" not in obj:
        values = (True, None, None, None, None, data)  # Stripe's deleted stub: {"id", "object", "deleted"}
    else:
        values = _values(table, obj, deleted, data)
    writes.states.append(StateRow(table, envelope.tenant_id, envelope.object_id, time_ms, rank,
                                  envelope.event_id, envelope.livemode, values))
    if envelope.object_type == "charge":
        writes.extend(_charge_history(envelope.tenant_id, obj, time_ms))
    elif envelope.object_type == "subscription":
        writes.versions.extend(_subscription_versions(envelope, obj, time_ms, rank))
        previous = (event.get("data") or {}).get("previous_attributes")
        if isinstance(previous, Mapping) and previous:
            writes.versions.append(_version_before(envelope, obj, previous, time_ms))
    return writes


def _charge_history(tenant_id: str, charge: Mapping[str, Any], time_ms: int) -> Writes:
    writes = Writes()
    refunded = int(charge.get("amount_refunded") or 0)
    if refunded > 0:
        writes.refund_levels.append(RefundLevel(tenant_id, charge["id"], refunded, time_ms))
    listed = (charge.get("refunds") or {}).get("data") or []
    for refund in listed:
        created = _ts(refund.get("created"))
        if isinstance(refund, Mapping) and refund.get("id") and created is not None:
            writes.refunds.append(RefundRow(
                tenant_id, str(refund["id"]), charge["id"], str(refund.get("currency") or charge["currency"]),
                int(refund.get("amount") or 0), str(refund.get("status") or "succeeded"), created,
            ))
    return writes


# Points derived from a snapshot rank below every real state of the same second (see ordering.py):
# they only fill history the events API no longer has, and never overrule an event.
DERIVED_RANK_OFFSET = 10**15


def _derived_rank(status: str) -> int:
    return state_rank("subscription", {"status": status}, False, False) - DERIVED_RANK_OFFSET


# "Before" points (see _version_before) rank above the snapshot-derived points and below every real
# event; among themselves the earliest update's wins, since it describes the oldest state.
BEFORE_RANK_BASE = -(5 * 10**14)


def _version_before(envelope: Envelope, sub: Mapping[str, Any], previous: Mapping[str, Any],
                    time_ms: int) -> SubscriptionVersion:
    """The state before an update, from its `previous_attributes`.

    Fills history the events API no longer has: the earliest update seen tells what the subscription
    looked like before it (older items before an upgrade, trialing before active). It is placed at
    the latest point a snapshot would derive before the update (start, trial end, current period
    start), so it overrides those snapshot guesses; real events in between are newer and win.
    """
    before = {**sub, **previous}
    status = str(before.get("status") or sub["status"])
    period_start, _ = subscription_period(sub)
    marks = [sub.get("start_date") or sub.get("created"), sub.get("trial_end"),
             int(period_start.timestamp()) if period_start else None]
    earlier = [int(m) * 1000 for m in marks if isinstance(m, int) and int(m) * 1000 < time_ms]
    at_ms = max(earlier) if earlier else time_ms - 1
    return SubscriptionVersion(
        envelope.tenant_id, str(sub["id"]), at_ms, BEFORE_RANK_BASE - time_ms // 1000,
        envelope.event_id + ":before", _id(before.get("customer") or sub["customer"]) or "",
        str(sub.get("currency") or ""), status, as_decimal(subscription_mrr({**before, "status": status})),
    )


def _subscription_versions(envelope: Envelope, sub: Mapping[str, Any], time_ms: int, rank: int) -> list[SubscriptionVersion]:
    """The version this state is, plus — for a snapshot — the earlier points it implies.

    A snapshot stands for history older than the events API's 30 days: active (or trialing until
    the trial end) from the start date with the current items, the current status (past_due,
    unpaid, paused) from the start of the current period, and canceled from `ended_at`. Upgrades
    and downgrades older than 30 days are not visible through Stripe's API and are not guessed.
    """

    def version(at_ms: int, status: str, rank_: int, suffix: str = "") -> SubscriptionVersion:
        return SubscriptionVersion(
            envelope.tenant_id, str(sub["id"]), at_ms, rank_, envelope.event_id + suffix, _id(sub["customer"]) or "",
            str(sub.get("currency") or ""), status, as_decimal(subscription_mrr({**sub, "status": status})),
        )

    versions = [version(time_ms, str(sub["status"]), rank)]
    start = sub.get("start_date") or sub.get("created")
    if envelope.source is not Source.IMPORT or not isinstance(start, int):
        return versions
    status = str(sub["status"])
    if status in ("incomplete", "incomplete_expired"):
        return versions
    ended = sub.get("ended_at") if isinstance(sub.get("ended_at"), int) else None
    trial_end = sub.get("trial_end") if isinstance(sub.get("trial_end"), int) else None
    if trial_end is not None and trial_end > start:
        versions.append(version(start * 1000, "trialing", _derived_rank("trialing"), ":start"))
        if ended is None or trial_end < ended:
            versions.append(version(trial_end * 1000, "active", _derived_rank("active"), ":trial_end"))
    else:
        versions.append(version(start * 1000, "active", _derived_rank("active"), ":start"))
    period_start, _ = subscription_period(sub)
    if status in ("past_due", "unpaid", "paused") and ended is None and period_start is not None:
        since = int(period_start.timestamp())
        if since > start:
            versions.append(version(since * 1000, status, _derived_rank(status), ":since_period_start"))
    if ended is not None:
        versions.append(version(ended * 1000, "canceled", _derived_rank("canceled"), ":end"))
    return [v for v in versions if v.state_time <= time_ms]
