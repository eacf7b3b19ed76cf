"""Which products a subscription's forever coupons reduce: found and filled in before the event is published.

A coupon may be restricted to some products (`applies_to.products`); it then reduces only their items. Stripe
includes `applies_to` only when asked (`GET /v1/coupons/{id}?expand[]=applies_to`), so no event and no
subscription carries it, and without it a forever coupon's effect on MRR is unknown. The write path asks for it
(a coupon's products never change) and lays it into every copy of the coupon in the subscription — its
`discount`, its `discounts`, its items' discounts, and the same in `previous_attributes` — as if Stripe had sent it
expanded. Pure: the caller fetches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

# What a coupon's `applies_to` is remembered as when Stripe no longer has the coupon (deleted since it was applied):
# never laid in, so the projector refuses the subscription's MRR by name rather than guess which items it reduces.
COUPON_GONE: Final = object()

CouponMap = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def coupons_without_products(subscription: Mapping[str, Any]) -> list[str]:
    """Returns the ids of the forever coupons in a subscription (or its attributes before an update) that came
    without `applies_to` (once and repeating coupons do not reduce MRR)."""
    return list(dict.fromkeys(
        coupon["id"] for coupon in _coupons(subscription)
        if coupon.get("duration") == "forever" and "applies_to" not in coupon and isinstance(coupon.get("id"), str)))


def products_laid_in(subscription: Mapping[str, Any], found: Mapping[str, Any]) -> dict[str, Any]:
    """The subscription (or its attributes before an update) with each coupon that `found` holds (coupon id →
    `applies_to`) given its `applies_to`; a coupon gone from Stripe is left as it came."""

    def lay_in(coupon: Mapping[str, Any]) -> Mapping[str, Any]:
        coupon_id = coupon.get("id")
        if "applies_to" in coupon or not isinstance(coupon_id, str) or found.get(coupon_id, COUPON_GONE) is COUPON_GONE:
            return coupon
        return {**coupon, "applies_to": found[coupon_id]}

    return _coupons_mapped(subscription, lay_in)


def _coupons(subscription: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    seen: list[Mapping[str, Any]] = []

    def note(coupon: Mapping[str, Any]) -> Mapping[str, Any]:
        seen.append(coupon)
        return coupon

    _coupons_mapped(subscription, note)
    return iter(seen)


def _coupons_mapped(subscription: Mapping[str, Any], mapped: CouponMap) -> dict[str, Any]:
    """A copy of the subscription with `mapped` applied to each expanded coupon: in `discount` (until basil),
    `discounts[]` (`coupon`, or `source.coupon` since clover), and each item's `discounts[]`."""
    out = dict(subscription)
    if isinstance(subscription.get("discount"), Mapping):
        out["discount"] = _discount_mapped(subscription["discount"], mapped)
    if isinstance(subscription.get("discounts"), list):
        out["discounts"] = [_discount_mapped(d, mapped) for d in subscription["discounts"]]
    items = subscription.get("items")
    if isinstance(items, Mapping) and isinstance(items.get("data"), list):
        out["items"] = {**items, "data": [
            {**item, "discounts": [_discount_mapped(d, mapped) for d in item["discounts"]]}
            if isinstance(item, Mapping) and isinstance(item.get("discounts"), list) else item
            for item in items["data"]]}
    return out


def _discount_mapped(discount: Any, mapped: CouponMap) -> Any:
    if not isinstance(discount, Mapping):
        return discount  # an id: filled in with its discount first (`discounts.with_discounts`)
    if isinstance(discount.get("coupon"), Mapping):
        return {**discount, "coupon": mapped(discount["coupon"])}
    source = discount.get("source")
    if isinstance(source, Mapping) and isinstance(source.get("coupon"), Mapping):
        return {**discount, "source": {**source, "coupon": mapped(source["coupon"])}}
    return discount
