"""A subscription's MRR history points: the version each state is, the earlier points an import's snapshot implies,
and the state before an update (`previous_attributes`) read as a snapshot of that moment. Pure: `writes.py` gathers
them with the rest of an envelope's writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from plumbing.health_rows import MESSAGE_CHARS, NOT_A_KAFKA_PARTITION, HealthRow, stable_offset
from projections.handlers.customer_discounts import basis_json
from projections.handlers.mrr import as_decimal, customer_discount_basis, subscription_mrr
from projections.handlers.ordering import STATUS_PROGRESS, state_rank
from schemas import Envelope, Source
from schemas.stripe_objects import Subscription, UnreadableObjectError, read_subscription
from schemas.stripe_objects.previous import state_before


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
    mrr: Decimal  # without the customer's discount: the store joins it in (`customer_discounts`)
    customer_discount_basis: bytes | None = None  # what the customer's discount would reduce (JSON), None: nothing


# Points derived from a snapshot rank below every real state of the same second (see ordering.py):
# they only fill history the events API no longer has, and never overrule an event.
DERIVED_RANK_OFFSET = 10**15


def _derived_rank(status: str) -> int:
    return state_rank("subscription", {"status": status}, False, False) - DERIVED_RANK_OFFSET


# "Before" points (see _version_before) rank above the snapshot-derived points and below every real
# event; among themselves the earliest update's wins, since it describes the oldest state (`_before_rank`).
BEFORE_RANK_BASE = -(5 * 10**14)


def epoch_seconds(value: datetime | None) -> int | None:
    """A time as whole seconds since the epoch (Stripe's unit), or None."""
    return int(value.timestamp()) if value is not None else None


# Where a state before an update that cannot be read is counted in the tenant's health (not a Kafka record).
STATES_BEFORE_TOPIC = "projection-states-before"


# What an update that only takes a discount away (or switches it) names: Stripe never shows a removed discount again,
# so its state before names the discount by id only — every ordinary removal, a repeating coupon's end among them.
DISCOUNT_FIELDS = frozenset({"discount", "discounts"})


def _unreadable_before(envelope: Envelope, previous: Mapping[str, Any], problem: Exception) -> list[HealthRow]:
    """The health row of a state before an update that cannot be read, but for an update of its discounts alone
    whose removed discount is named by id only (documented; naming it would name every ordinary removal).

    Without it, the subscription's history before the update (older than the events window: the update's
    `previous_attributes` are the only account of it) silently showed what the import's snapshot of now says — a
    tiered price left since, read without the key's Prices permission, counted at the new price back to the start;
    seats cut in the update that also took a discount away, the new seats from the start."""
    field = problem.field if isinstance(problem, UnreadableObjectError) else ""
    if field.endswith("discounts") and set(previous) <= DISCOUNT_FIELDS:
        return []
    message = (f"the state before this update cannot be read, so the subscription's MRR before it shows what earlier "
               f"events and the import's snapshot of now say: {problem}")
    return [HealthRow(envelope.tenant_id, STATES_BEFORE_TOPIC, NOT_A_KAFKA_PARTITION,
                      stable_offset(envelope.event_id, "before"), envelope.event_id, "UnreadableObjectError",
                      message[:MESSAGE_CHARS])]


def versions_before(envelope: Envelope, obj: Mapping[str, Any], sub: Subscription, previous: Mapping[str, Any],
                    time_ms: int, api_version: str | None) -> tuple[list[SubscriptionVersion], list[HealthRow]]:
    """The points of the state before an update (`_version_before`), or none and its health row when it cannot be
    read: the update itself still counts."""
    try:
        return _version_before(envelope, state_before(obj, previous, api_version), sub, time_ms), []
    except UnreadableObjectError as exc:
        return [], _unreadable_before(envelope, previous, exc)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        # A shape the reader did not foresee, in attributes a tenant's own webhook can make up: the update itself is
        # read and counts, only the state before is lost (named, by the error's kind: its text may quote the input).
        return [], _unreadable_before(envelope, previous, UnreadableObjectError(
            "subscription", sub.id, "previous_attributes", f"are malformed ({type(exc).__name__})"))


def _version_before(envelope: Envelope, raw: Mapping[str, Any], sub: Subscription,
                    time_ms: int) -> list[SubscriptionVersion]:
    """The state before an update (`raw`: the object with its `previous_attributes` laid over it). Raises
    UnreadableObjectError when its MRR cannot be derived (the update itself still counts).

    Fills history the events API no longer has: the earliest update seen tells what the subscription
    looked like before it (older items before an upgrade, trialing before active, past due before
    paid). Taken as a snapshot of that moment, it gives the points a snapshot gives (active or
    trialing from its start, active from its trial end, its past-due, unpaid or paused status from
    its current period's start, canceled from its end), and its status of then from its current
    period's start whatever it was, that come before the update; at each it
    outranks the snapshot of now, and the earliest update outranks later ones, whose states before
    are newer; real events in between are newer still and win. (Placed once, at the latest of these
    times taken from the state after: an upgrade older than the events window counted the new price
    from the start to the current period's start, a yearly one for a year; a later update's state
    before, unpaid, outranked the earlier ones at the start.) The state before is read by the same
    canonical rules; when they cannot derive it there is no point: the update itself still counts, the
    history before it is what earlier events and snapshots show, and health names it (`_unreadable_before`).
    """
    before = read_subscription(raw)
    subscription_mrr(before)
    start = epoch_seconds(before.start_date) or epoch_seconds(before.created)
    points: list[tuple[int, str]] = []
    if start is not None and before.status not in ("incomplete", "incomplete_expired"):
        period_starts = _period_starts(before)
        points = [(t, status) for t, status, _, _ in _snapshot_points(before, start, period_starts) if t < time_ms]
        taken = {t for t, _ in points}
        for period_start in period_starts:
            if start < period_start and period_start * 1000 < time_ms and period_start * 1000 not in taken:
                # What it was since its current period began, whatever its status: a later update's state before,
                # past due since then, would otherwise speak for the time before this update. An item's earlier
                # period (a yearly one beside a monthly) began before the latest renewal, whose invoice decides a
                # past-due, unpaid or paused status.
                latest = period_start == period_starts[-1]
                points.append((period_start * 1000, before.status if latest and before.status != "canceled" else
                               "trialing" if before.status == "trialing" else "active"))
    if not points:  # not yet paid for (incomplete), or nothing a snapshot would derive before the update
        points = [(start * 1000 if start is not None and start * 1000 < time_ms else time_ms - 1, before.status)]
    return [SubscriptionVersion(
        envelope.tenant_id, sub.id, at_ms, _before_rank(time_ms, status), envelope.event_id + ":before",
        before.customer_id, before.currency, status, as_decimal(subscription_mrr(before, status)),
        _basis(before, status)) for at_ms, status in points]


def _period_starts(sub: Subscription) -> list[int]:
    """When each of the state's current periods began: the subscription's (the earliest item's since basil) and each
    item's — since basil a subscription's items may renew at different times (a monthly item beside a yearly one),
    and a later update's state before at a monthly item's period start would outrank an earlier update whose only
    period start is the yearly item's."""
    starts = [epoch_seconds(sub.current_period_start), *map(epoch_seconds, sub.item_period_starts)]
    return sorted({t for t in starts if t is not None})


def _before_rank(update_ms: int, status: str) -> int:
    """The rank of a point of the state before an update: the earliest update's first; of one update's points at
    one time (a trial's end, where its first period also began), the one further in the lifecycle (past due after
    active), as the snapshot's points rank. Distinct, so none is dropped as the same row as another."""
    return BEFORE_RANK_BASE - (update_ms // 1000) * 8 + STATUS_PROGRESS["subscription"].get(status, 0)


def _basis(sub: Subscription, status: str) -> bytes | None:
    basis = customer_discount_basis(sub, status)
    return basis_json(basis) if basis is not None else None


def _version(envelope: Envelope, sub: Subscription, at_ms: int, status: str, rank: int,
             suffix: str) -> SubscriptionVersion:
    return SubscriptionVersion(envelope.tenant_id, sub.id, at_ms, rank, envelope.event_id + suffix, sub.customer_id,
                               sub.currency, status, as_decimal(subscription_mrr(sub, status)), _basis(sub, status))


def subscription_versions(envelope: Envelope, sub: Subscription, time_ms: int, rank: int) -> list[SubscriptionVersion]:
    """The version this state is, plus — for a snapshot — the earlier points it implies.

    A snapshot stands for history older than the events API's 30 days: active (or trialing until
    the trial end) from the start date with the current items, the current status (past_due,
    unpaid, paused) from the start of the current period, and canceled from `ended_at`. Upgrades
    and downgrades older than 30 days are not visible through Stripe's API and are not guessed.
    """
    points: list[tuple[int, str, int, str]] = [(time_ms, sub.status, rank, "")]  # (time, status, rank, id suffix)
    start = epoch_seconds(sub.start_date) or epoch_seconds(sub.created)
    if envelope.source is Source.IMPORT and start is not None \
            and sub.status not in ("incomplete", "incomplete_expired"):
        points += _snapshot_points(sub, start, _period_starts(sub))
    # The MRR of the points kept only: a point after the snapshot (a trial ending later) is not computed.
    return [_version(envelope, sub, *point) for point in points if point[0] <= time_ms]


def _snapshot_points(sub: Subscription, start: int, period_starts: list[int]) -> list[tuple[int, str, int, str]]:
    """The earlier points a snapshot implies, as (time, status, rank, id suffix); a past-due, unpaid or paused status
    from the latest of `period_starts` (the latest renewal's invoice decides it; since basil a yearly item's period
    may have begun long before a monthly item's)."""
    points = []
    ended = epoch_seconds(sub.ended_at)
    trial_end = epoch_seconds(sub.trial_end)
    if trial_end is not None and trial_end > start:
        points.append((start * 1000, "trialing", _derived_rank("trialing"), ":start"))
        if ended is None or trial_end < ended:
            points.append((trial_end * 1000, "active", _derived_rank("active"), ":trial_end"))
    else:
        points.append((start * 1000, "active", _derived_rank("active"), ":start"))
    period_start = period_starts[-1] if period_starts else None
    if sub.status in ("past_due", "unpaid", "paused") and ended is None and period_start is not None:
        if period_start > start:
            points.append((period_start * 1000, sub.status, _derived_rank(sub.status), ":since_period_start"))
    if ended is not None:
        points.append((ended * 1000, "canceled", _derived_rank("canceled"), ":end"))
    return points
