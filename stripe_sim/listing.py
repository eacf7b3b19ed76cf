"""List semantics of Stripe's read API: filters, newest-first cursor pagination and `has_more`.

Pure: takes a store, the query parameters and "now"; returns the list object or raises StripeError.
"""

from __future__ import annotations

import bisect
from typing import Callable, Mapping

from stripe_sim.errors import invalid, missing
from stripe_sim.model import Obj, Store

EVENT_WINDOW = 30 * 86400
KINDS = {"customers": "customer", "charges": "charge", "subscriptions": "subscription",
         "invoices": "invoice", "payment_intents": "payment_intent", "events": "event", "coupons": "coupon",
         "prices": "price"}
_SUB_STATUSES = {"active", "past_due", "unpaid", "canceled", "incomplete", "incomplete_expired",
                 "trialing", "paused", "all", "ended"}
Query = Mapping[str, str]


def parse_limit(query: Query) -> int:
    """Return `limit` (default 10), rejecting values outside 1..100."""
    raw = query.get("limit", "10")
    try:
        limit = int(raw)
    except ValueError:
        raise invalid(f"Invalid integer: {raw}", "limit") from None
    if not 1 <= limit <= 100:
        raise invalid("Invalid limit: must be between 1 and 100", "limit")
    return limit


def _int(query: Query, name: str) -> int:
    try:
        return int(query[name])
    except ValueError:
        raise invalid(f"Invalid integer: {query[name]}", name) from None


def created_bounds(query: Query) -> tuple[int | None, int | None]:
    """Return the oldest and newest `created` a query's filters allow (None: unbounded on that side): from
    `created` and `created[gt|gte|lt|lte]`, all of them applying at once."""
    lowest: list[int] = []
    highest: list[int] = []
    if "created" in query:
        lowest.append(_int(query, "created"))
        highest.append(_int(query, "created"))
    for op, lower, shift in (("gte", True, 0), ("gt", True, 1), ("lte", False, 0), ("lt", False, -1)):
        name = f"created[{op}]"
        if name in query:
            (lowest if lower else highest).append(_int(query, name) + shift)
    return (max(lowest) if lowest else None), (min(highest) if highest else None)


def created_filter(query: Query) -> Callable[[Obj], bool] | None:
    """Return a predicate for the query's `created` bounds, or None if it has none."""
    oldest, newest = created_bounds(query)
    if oldest is None and newest is None:
        return None
    return lambda o: (oldest is None or o["created"] >= oldest) and (newest is None or o["created"] <= newest)


def event_types(query: Query) -> set[str] | None:
    """Return the wanted event types from `type` or `types[]` (at most 20), or None."""
    types = [v for k, v in query.items() if k == "types" or (k.startswith("types[") and
                                                            k.endswith("]"))]
    if "type" in query and types:
        raise invalid("You may only specify one of these parameters: type, types.", "types")
    if len(types) > 20:
        raise invalid("You may pass at most 20 event types.", "types")
    if types:
        return set(types)
    if "type" in query:
        return {query["type"]}
    return None


def _type_match(wanted: set[str], evt_type: str) -> bool:
    if evt_type in wanted:
        return True
    # Stripe accepts wildcards such as `customer.*`.
    return any(w.endswith("*") and evt_type.startswith(w[:-1]) for w in wanted)


def _field_is(field: str, value: str) -> Callable[[Obj], bool]:
    """Bind field and value now: a lambda in the caller's loop would see only the last ones."""
    return lambda o: o.get(field) == value


def _status_is(status: str) -> Callable[[Obj], bool]:
    return lambda o: o["status"] == status


def _invoice_subscription_is(sub_id: str) -> Callable[[Obj], bool]:
    """Match on `parent.subscription_details.subscription`; `parent` may be absent or null."""
    return lambda o: ((o.get("parent") or {}).get("subscription_details", {})
                      .get("subscription") == sub_id)


def filters(resource: str, query: Query, now: int) -> list[Callable[[Obj], bool]]:
    """Return every predicate a list request applies."""
    preds: list[Callable[[Obj], bool]] = []
    created = created_filter(query)
    if created:
        preds.append(created)
    for field in ("customer", "payment_intent", "email"):
        if field in query:
            preds.append(_field_is(field, query[field]))
    if resource in ("customers", "coupons"):
        preds.append(lambda o: not o.get("deleted"))
    elif resource == "subscriptions":
        status = query.get("status")
        if status is not None and status not in _SUB_STATUSES:
            raise invalid(f"Invalid status: must be one of {', '.join(sorted(_SUB_STATUSES))}",
                          "status")
        if status is None:
            preds.append(lambda o: o["status"] != "canceled")
        elif status == "ended":
            preds.append(lambda o: o["status"] in ("canceled", "incomplete_expired"))
        elif status != "all":
            preds.append(_status_is(status))
    elif resource == "invoices":
        if "status" in query:
            preds.append(_status_is(query["status"]))
        if "subscription" in query:
            preds.append(_invoice_subscription_is(query["subscription"]))
    elif resource == "events":
        oldest = now - EVENT_WINDOW
        preds.append(lambda o: o["created"] >= oldest)
        wanted = event_types(query)
        if wanted:
            preds.append(lambda o: _type_match(wanted, o["type"]))
    return preds


def list_objects(store: Store, resource: str, query: Query, now: int) -> Obj:
    """Return one page of a list: newest first, `limit` items, cursor by object id."""
    kind = KINDS[resource]
    limit = parse_limit(query)
    preds = filters(resource, query, now)
    after, before = query.get("starting_after"), query.get("ending_before")
    if after and before:
        raise invalid("You may only specify one of these parameters: ending_before, "
                      "starting_after.", "ending_before")
    items = store.all(kind)
    oldest, newest = created_bounds(query)
    cursor = after or before
    step, i = 1, 0
    if cursor:
        pos = store.position(kind, cursor)
        if pos is None:
            raise missing(kind, cursor, "starting_after" if after
                          else "ending_before")
        step, i = (-1, pos - 1) if before else (1, pos + 1)
    elif newest is not None:  # newest first: skip what is newer than the range (a time slice's first page)
        i = bisect.bisect_left(items, -newest, key=_age)
    # Walking towards older (or, before a cursor, newer) objects, the range's far end stops the walk.
    beyond = oldest if step == 1 else newest
    page: list[Obj] = []
    while 0 <= i < len(items) and len(page) <= limit:
        obj = items[i]
        if beyond is not None and (obj["created"] < beyond if step == 1 else obj["created"] > beyond):
            break
        if all(p(obj) for p in preds):
            page.append(obj)
        i += step
    has_more = len(page) > limit
    page = page[:limit]
    if before:
        page.reverse()
    return {"object": "list", "data": page, "has_more": has_more, "url": f"/v1/{resource}"}


def _age(obj: Obj) -> int:
    """Sort key of the newest-first lists: ascending along them."""
    return -int(obj["created"])


def retrieve_object(store: Store, resource: str, obj_id: str, now: int) -> Obj:
    """Return one object by id, or raise Stripe's 404."""
    kind = KINDS[resource]
    obj = store.get(kind, obj_id)
    if obj is None or (kind == "event" and obj["created"] < now - EVENT_WINDOW):
        raise missing(kind, obj_id)
    if kind == "coupon" and obj.get("deleted"):
        raise missing(kind, obj_id)  # a deleted coupon is gone; the discounts that applied it keep their copy
    return obj
