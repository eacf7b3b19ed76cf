"""A customer's discount joined into its subscriptions' MRR history, as a pure plan the store applies.

A customer's own discount (`customer.discount`) reduces each of its subscriptions that has no discounts of its own,
from when the customer got it until it lost it. Its history is the customer's (`customer.updated`, a snapshot), not
the subscription's: a coupon given in March changes the MRR of a subscription whose last event was in January. So the
MRR of a subscription version is decided by two histories, which arrive in any order and on different partitions.
The store keeps both as they come and, for each customer whose history holds a forever coupon, hands them here whole:
`plan` returns every version's MRR under the discount in effect at its time, and the points to add where the
discount changed between two of the subscription's own versions. Recomputed whole, the result does not depend on the
order things arrived in. No I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

import orjson

from projections.handlers.mrr import CustomerDiscountBasis, Line, as_decimal, mrr_with_customer_discount
from schemas.stripe_objects import Coupon, UnreadableObjectError

DERIVED_SUFFIX = ":customer_discount"


def coupon_json(coupon: Coupon) -> bytes:
    """A forever coupon as the `customer_discounts` table keeps it: what MRR reads of it."""
    return orjson.dumps({
        "id": coupon.id, "duration": coupon.duration,
        "percent_off": str(coupon.percent_off) if coupon.percent_off is not None else None,
        "amount_off": coupon.amount_off, "currency": coupon.currency,
        "currency_options": [list(option) for option in coupon.currency_options],
        "products": list(coupon.products) if coupon.products is not None else None,
    })


def unreadable_json(problem: str, coupon_id: str | None = None) -> bytes:
    """A customer's discount that cannot be read (its coupon by id only, or without its products), as kept, with the
    coupon it names: the customer's other states may hold that coupon read (a coupon's terms never change)."""
    return orjson.dumps({"unreadable": problem, "coupon_id": coupon_id})


def discount_state(state_time: int, state_rank: int, event_id: str, stored: Mapping[str, Any] | None) -> DiscountState:
    """A `customer_discounts` row as the plan reads it."""
    if stored is None:
        return DiscountState(state_time, state_rank, event_id, None)
    if "unreadable" in stored:
        coupon_id = stored.get("coupon_id")
        return DiscountState(state_time, state_rank, event_id, None, str(stored["unreadable"]),
                             coupon_id if isinstance(coupon_id, str) else None)
    return DiscountState(state_time, state_rank, event_id, coupon_from_json(stored))


def coupon_from_json(stored: Mapping[str, Any]) -> Coupon:
    products = stored.get("products")
    percent = stored.get("percent_off")
    return Coupon(id=stored["id"], duration=stored["duration"],
                  percent_off=Fraction(percent) if percent is not None else None,
                  amount_off=stored.get("amount_off"), currency=stored.get("currency"),
                  currency_options=tuple((c, a) for c, a in stored.get("currency_options") or ()),
                  applies_to_known=True, products=tuple(products) if products is not None else None)


def basis_json(basis: CustomerDiscountBasis) -> bytes:
    """What a customer's discount would reduce of a version, as `subscription_versions` keeps it (exact fractions)."""
    return orjson.dumps({
        "currency": basis.currency,
        "lines": [[line.item_id, line.product_id, str(line.factor), str(amount)]
                  for line, amount in zip(basis.lines, basis.amounts)],
    })


# What migration 0091 gave the versions in an MRR status projected before: whether a customer's discount could
# reduce them was not kept, so under one they keep the MRR they were projected with and are named in health until
# a replay.
BASIS_UNKNOWN = "unknown"


def basis_from_json(subscription_id: str, stored: Mapping[str, Any]) -> CustomerDiscountBasis | str:
    """The stored basis, or BASIS_UNKNOWN."""
    if stored.get(BASIS_UNKNOWN):
        return BASIS_UNKNOWN
    lines = stored["lines"]
    return CustomerDiscountBasis(
        subscription_id, stored["currency"],
        tuple(Line(item_id, product_id, Fraction(factor)) for item_id, product_id, factor, _ in lines),
        tuple(Fraction(amount) for *_, amount in lines),
    )


@dataclass(frozen=True, slots=True)
class DiscountState:
    """One customer state's discount: its forever coupon, or None; `unreadable` says why one cannot be read."""

    state_time: int
    state_rank: int
    event_id: str
    coupon: Coupon | None
    unreadable: str | None = None
    coupon_id: str | None = None  # of an unreadable one: the coupon it names

    @property
    def order(self) -> tuple[int, int, str]:
        return (self.state_time, self.state_rank, self.event_id)


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """A subscription version as stored, with what a customer's discount would reduce of it (None: nothing)."""

    subscription_id: str
    state_time: int
    state_rank: int
    event_id: str
    status: str
    currency: str
    mrr: Decimal
    discount_event_id: str | None
    basis: CustomerDiscountBasis | str | None  # BASIS_UNKNOWN: projected before customers' discounts were read

    @property
    def order(self) -> tuple[int, int, str]:
        return (self.state_time, self.state_rank, self.event_id)


