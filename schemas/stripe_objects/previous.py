"""An object as it was before an update: its event's `previous_attributes` laid over it as Stripe builds them.

Stripe names the top-level fields an update changed, with their values before — and, since 2015-01-26, a nested
hash only by the keys that changed in it (`{discount: {coupon: {id, percent_off}}}` when a coupon was switched for
one of the same duration). An array is named whole since 2017-05-25; up to 2017-04-06 it held only its changed
elements, which cannot be laid over (which of the items changed is not said) — but for one item, which the legacy
`plan` and `quantity` beside it hold whole. Laying the update over the object key
by key gives the state before; a shallow copy gave a discount with half a coupon (unreadable) or, on basil, an
`items` without its `object`.

What the write path lays into an object itself (a coupon's `applies_to`, a price's `tiers`: Stripe sends neither in
an event) is not taken from the object into a hash of another id: the coupon or price left was not that one.
Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.stripe_objects.records import UnreadableObjectError

# Since this version an array in `previous_attributes` is the whole array; before, only its changed elements.
WHOLE_ARRAYS_SINCE = "2017-05-25"
# Fields the write path fills in (Stripe sends them only when asked): never inherited by a hash of another id.
FILLED_IN = frozenset({"applies_to", "tiers"})
MAX_DEPTH = 16  # a tenant signs its own webhooks: nesting beyond what Stripe sends is taken whole


def laid_over(obj: Mapping[str, Any], previous: Mapping[str, Any], depth: int = 0) -> dict[str, Any]:
    """`obj` with `previous` laid over it: a hash in both key by key, anything else replaced."""
    before = dict(obj)
    for name, value in previous.items():
        now = obj.get(name)
        if isinstance(value, Mapping) and isinstance(now, Mapping) and depth < MAX_DEPTH:
            if "id" in value and value.get("id") != now.get("id"):
                now = {key: v for key, v in now.items() if key not in FILLED_IN}
            before[name] = laid_over(now, value, depth + 1)
        else:
            before[name] = value
    return before


def state_before(obj: Mapping[str, Any], previous: Mapping[str, Any], api_version: str | None) -> dict[str, Any]:
    """The object before the update whose `previous_attributes` are `previous`, in `api_version`. Raises
    UnreadableObjectError when they cannot be laid over: an array named in a version that names only its changed
    elements."""
    if api_version is not None and api_version[:10] < WHOLE_ARRAYS_SINCE and _holds_array(previous):
        rest = {name: value for name, value in previous.items() if name != "items"}
        if _single_plan(obj) and not _holds_array(rest):
            # One item: the subscription's own `plan` and `quantity` (named here when they changed) are that item
            # whole, so the state before is read from them, without the items (every seat change names them).
            return laid_over({name: value for name, value in obj.items() if name != "items"}, rest)
        raise UnreadableObjectError(
            str(obj.get("object") or "object"), str(obj.get("id") or "?"), "previous_attributes",
            f"name an array by its changed elements only (API version {api_version[:10]}, before "
            f"{WHOLE_ARRAYS_SINCE}): the state before cannot be laid out")
    return laid_over(obj, previous)


def _single_plan(obj: Mapping[str, Any]) -> bool:
    """Whether a subscription shows its one item as its own `plan` (the legacy shape, with `quantity`)."""
    items = obj.get("items")
    listed = items.get("data") if isinstance(items, Mapping) else None
    return isinstance(obj.get("plan"), Mapping) and isinstance(listed, list) and len(listed) == 1


def _holds_array(value: Any, depth: int = 0) -> bool:
    if isinstance(value, list):
        return True
    if isinstance(value, Mapping) and depth < MAX_DEPTH:
        return any(_holds_array(v, depth + 1) for v in value.values())
    return False
