"""API-version rendering: objects are stored in one full shape and rendered as each API version shows them.

Stripe renders an event at the API version in force when it was created (and a request at the
version it asks for), so the simulator renders five eras of the five objects we read:

- `LEGACY_VERSION` (2019-02-19): charges with a `source` card (brand "Visa"), their refunds listed and no
  `amount_captured` or `payment_method_details`; subscriptions with a single legacy `plan` and `quantity`
  at the top, `start` (when the current plan configuration began) for `start_date`, items carrying `plan`
  (no `price`), no `currency`, one `discount` (coupon embedded); invoices with `subscription`, `paid`,
  `charge`; payment intents listing their `charges`.
- `V2022` (2022-11-15): today's charge card details and `amount_captured`, refunds no longer included;
  subscriptions with `currency`, prices, one `discount`; payment intents with `latest_charge`.
- `OLD_VERSION` (2024-06-20): as 2022, plus `discounts` (ids).
- `BASIL` (2025-03-31.basil): `invoice.subscription` under `parent`, the current period on the items,
  no `discount` (the `discounts` ids only), no `invoice` on charges or payment intents.
- `CURRENT_VERSION` (the `stripe` library's, 2026-10-28.endive): as basil; an expanded discount names its
  coupon under `source.coupon` (an id, unless expanded too).

A customer always has its `discount` (null, or the discount every subscription of theirs without one of its own
inherits): its coupon embedded before clover (2025-09-30), named by id under `source.coupon` from clover on, as
any discount is shown in that version (`customer.discount.*` events' objects too).

In every version a coupon is shown without its `applies_to` (the products it is restricted to), wherever it is
embedded: Stripe includes it only when a coupon is asked for with `expand[]=applies_to`.

In every version a tiered price (or plan) is shown without its `tiers`, in events too: Stripe includes them
only when a request asks (`expand[]=items.data.price.tiers`, see `expand_tiers`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any

from stripe_sim.model import Obj

LEGACY_VERSION = "2019-02-19"
V2022 = "2022-11-15"
OLD_VERSION = "2024-06-20"
BASIL_VERSION = "2025-03-31.basil"
CURRENT_VERSION = "2026-10-28.endive"
VERSIONS = (LEGACY_VERSION, V2022, OLD_VERSION, BASIL_VERSION, CURRENT_VERSION)
BASIL = "2025-03-31"
CLOVER = "2025-09-30"
ITEM_DISCOUNTS = "2024-04-03"  # subscriptions' and items' `discounts` (ids) from this version on
START_DATE = "2019-10-17"  # a subscription's `start_date` from this version on; before, `start` (its current plan's)


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
    return _as_of(obj, version)


def render_event(evt: Obj, version: str | None = None) -> Obj:
    """Return an event with `data.object` rendered in the event's own API version (or `version`)."""
    at = version or evt["api_version"]
    stored = evt["data"]["object"]
    data = {**evt["data"], "object": _as_of(stored, at)}
    previous = data.get("previous_attributes")
    if isinstance(previous, dict) and stored.get("object") in ("subscription", "customer"):
        data["previous_attributes"] = _changed(_as_of({**stored, **previous}, at), data["object"])
    elif isinstance(previous, dict) and stored.get("object") == "discount":
        data["previous_attributes"] = _discount_as_of(previous, at)  # a customer switched coupons
    return {**evt, "api_version": at, "data": data}


def _changed(before: Obj, after: Obj) -> Obj:
    """An update's `previous_attributes` as Stripe builds them: the fields of the object as shown before that differ
    from the object as shown now, with their values before; in a hash on both sides only the keys that changed
    (since 2015-01-26), an array whole (since 2017-05-25). So a subscription's renewal names its old period at the
    top before basil (`current_period_start/end`, its items unchanged and left out) and on the items from basil on
    (`items: {data: [...]}`); an upgrade before Prices names the old `plan` (what changed of it) and `quantity`; a
    coupon switched for one of the same duration names the old one's id and terms; a field a version does not show
    (basil's `discount`) is never named."""
    out: Obj = {}
    for name in [*before, *(n for n in after if n not in before)]:
        was, now = before.get(name), after.get(name)
        if was != now:
            out[name] = _changed(was, now) if isinstance(was, dict) and isinstance(now, dict) else was
    return out


def _as_of(obj: Obj, version: str) -> Obj:
    # An event carries the full object even for customer.deleted, so skip the deleted stub.
    renderer = _RENDERERS.get(str(obj.get("object")))
    return renderer(obj, version) if renderer else obj


def _without(obj: Obj, names: Iterable[str]) -> Obj:
    """A copy of `obj` without `names`, in its key order (a C-level copy, then a few pops: the simulator's
    hottest line when the importer lists, and its CPU competes with the worker's on a small machine)."""
    copy = dict(obj)
    for name in names:
        copy.pop(name, None)
    return copy