@dataclass(frozen=True, slots=True)
class AddedVersion:
    """A point where the customer's discount changed while the subscription stayed as `copied`."""

    copied: StoredVersion
    state_time: int
    event_id: str  # the customer's event (a snapshot's id without its point), with DERIVED_SUFFIX
    discount_event_id: str
    mrr: Decimal


@dataclass(slots=True)
class Plan:
    """What joining a customer's discount history into its subscriptions' versions changes."""

    mrr: dict[tuple[str, int, int, str], tuple[Decimal, str | None]] = field(default_factory=dict)  # changed ones
    added: list[AddedVersion] = field(default_factory=list)
    current: dict[str, Decimal] = field(default_factory=dict)  # each subscription's newest MRR
    problems: list[UnreadableObjectError] = field(default_factory=list)
    looks: int = 0  # (subscription, change) pairs looked at


class UnreadableCustomerDiscount(UnreadableObjectError):
    """A customer state's discount that cannot be read, as the projector said when it read the state."""

    def __init__(self, customer_id: str, message: str, event_id: str):
        ValueError.__init__(self, message)
        self.kind, self.object_id, self.field, self.event_id = "customer", customer_id, "discount", event_id


# The most discount changes, and points added for them, one customer's join makes on a batch that touches it (a tenant
# signs its own webhooks and may toggle a discount by the thousand). Beyond, only the customer's subscriptions' own
# versions are priced (each under the discount in effect at its time): no point is added between them, and health
# says so. Far above a real customer's (a discount changes a few times in its life; Stripe no longer lets new ones be
# given to customers since basil).
MAX_CHANGES = 100
MAX_ADDED_POINTS = 5_000
MAX_LOOKS = 50_000  # (subscription, change) pairs looked at: a change may reduce nothing of thousands of them


class _TooMany(Exception):
    """The join would add more points than it may, or look at more (subscription, change) pairs than MAX_LOOKS."""


def plan(discounts: Sequence[DiscountState], versions: Sequence[StoredVersion], customer_id: str = "",
         max_changes: int | None = None, max_added: int | None = None) -> Plan:
    """Each version's MRR under the customer's discount in effect at its time (the newest customer state at or
    before it), and a point at each customer state that changes a subscription's MRR after its newest version
    before it. A customer state whose discount cannot be read takes its coupon from another of the customer's states
    that reads it (a coupon's terms never change), or else counts as not received (the one before stays in effect,
    as a dead-lettered event leaves the state before), and a coupon that cannot apply to a subscription (an
    amount in another currency) leaves it without; both are returned among the problems: counted in health by name,
    never guessed.

    One pass over both histories in time order per subscription, over the customer states that change the discount
    only. Past `max_changes` changes or `max_added` points, the versions only (see MAX_CHANGES), whatever order
    things came in: the work stays bounded by the versions and the changes."""
    result = Plan()
    read_coupons = {d.coupon.id: d.coupon for d in discounts if d.coupon is not None}
    readable = []
    for d in sorted(discounts, key=lambda d: d.order):
        if d.unreadable is None:
            readable.append(d)
        elif d.coupon_id in read_coupons:  # the same coupon, read in another of the customer's states
            readable.append(DiscountState(d.state_time, d.state_rank, d.event_id, read_coupons[d.coupon_id]))
        else:
            result.problems.append(UnreadableCustomerDiscount(customer_id, d.unreadable, _customer_event(d)))
    max_changes = MAX_CHANGES if max_changes is None else max_changes
    max_added = MAX_ADDED_POINTS if max_added is None else max_added
    unreadable = list(result.problems)
    changes = _changes(readable)
    by_subscription: dict[str, list[StoredVersion]] = {}
    for version in sorted(versions, key=lambda v: v.order):
        by_subscription.setdefault(version.subscription_id, []).append(version)
    if len(changes) <= max_changes:
        try:
            for subscription_id, own in by_subscription.items():
                result.current[subscription_id] = _swept(changes, own, result, max_added)
            return result
        except _TooMany:
            bound = (f"its discount changes would add more than {max_added} points to its subscriptions' MRR history, "
                     f"or make more than {MAX_LOOKS} checks")
    else:
        bound = f"its discount changed more than {max_changes} times"
    return _versions_only(customer_id, changes, by_subscription, unreadable, bound)


