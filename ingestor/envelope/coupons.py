"""A subscription's coupons as MRR needs them: found and filled in before the event is published.

A coupon may be restricted to some products (`applies_to.products`); it then reduces only their items. Stripe
includes `applies_to` only when asked (`GET /v1/coupons/{id}?expand[]=applies_to`, or a retrieve of the subscription
with `expand[]=discounts.source.coupon.applies_to`), so no event carries it, and without it a forever coupon's effect
on MRR is unknown. And since clover a discount names its coupon by id (`source.coupon`), which an item's discount
cannot have expanded on a retrieve (five levels, Stripe expands four). The write path asks for the coupons (a
coupon's terms and products never change) and lays them into the subscription — its `discount`, its `discounts`,
its items' discounts, and the same in `previous_attributes` — as if Stripe had sent them expanded. Pure: the caller
fetches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

CouponMap = Callable[[Any], Any]


def coupons_wanted(subscription: Mapping[str, Any]) -> list[str]:
    """Returns the ids of the coupons of a subscription (or its attributes before an update) that MRR needs and
    that are not there: forever coupons without `applies_to` (once and repeating coupons do not reduce MRR), and
    coupons an expanded discount names by id only."""
    wanted: list[str] = []

    def note(coupon: Any) -> Any:
        if isinstance(coupon, str):
            wanted.append(coupon)
        elif isinstance(coupon, Mapping) and coupon.get("duration") == "forever" and "applies_to" not in coupon \
                and isinstance(coupon.get("id"), str):
            wanted.append(coupon["id"])
        return coupon

    _coupons_mapped(subscription, note)
    return list(dict.fromkeys(wanted))


def coupons_laid_in(subscription: Mapping[str, Any], found: Mapping[str, Any]) -> dict[str, Any]:
    """The subscription (or its attributes before an update) with each coupon that `found` holds (coupon id → the
    coupon with its `applies_to`) laid in: a coupon named by id replaced by it, one embedded without `applies_to`
    given it. A coupon gone from Stripe is left as it came."""

    def lay_in(coupon: Any) -> Any:
        coupon_id = coupon if isinstance(coupon, str) else coupon.get("id")
        whole = found.get(coupon_id) if isinstance(coupon_id, str) else None
        if not isinstance(whole, Mapping) or "applies_to" not in whole:
            return coupon
        if isinstance(coupon, str):
            return whole
        return coupon if "applies_to" in coupon else {**coupon, "applies_to": whole["applies_to"]}

    return _coupons_mapped(subscription, lay_in)


def _coupons_mapped(subscription: Mapping[str, Any], mapped: CouponMap) -> dict[str, Any]:
    """A copy of the subscription with `mapped` applied to each coupon of an expanded discount (an object, or an id):
    in `discount` (until basil), `discounts[]` (`coupon`, or `source.coupon` since clover), and each item's
    `discounts[]`."""
    out = dict(subscription)
    if isinstance(out.get("discount"), Mapping):
        out["discount"] = _discount_mapped(out["discount"], mapped)
    return discount_lists_mapped(out, lambda listed: [_discount_mapped(d, mapped) for d in listed])


def discount_lists_mapped(subscription: Mapping[str, Any], mapped: Callable[[list[Any]], list[Any]]) -> dict[str, Any]:
    """A copy of the subscription (or its attributes before an update) with `mapped` applied to each list of
    discounts: its own `discounts` and each item's."""
    out = dict(subscription)
    if isinstance(out.get("discounts"), list):
        out["discounts"] = mapped(out["discounts"])
    items = out.get("items")
    if isinstance(items, Mapping) and isinstance(items.get("data"), list):
        out["items"] = {**items, "data": [
            {**item, "discounts": mapped(item["discounts"])}
            if isinstance(item, Mapping) and isinstance(item.get("discounts"), list) else item
            for item in items["data"]]}
    return out


def _discount_mapped(discount: Any, mapped: CouponMap) -> Any:
    if not isinstance(discount, Mapping):
        return discount  # an id: filled in with its discount first (`discounts.with_discounts`)
    if isinstance(discount.get("coupon"), (Mapping, str)):
        return {**discount, "coupon": mapped(discount["coupon"])}
    source = discount.get("source")
    if isinstance(source, Mapping) and isinstance(source.get("coupon"), (Mapping, str)):
        return {**discount, "source": {**source, "coupon": mapped(source["coupon"])}}
    return discount