def _tiered(items: list[Obj]) -> bool:
    """Whether a price (or plan) of these items or invoice lines carries its tiers (as stored)."""
    return any("tiers" in (it.get("price") or {}) or "tiers" in (it.get("plan") or {}) for it in items)


def _untiered(item: Obj) -> Obj:
    """A subscription item or invoice line with its price's and plan's `tiers` left out."""
    out = dict(item)
    for name in ("price", "plan"):
        if isinstance(item.get(name), dict) and "tiers" in item[name]:
            out[name] = _without(item[name], ("tiers",))
    return out


def _untiered_list(listed: Obj) -> Obj:
    """A list object (`items`, `lines`) with its entries' tiers left out."""
    return {**listed, "data": [_untiered(it) for it in listed["data"]]}


def _invoice(inv: Obj, version: str) -> Obj:
    lines = inv.get("lines")
    if isinstance(lines, dict) and _tiered(lines.get("data") or []):
        inv = {**inv, "lines": _untiered_list(lines)}
    if is_basil(version):
        return _without(inv, ("subscription", "charge", "payment_intent", "paid", "discount"))
    parent = inv.get("parent") or {}
    details = parent.get("subscription_details") or {}
    out = _without(inv, ("parent", "payments"))
    out["subscription"] = details.get("subscription")
    out["paid"] = inv.get("status") == "paid"
    if version[:10] < "2019-03-14":
        out.setdefault("charge", None)
    return out


def _subscription(sub: Obj, version: str) -> Obj:
    if _tiered(sub["items"]["data"]):
        sub = {**sub, "items": _untiered_list(sub["items"])}
    if any(it.get("discounts") for it in sub["items"]["data"]):
        sub = {**sub, "items": _item_discounts_named(sub["items"], version)}
    items = sub["items"]["data"]
    if is_basil(version):
        out = _without(sub, ("discount",))
        return out
    first = items[0] if items else {}
    old_items = [_without(it, ("current_period_start", "current_period_end")) for it in items]
    out = {**_without(sub, ("discounts",) if version[:10] < ITEM_DISCOUNTS else ()),
           "current_period_start": first.get("current_period_start"),
           "current_period_end": first.get("current_period_end"),
           "items": {**sub["items"], "data": old_items}}
    if version[:10] < START_DATE:  # `start`: when the current plan configuration began (its items were made)
        out = _without(out, ("start_date",))
        out["start"] = max((it["created"] for it in items), default=sub["start_date"])
    if version[:10] < "2020-04-28":  # before Prices: items and the subscription name a plan
        out = _without(out, ("currency",))
        out["items"] = {**sub["items"], "data": [_without(it, ("price",)) for it in old_items]}
        if len(items) == 1:
            out["plan"], out["quantity"] = items[0]["plan"], items[0]["quantity"]
    discount = sub.get("discount")
    if isinstance(discount, dict):  # before clover the coupon is embedded, not under `source`
        out["discount"] = {**_without(discount, ("source",)), "coupon": coupon_as_shown(discount["coupon"])}
    return out


def _item_discounts_named(listed: Obj, version: str) -> Obj:
    """Items with their discounts named by id (2024-04 on; none before: an item could not have its own)."""
    named = version[:10] >= ITEM_DISCOUNTS
    return {**listed, "data": [{**it, "discounts": [d["id"] for d in it.get("discounts") or []]} if named
                               else _without(it, ("discounts",)) for it in listed["data"]]}


def expand_item_discounts(stored: Obj, rendered: Obj, version: str) -> Obj:
    """A rendered subscription with its items' discount ids expanded (`expand[]=items.data.discounts`): the coupon
    embedded (until clover) or named by id under `source.coupon` (it cannot be expanded five levels down)."""
    by_id = {d["id"]: d for it in stored["items"]["data"] for d in it.get("discounts") or []}
    if not by_id:
        return rendered
    items = rendered["items"]
    return {**rendered, "items": {**items, "data": [
        {**it, "discounts": [_discount_as_of(by_id[d], version) if isinstance(d, str) and d in by_id else d
                             for d in it["discounts"]]} if isinstance(it.get("discounts"), list) else it
        for it in items["data"]]}}


def _discount_as_of(discount: Obj, version: str) -> Obj:
    """A discount as shown: the coupon embedded (until clover), or named under `source.coupon` (clover on). Also
    the changed part of one (an event's `previous_attributes`)."""
    if version[:10] >= CLOVER:
        return _without(discount, ("coupon",))
    out = _without(discount, ("source",))
    if isinstance(discount.get("coupon"), dict):
        out["coupon"] = coupon_as_shown(discount["coupon"])
    return out


def _customer(cus: Obj, version: str) -> Obj:
    discount = cus.get("discount")
    return {**cus, "discount": _discount_as_of(discount, version)} if isinstance(discount, dict) else cus


def coupon_as_shown(coupon: Obj, version: str = CURRENT_VERSION) -> Obj:
    """A coupon without its `applies_to`, which Stripe includes only when asked (`expand[]=applies_to`)."""
    return _without(coupon, ("applies_to",))


