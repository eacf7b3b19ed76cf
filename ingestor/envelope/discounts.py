"""What a subscription event (or a customer's, or a customer's discount's, for that discount) leaves unexpanded that
MRR needs, found and filled in before the event is published.

Discounts: since 2024-04 Stripe lists a subscription's `discounts` as ids, and since 2025-03-31.basil there is
no `discount` object beside them; since clover a discount names its coupon by id under `source.coupon`. Forever
coupons decide MRR. Tiers: a tiered price (or legacy plan) bills by its `tiers`, which Stripe includes only when
asked, so no event carries them. The write path fills both in with what a retrieve of the subscription with
`expand[]=discounts&expand[]=discounts.source.coupon&expand[]=items.data.price.tiers` gives (a coupon's terms and
a price's tiers never change), as if Stripe had sent them expanded; and its forever coupons' products
(`ingestor.envelope.coupons`). Pure: the caller fetches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ingestor.envelope.build import object_id
from ingestor.envelope.coupons import coupons_laid_in, coupons_wanted, discount_lists_mapped
from schemas.stripe_objects.previous import laid_over


@dataclass(frozen=True, slots=True)
class Unexpanded:
    """What a subscription event names without what MRR needs of it: discounts by id (their coupons), tiered
    prices without their tiers (by price id), and coupons named by id or forever ones without their products (by
    coupon id)."""

    discounts: tuple[str, ...] = ()
    tiered_prices: tuple[str, ...] = ()
    coupons: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.discounts or self.tiered_prices or self.coupons)

    def beyond(self, known: Expanded) -> Unexpanded:
        """Returns what of this `known` does not hold. (A price Stripe refused alone is still wanted: the
        subscription's retrieve gives it if the subscription is on it now, with no Prices permission needed.)"""
        return Unexpanded(tuple(d for d in self.discounts if d not in known.discounts),
                          tuple(p for p in self.tiered_prices if p not in known.tiers),
                          tuple(c for c in self.coupons if c not in known.coupons))


@dataclass(slots=True)
class Expanded:
    """What was fetched: a subscription's discounts and its items' (with their coupons laid in) by discount id, its
    items' tiered prices' tiers by price id, and coupons with their `applies_to` by coupon id."""

    discounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    tiers: dict[str, list[Any]] = field(default_factory=dict)
    coupons: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Tiered prices asked for alone that Stripe refused: price id → "missing" (404: a plan deleted, an id made up) or
    # "forbidden" (403: the key lacks the Prices permission). Not asked for alone again while known.
    no_tiers: dict[str, str] = field(default_factory=dict)

    def add(self, other: Expanded) -> None:
        """Adds what `other` holds."""
        self.discounts.update(other.discounts)
        self.tiers.update(other.tiers)
        self.coupons.update(other.coupons)
        self.no_tiers.update(other.no_tiers)


def unexpanded(event: Mapping[str, Any]) -> Unexpanded:
    """Returns what the subscription or customer event's object names without what MRR needs of it (nothing for
    other events): the coupons of its object, and of a subscription's attributes before an update (its MRR before;
    a customer's history is its states). A customer's discount reduces its subscriptions that have none of their
    own."""
    data = event.get("data") or {}
    obj = data.get("object") or {}
    if obj.get("object") == "discount":  # a customer's own (`customer.discount.*`); once deleted, none is in effect
        deleted = str(event.get("type")).endswith(".deleted")
        return Unexpanded(coupons=() if deleted else tuple(coupons_wanted({"discount": obj})))
    if obj.get("object") not in ("subscription", "customer"):
        return Unexpanded()
    previous = data.get("previous_attributes") if obj.get("object") == "subscription" else None  # (its MRR before)
    coupons = [*coupons_wanted(obj), *(coupons_wanted(laid_over(obj, previous)) if isinstance(previous, Mapping)
                                       else ())]
    return Unexpanded(tuple(unexpanded_discounts(event)), tuple(unexpanded_tiers(event)),
                      tuple(dict.fromkeys(coupons)))


def fill_in_target(event: Mapping[str, Any]) -> tuple[str, str]:
    """The object type and id whose retrieve fills in what the event leaves unexpanded: its subscription or
    customer, or for a customer's discount the customer (a coupon deleted since is read from its discount there)."""
    kind = str(event["data"]["object"]["object"])
    return ("customer" if kind == "discount" else kind), object_id(event)


def unexpanded_discounts(event: Mapping[str, Any]) -> list[str]:
    """Returns the ids of the discounts of a subscription event's object whose coupon is not there to read."""
    obj = (event.get("data") or {}).get("object") or {}
    if obj.get("object") != "subscription":
        return []
    embedded = obj.get("discount")
    embedded_id = embedded.get("id") \
        if isinstance(embedded, Mapping) and isinstance(embedded.get("coupon"), Mapping) else None
    listed = obj.get("discounts")
    missing = []
    for discount in listed if isinstance(listed, list) else []:  # any other shape: the projector reads it, or refuses
        if isinstance(discount, str):
            if discount != embedded_id:
                missing.append(discount)
        elif isinstance(discount, Mapping) and not _has_coupon(discount) and isinstance(discount.get("id"), str):
            missing.append(discount["id"])
    for item in _items(obj):  # an item's discounts (since 2024-04): ids, its coupons asked for by id once expanded
        listed = item.get("discounts")
        missing += [d for d in listed if isinstance(d, str)] if isinstance(listed, list) else []
    return list(dict.fromkeys(missing))


def _items(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = obj.get("items")
    data = items.get("data") if isinstance(items, Mapping) else None
    return [item for item in data if isinstance(item, Mapping)] if isinstance(data, list) else []


def _has_coupon(discount: Mapping[str, Any]) -> bool:
    source = discount.get("source")
    return isinstance(discount.get("coupon"), Mapping) or (
        isinstance(source, Mapping) and isinstance(source.get("coupon"), Mapping))


def unexpanded_tiers(event: Mapping[str, Any]) -> list[str]:
    """Returns the ids of the tiered prices (or plans) of a subscription event's object, and of its items before an
    update (its MRR before: for an upgrade older than the events window, the only account of the price it left),
    that bill a quantity (not metered) and came without their tiers."""
    data = event.get("data") or {}
    obj = data.get("object") or {}
    if obj.get("object") != "subscription":
        return []
    previous = data.get("previous_attributes")
    # (Before 2017-05-25 an items array there names changed elements only: laid over, it asks for nothing more.)
    before = laid_over(obj, previous) if isinstance(previous, Mapping) else {}
    return list(dict.fromkeys([*tiers_missing(obj), *tiers_missing(before)]))


def tiers_missing(subscription: Mapping[str, Any]) -> list[str]:
    """Returns the ids of a subscription's tiered prices (or plans) that bill a quantity and came without tiers."""
    return list(dict.fromkeys(p["id"] for p in _prices(subscription) if _needs_tiers(p)))


def _prices(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The prices and plans of a subscription's items, and its legacy top-level plan."""
    items = obj.get("items")
    data = items.get("data") if isinstance(items, Mapping) else None
    entries = [*(data if isinstance(data, list) else []), obj]
    return [p for entry in entries if isinstance(entry, Mapping)
            for p in (entry.get("price"), entry.get("plan")) if isinstance(p, Mapping)]


def _needs_tiers(price: Mapping[str, Any]) -> bool:
    recurring = price.get("recurring")
    usage = (recurring.get("usage_type") if isinstance(recurring, Mapping) else None) or price.get("usage_type")
    return (price.get("billing_scheme") == "tiered" and usage != "metered" and price.get("tiers") is None
            and isinstance(price.get("id"), str))


def expanded_in(subscription: Mapping[str, Any]) -> Expanded:
    """Returns what a subscription retrieved with the expansions holds: its and its items' expanded discounts by id,
    and the tiers of its items' tiered prices by price id."""
    discounts = {}
    for listed in [subscription.get("discounts"), *(item.get("discounts") for item in _items(subscription))]:
        for d in listed if isinstance(listed, list) else []:
            if isinstance(d, dict) and isinstance(d.get("id"), str):
                discounts[d["id"]] = d
    tiers = {p["id"]: p["tiers"] for p in _prices(subscription)
             if isinstance(p.get("id"), str) and isinstance(p.get("tiers"), list)}
    return Expanded(discounts, tiers)


def with_expanded(event: dict[str, Any], found: Expanded) -> dict[str, Any]:
    """Returns the event with each discount reference, each tiered price without tiers and each coupon without its
    products that `found` holds filled in."""
    return with_coupons(with_tiers(with_discounts(event, found.discounts), found.tiers), found.coupons)


def with_coupons(event: dict[str, Any], found: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the event with each coupon that `found` holds laid in (`coupons.coupons_laid_in`): in the object, and
    in `previous_attributes` (the discounts before an update)."""
    if not found:
        return event
    if event["data"]["object"].get("object") == "discount":  # a customer's own: the event's object is the discount
        return _object_and_before(event, lambda discount: coupons_laid_in({"discount": discount}, found)["discount"])
    return _object_and_before(event, lambda obj: coupons_laid_in(obj, found))


def with_discounts(event: dict[str, Any], found: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Returns the event with each discount reference that `found` holds replaced by its object: the subscription's
    own and its items', in the object and in `previous_attributes` (the items before a renewal or a change)."""
    return _object_and_before(event, lambda obj: _discounts_filled(obj, found))


def _object_and_before(event: dict[str, Any], fill: Callable[[Mapping[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """The event with `fill` applied to its object and to its attributes before an update (`previous_attributes`)."""
    data = {**event["data"], "object": fill(event["data"]["object"])}
    previous = data.get("previous_attributes")
    if isinstance(previous, Mapping):
        data["previous_attributes"] = fill(previous)
    return {**event, "data": data}


def _discounts_filled(subscription: Mapping[str, Any], found: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    def filled(listed: list[Any]) -> list[Any]:
        return [found.get(d, d) if isinstance(d, str)
                else found.get(i, d) if isinstance(d, Mapping) and isinstance(i := d.get("id"), str) else d
                for d in listed]

    return discount_lists_mapped(subscription, filled)


def with_tiers(event: dict[str, Any], found: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """Returns the event with each tiered price (or plan) without tiers that `found` holds given them: in the
    object, and in `previous_attributes` (the same price before a quantity change)."""
    if not found:
        return event
    data = {**event["data"], "object": tiers_laid_in(event["data"]["object"], found)}
    previous = data.get("previous_attributes")
    if isinstance(previous, Mapping) and ("items" in previous or "plan" in previous):
        data["previous_attributes"] = tiers_laid_in(previous, found)
    return {**event, "data": data}


def tiers_laid_in(obj: Mapping[str, Any], found: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """The subscription (or its attributes before an update) with its items' and legacy plan's tiers filled in."""
    out = _entry_with_tiers(obj, found)
    items = obj.get("items")
    if isinstance(items, Mapping) and isinstance(items.get("data"), list):
        out["items"] = {**items, "data": [_entry_with_tiers(it, found) if isinstance(it, Mapping) else it
                                          for it in items["data"]]}
    return out


def _entry_with_tiers(entry: Mapping[str, Any], found: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """An item (or the subscription, for its legacy `plan`) with its price's and plan's tiers filled in."""
    out = dict(entry)
    for name in ("price", "plan"):
        price = entry.get(name)
        if isinstance(price, Mapping) and price.get("tiers") is None and isinstance(price.get("id"), str) \
                and price["id"] in found:
            out[name] = {**price, "tiers": list(found[price["id"]])}
    return out