def _versions_only(customer_id: str, changes: Sequence[DiscountState],
                   by_subscription: Mapping[str, Sequence[StoredVersion]],
                   problems: list[UnreadableObjectError], bound: str) -> Plan:
    """Each version under the discount in effect at its time, found by bisection; no point added between them."""
    result = Plan(problems=problems)
    result.problems.append(UnreadableCustomerDiscount(
        customer_id, f"customer {customer_id}: {bound}: its subscriptions' own versions are priced under the "
        "discount in effect at their time, with no point where it changed between them", ""))
    times = [c.state_time for c in changes]
    for subscription_id, own in by_subscription.items():
        for version in own:
            at = bisect.bisect_right(times, version.state_time)
            result.current[subscription_id] = _priced(version, changes[at - 1] if at else None, result)
    return result


def _changes(discounts: Sequence[DiscountState]) -> list[DiscountState]:
    """The customer states, in order, that change its discount (the newest of each time; the first always)."""
    newest_of_time = [d for i, d in enumerate(discounts)
                      if i + 1 == len(discounts) or discounts[i + 1].state_time != d.state_time]
    changes: list[DiscountState] = []
    for d in newest_of_time:
        if not changes or d.coupon != changes[-1].coupon:
            changes.append(d)
    return changes


def _swept(changes: Sequence[DiscountState], own: Sequence[StoredVersion], result: Plan, max_added: int) -> Decimal:
    """Walks one subscription's versions and the discount changes in time order (a change at a version's time
    applies to it); returns the subscription's newest MRR."""
    own_times = {v.state_time for v in own}
    in_effect: DiscountState | None = None
    held: StoredVersion | None = None  # the newest version so far
    mrr_now = Decimal(0)
    i = 0
    for version in own:
        while i < len(changes) and changes[i].state_time <= version.state_time:
            in_effect = changes[i]
            i += 1
            mrr_now = _added(held, in_effect, own_times, mrr_now, result, max_added)
        held, mrr_now = version, _priced(version, in_effect, result)
    for change in changes[i:]:
        mrr_now = _added(held, change, own_times, mrr_now, result, max_added)
    return mrr_now


def _added(held: StoredVersion | None, change: DiscountState, own_times: set[int], mrr_now: Decimal,
           result: Plan, max_added: int) -> Decimal:
    """Adds the point where `change` changes the MRR of the subscription as `held` left it; returns the MRR after."""
    if held is None or held.basis is None or change.state_time in own_times:
        return mrr_now  # not begun, the discount cannot change it, or a version of that time reads the change
    result.looks += 1
    if result.looks > MAX_LOOKS:
        raise _TooMany
    mrr, _ = _mrr(held, change, result.problems)
    if mrr == mrr_now:
        return mrr_now
    event_id = _customer_event(change)
    result.added.append(AddedVersion(held, change.state_time, event_id + DERIVED_SUFFIX, event_id, mrr))
    if len(result.added) > max_added:
        raise _TooMany
    return mrr


def _priced(version: StoredVersion, discount: DiscountState | None, result: Plan) -> Decimal:
    """A version's MRR under `discount`, noted in `result` when it is not what is stored."""
    mrr, source = _mrr(version, discount, result.problems)
    if (mrr, source) != (version.mrr, version.discount_event_id):
        result.mrr[(version.subscription_id, version.state_time, version.state_rank, version.event_id)] = (mrr, source)
    return mrr


def _customer_event(state: DiscountState) -> str:
    """The event of a customer state: a snapshot's point (`:start`) left out (lineage says it by `derived_as`)."""
    return state.event_id.split(":")[0]


def _mrr(version: StoredVersion, discount: DiscountState | None,
         problems: list[UnreadableObjectError]) -> tuple[Decimal, str | None]:
    """A version's MRR under `discount`, and the customer state it comes from (None: no coupon applied)."""
    coupon = discount.coupon if discount is not None else None
    if version.basis is None or coupon is None:
        return (version.mrr if version.basis is None else _without(version)), None
    assert discount is not None
    try:
        if isinstance(version.basis, str):  # BASIS_UNKNOWN
            raise UnreadableObjectError(
                "subscription", version.subscription_id, "customer discount",
                "cannot be joined into a state projected before customers' discounts were read: replay the tenant")
        mrr = mrr_with_customer_discount(version.basis, coupon)
    except UnreadableObjectError as exc:
        exc.event_id = _customer_event(discount)
        problems.append(exc)
        return _without(version), None
    return as_decimal(mrr), _customer_event(discount)


def _without(version: StoredVersion) -> Decimal:
    """A version's MRR without a customer's discount: its own basis summed, or as stored (basis unknown)."""
    if isinstance(version.basis, CustomerDiscountBasis):
        return as_decimal(mrr_with_customer_discount(version.basis, None))
    return version.mrr
