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


def unreadable_json(problem: str) -> bytes:
    """A customer's discount that cannot be read (its coupon by id only, or without its products), as kept."""
    return orjson.dumps({"unreadable": problem})


def discount_state(state_time: int, state_rank: int, event_id: str, stored: Mapping[str, Any] | None) -> DiscountState:
    """A `customer_discounts` row as the plan reads it."""
    if stored is None:
        return DiscountState(state_time, state_rank, event_id, None)
    if "unreadable" in stored:
        return DiscountState(state_time, state_rank, event_id, None, str(stored["unreadable"]))
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


def basis_from_json(subscription_id: str, stored: Mapping[str, Any]) -> CustomerDiscountBasis:
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
    basis: CustomerDiscountBasis | None

    @property
    def order(self) -> tuple[int, int, str]:
        return (self.state_time, self.state_rank, self.event_id)


@dataclass(frozen=True, slots=True)
class AddedVersion:
    """A point where the customer's discount changed while the subscription stayed as `copied`."""

    copied: StoredVersion
    state_time: int
    event_id: str  # the customer state's, with DERIVED_SUFFIX
    discount_event_id: str
    mrr: Decimal


@dataclass(slots=True)
class Plan:
    """What joining a customer's discount history into its subscriptions' versions changes."""

    mrr: dict[tuple[str, int, int, str], tuple[Decimal, str | None]] = field(default_factory=dict)  # changed ones
    added: list[AddedVersion] = field(default_factory=list)
    current: dict[str, Decimal] = field(default_factory=dict)  # each subscription's newest MRR
    problems: list[UnreadableObjectError] = field(default_factory=list)


def plan(discounts: Sequence[DiscountState], versions: Sequence[StoredVersion]) -> Plan:
    """Each version's MRR under the customer's discount in effect at its time (the newest customer state at or
    before it), and a point at each customer state that changes a subscription's MRR after its newest version
    before it. A discount that cannot be read, or a coupon that cannot apply (an amount in another currency), leaves
    the version without it and is returned among the problems: counted in health by name, never guessed."""
    discounts = sorted(discounts, key=lambda d: d.order)
    result = Plan()
    by_subscription: dict[str, list[StoredVersion]] = {}
    for version in sorted(versions, key=lambda v: v.order):
        by_subscription.setdefault(version.subscription_id, []).append(version)
    for subscription_id, own in by_subscription.items():
        timeline: list[tuple[tuple[int, int, str], Decimal]] = []
        for version in own:
            in_effect = _in_effect(discounts, version.state_time)
            mrr, source = _mrr(version, in_effect, result.problems)
            if (mrr, source) != (version.mrr, version.discount_event_id):
                result.mrr[(subscription_id, version.state_time, version.state_rank, version.event_id)] = (mrr, source)
            timeline.append((version.order, mrr))
        own_times = {v.state_time for v in own}
        for i, discount in enumerate(discounts):
            later = discounts[i + 1] if i + 1 < len(discounts) else None
            if discount.state_time in own_times or (later is not None and later.state_time == discount.state_time):
                continue  # a version of that time reads it; or a newer customer state of the same time decides
            before = [v for v in own if v.state_time < discount.state_time]
            if not before or before[-1].basis is None:
                continue
            copied = before[-1]
            mrr, source = _mrr(copied, discount, result.problems)
            held = max((t for t in timeline if t[0] < (discount.state_time,)), default=None)
            if held is not None and held[1] == mrr:
                continue
            event_id = discount.event_id + DERIVED_SUFFIX
            result.added.append(AddedVersion(copied, discount.state_time, event_id, discount.event_id, mrr))
            timeline.append(((discount.state_time, copied.state_rank, event_id), mrr))
        result.current[subscription_id] = max(timeline)[1]
    return result


def _in_effect(discounts: Sequence[DiscountState], at_ms: int) -> DiscountState | None:
    held = None
    for discount in discounts:
        if discount.state_time > at_ms:
            break
        held = discount
    return held


def _mrr(version: StoredVersion, discount: DiscountState | None,
         problems: list[UnreadableObjectError]) -> tuple[Decimal, str | None]:
    """A version's MRR under `discount`, and the customer state it comes from (None: no coupon applied)."""
    if version.basis is None:
        return version.mrr, None
    coupon = discount.coupon if discount is not None else None
    try:
        if discount is not None and discount.unreadable is not None:
            raise UnreadableObjectError("subscription", version.subscription_id, "customer discount",
                                        f"cannot be read: {discount.unreadable}")
        mrr = mrr_with_customer_discount(version.basis, coupon)
    except UnreadableObjectError as exc:
        exc.event_id = discount.event_id if discount is not None else version.event_id
        problems.append(exc)
        mrr = mrr_with_customer_discount(version.basis, None)
        coupon = None
    return as_decimal(mrr), (discount.event_id if coupon is not None and discount is not None else None)
