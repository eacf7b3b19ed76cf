"""A subscription's discounts named only by id, found and filled in before the event is published.

Since 2024-04 Stripe lists a subscription's `discounts` as ids, and since 2025-03-31.basil there is no
`discount` object beside them; since clover a discount names its coupon by id under `source.coupon`.
Forever coupons decide MRR, so the write path fills such references in with the objects a retrieve of
the subscription with `expand[]=discounts&expand[]=discounts.source.coupon` gives (the coupon terms
never change), as if Stripe had sent them expanded. Pure: the caller fetches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def unexpanded_discounts(event: Mapping[str, Any]) -> list[str]:
    """Returns the ids of the discounts of a subscription event's object whose coupon is not there to read."""
    obj = (event.get("data") or {}).get("object") or {}
    if obj.get("object") != "subscription":
        return []
    embedded = obj.get("discount")
    embedded_id = embedded.get("id") if isinstance(embedded, Mapping) and isinstance(embedded.get("coupon"), Mapping) else None
    listed = obj.get("discounts")
    missing = []
    for discount in listed if isinstance(listed, list) else []:  # any other shape: the projector reads it, or refuses
        if isinstance(discount, str):
            if discount != embedded_id:
                missing.append(discount)
        elif isinstance(discount, Mapping) and not _has_coupon(discount) and isinstance(discount.get("id"), str):
            missing.append(discount["id"])
    return missing


def _has_coupon(discount: Mapping[str, Any]) -> bool:
    source = discount.get("source")
    return isinstance(discount.get("coupon"), Mapping) or (
        isinstance(source, Mapping) and isinstance(source.get("coupon"), Mapping))


def with_discounts(event: dict[str, Any], found: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Returns the event with each discount reference that `found` holds replaced by its object."""
    obj = event["data"]["object"]
    listed = obj.get("discounts")
    if not isinstance(listed, list):
        return event
    discounts = [found.get(d, d) if isinstance(d, str)
                 else found.get(i, d) if isinstance(d, Mapping) and isinstance(i := d.get("id"), str) else d
                 for d in listed]
    return {**event, "data": {**event["data"], "object": {**obj, "discounts": discounts}}}
