"""API-version rendering: objects are stored in the current (basil) shape and rendered per version.

2025-03-31.basil moved `invoice.subscription` under `invoice.parent.subscription_details` and the
subscription's `current_period_start/end` onto its items. Older versions get the old shapes back.
"""

from __future__ import annotations

from stripe_sim.model import Obj

BASIL = "2025-03-31"
OLD_VERSION = "2024-06-20"
CURRENT_VERSION = "2025-03-31.basil"


def is_basil(version: str) -> bool:
    """Whether a version has basil's shapes (2025-03-31 or later)."""
    return version[:10] >= BASIL


def render(obj: Obj, version: str) -> Obj:
    """Return an object as the given API version shows it (a new dict; input untouched)."""
    kind = obj.get("object")
    if kind == "customer" and obj.get("deleted"):
        return {"id": obj["id"], "object": "customer", "deleted": True}
    if kind == "event":
        return render_event(obj)
    if kind == "invoice":
        return _invoice(obj, version)
    if kind == "subscription":
        return _subscription(obj, version)
    return obj


def render_event(evt: Obj) -> Obj:
    """Return an event with `data.object` rendered in the event's own API version."""
    data = {**evt["data"], "object": _as_of(evt["data"]["object"], evt["api_version"])}
    return {**evt, "data": data}


def _as_of(obj: Obj, version: str) -> Obj:
    # An event carries the full object even for customer.deleted, so skip the deleted stub.
    kind = obj.get("object")
    if kind == "invoice":
        return _invoice(obj, version)
    if kind == "subscription":
        return _subscription(obj, version)
    return obj


def _invoice(inv: Obj, version: str) -> Obj:
    if is_basil(version):
        out = dict(inv)
        out.pop("subscription", None)
        return out
    parent = inv.get("parent") or {}
    details = parent.get("subscription_details") or {}
    out = {k: v for k, v in inv.items() if k != "parent"}
    out["subscription"] = details.get("subscription")
    return out


def _subscription(sub: Obj, version: str) -> Obj:
    if is_basil(version):
        return sub
    items = sub["items"]["data"]
    first = items[0] if items else {}
    old_items = [{k: v for k, v in it.items()
                  if k not in ("current_period_start", "current_period_end")} for it in items]
    return {**sub, "current_period_start": first.get("current_period_start"),
            "current_period_end": first.get("current_period_end"),
            "items": {**sub["items"], "data": old_items}}