def _charge(ch: Obj, version: str) -> Obj:
    if is_basil(version):
        return _without(ch, ("invoice",))
    if version[:10] >= "2022-11-15":
        return _without(ch, ("refunds",))
    if version[:10] >= "2019-03-18":
        return ch
    card = (ch.get("payment_method_details") or {}).get("card") or {}
    source = {"id": f"card_{ch['id'][3:]}", "object": "card", "brand": _LEGACY_BRANDS.get(str(card.get("brand")), "Unknown"),
              "last4": card.get("last4"), "exp_month": card.get("exp_month"), "exp_year": card.get("exp_year"),
              "funding": card.get("funding"), "country": card.get("country")}
    return {**_without(ch, ("amount_captured", "payment_method_details", "payment_method")), "source": source}


_LEGACY_BRANDS = {"visa": "Visa", "mastercard": "MasterCard", "amex": "American Express", "discover": "Discover",
                  "jcb": "JCB", "diners": "Diners Club", "unionpay": "UnionPay"}


def _payment_intent(pi: Obj, version: str) -> Obj:
    if is_basil(version):
        return _without(pi, ("invoice",))
    if version[:10] >= "2022-11-15":
        return pi
    return {**_without(pi, ("latest_charge",)),
            "charges": {"object": "list", "data": [], "has_more": False, "total_count": 0,
                        "url": f"/v1/charges?payment_intent={pi['id']}"}}


def _price(price: Obj, version: str) -> Obj:
    """A price as retrieved or listed: a tiered one's `tiers` only when asked for (`expand[]=tiers`)."""
    return _without(price, ("tiers",))


_RENDERERS: dict[str, Callable[[Obj, str], Obj]] = {
    "invoice": _invoice, "subscription": _subscription, "charge": _charge, "payment_intent": _payment_intent,
    "coupon": coupon_as_shown, "customer": _customer, "discount": _discount_as_of, "price": _price,
}


def expand_discounts(stored: Obj, rendered: Obj, version: str, coupons_too: bool,
                     products_too: bool = False) -> Obj:
    """A rendered subscription with its `discounts` ids expanded (`expand[]=discounts`), with `coupons_too` each
    discount's `source.coupon` expanded as well (clover on), and with `products_too` that coupon's `applies_to`
    (`expand[]=discounts.source.coupon.applies_to`; a deleted coupon's too, as the discount keeps it)."""
    discount = stored.get("discount")
    expanded: list[Any] = []
    for ref in rendered.get("discounts") or []:
        if isinstance(ref, str) and isinstance(discount, dict) and ref == discount.get("id"):
            expanded.append(_expanded_discount(discount, version, coupons_too, products_too))
        else:
            expanded.append(ref)
    return {**rendered, "discounts": expanded}


def expand_customer_discount(stored: Obj, rendered: Obj, version: str, products_too: bool = False) -> Obj:
    """A rendered customer with its discount's `source.coupon` expanded (`expand[]=discount.source.coupon`, clover
    on), with `products_too` that coupon's `applies_to` (`expand[]=discount.source.coupon.applies_to`)."""
    discount = stored.get("discount")
    if not isinstance(discount, dict) or not isinstance(rendered.get("discount"), dict):
        return rendered
    return {**rendered, "discount": _expanded_discount(discount, version, True, products_too)}


def _expanded_discount(discount: Obj, version: str, coupons_too: bool, products_too: bool) -> Obj:
    """A stored discount as shown, with `coupons_too` its `source.coupon` (clover on) the coupon itself, with
    `products_too` its `applies_to` (a deleted coupon's too, as the discount keeps it)."""
    found = _discount_as_of(discount, version)
    if coupons_too and isinstance(found.get("source"), dict):
        coupon = discount["coupon"] if products_too else coupon_as_shown(discount["coupon"])
        found = {**found, "source": {**found["source"], "coupon": coupon}}
    return found


def expand_tiers(stored: Obj, rendered: Obj, fields: Collection[str]) -> Obj:
    """A rendered subscription with its items' tiered prices (`fields`: "price", "plan") showing their tiers, as
    `expand[]=items.data.price.tiers` (`items.data.plan.tiers`) gives them; a legacy top-level `plan` too."""
    tiers = {p["id"]: p["tiers"] for it in stored["items"]["data"] for p in [it["price"]] if "tiers" in p}
    if not tiers:
        return rendered

    def with_tiers(entry: Obj) -> Obj:
        out = dict(entry)
        for name in fields:
            found = entry.get(name)
            if isinstance(found, dict) and found.get("id") in tiers:
                out[name] = {**found, "tiers": tiers[found["id"]]}
        return out

    out = {**rendered, "items": {**rendered["items"], "data": [with_tiers(it) for it in rendered["items"]["data"]]}}
    if "plan" in fields and isinstance(rendered.get("plan"), dict):
        out["plan"] = with_tiers({"plan": rendered["plan"]})["plan"]
    return out
