"""From a Stripe event (parsed JSON) to the envelope the three producers publish. Pure: no I/O, no clock.

The receiver, the poller and the importer all go through `envelope_for_event`, so a webhook
delivery and a poll of the same Stripe event produce the same event id, key and payload.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, TypeGuard

import orjson

from ingestor.envelope.redaction import redacted_json
from ingestor.errors import BadEventError
from schemas import Envelope, Source
from schemas.stripe_objects.reader import MAX_UNIX_S

# The five resources we read; events about anything else are acknowledged but not published — but a customer's own
# discount (`customer.discount.*`): a change of it reduces the MRR of the customer's subscriptions.
READ_OBJECT_TYPES = frozenset({"customer", "charge", "subscription", "invoice", "payment_intent"})
CUSTOMER_DISCOUNT_EVENT_PREFIX = "customer.discount."
# What a discount applied to something else than the customer as a whole names (a subscription's, an item's, an
# invoice's: Stripe has sent `customer.discount.*` for those too); their changes come on the subscription's events.
_NOT_THE_CUSTOMERS_OWN = ("subscription", "subscription_item", "invoice", "invoice_item", "checkout_session")
# Dashboard "send test webhook" events have ids like evt_00000000000000.
TEST_WEBHOOK_SUFFIX = "_00000000000000"
# Stripe nests events a dozen levels deep; far deeper JSON is refused before redaction and
# re-serialisation recurse into it (orjson writes at most 254 levels, Python recurses ~1000).
MAX_NESTING = 64
# Stripe's ids, types and versions are far shorter; each is repeated in the envelope (and the object
# id in the record key), so unbounded ones could make a record Kafka refuses (503 for ever).
MAX_NAME_LENGTH = 255
MAX_CREATED = MAX_UNIX_S  # 9999-12-31T23:59:59Z, the last second a datetime can hold
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')  # one JSON string, escapes and all (linear: no nested repeats)


def container_count(body: bytes, exact_above: int) -> int:
    """How many objects and arrays a JSON text holds, at most: its `{` and `[` bytes, and past `exact_above` those
    outside strings only (a tenant may keep JSON text in metadata). The strings are cut out by a regular
    expression in C, some 16 ms a MiB of them: spent only on bodies past the bound."""
    count = body.count(b"{") + body.count(b"[")
    if count > exact_above:
        outside = _JSON_STRING.sub(b"", body)
        count = outside.count(b"{") + outside.count(b"[")
    return count


def parse_event(body: bytes) -> dict[str, Any]:
    """Returns the Stripe event in `body`; raises BadEventError if it is not JSON or not an event."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadEventError(f"body is not valid JSON: {exc.msg} at position {exc.pos}", "malformed_json") from exc
    # Nesting cannot be deeper than the number of brackets: counting bytes is far cheaper than a walk.
    check_event_shape(event, check_nesting=body.count(b"{") + body.count(b"[") > MAX_NESTING)
    return event  # type: ignore[no-any-return]


def check_event_shape(event: object, check_nesting: bool = True) -> None:
    """Raises BadEventError unless `event` has the fields every Stripe event has, of sane sizes."""
    if not isinstance(event, dict):
        raise BadEventError("body is not a Stripe event: expected a JSON object", "not_an_event")
    problems = []
    if event.get("object") != "event":
        problems.append('"object" must be "event"')
    if not is_name(event.get("id")) or not event["id"].startswith("evt_"):
        problems.append(f'"id" must be an evt_… string of at most {MAX_NAME_LENGTH} characters')
    if not is_name(event.get("type")):
        problems.append(f'"type" must be a string of 1 to {MAX_NAME_LENGTH} characters')
    created = event.get("created")
    if not isinstance(created, int) or isinstance(created, bool) or not 0 <= created <= MAX_CREATED:
        problems.append('"created" must be an integer (epoch seconds, year 1970 to 9999)')
    if not isinstance(event.get("livemode"), bool):
        problems.append('"livemode" must be true or false')
    for name in ("api_version", "account"):
        if event.get(name) is not None and not is_name(event[name]):
            problems.append(f'"{name}" must be null or a string of 1 to {MAX_NAME_LENGTH} characters')
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict) or not is_name(obj.get("object")):
        problems.append('"data.object" must be a Stripe object with an "object" type')
    elif obj["object"] in READ_OBJECT_TYPES and not is_name(obj.get("id")):
        # Only the five resources need one (their records' key; a customer's discount is keyed by its customer):
        # Stripe renders some objects without (a balance, a discount before discounts had ids), and a refused
        # delivery is retried for days, then its endpoint disabled.
        problems.append(f'"data.object.id" must be a string of 1 to {MAX_NAME_LENGTH} characters')
    if check_nesting and nesting_depth(event) > MAX_NESTING:
        problems.append(f"the JSON is nested more than {MAX_NESTING} levels deep")
    if problems:
        raise BadEventError("body is not a Stripe event: " + "; ".join(problems), "not_an_event")


def is_name(value: object) -> TypeGuard[str]:
    """Tells whether `value` is a string of 1 to MAX_NAME_LENGTH characters (ids, types, versions)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME_LENGTH


def nesting_depth(value: object) -> int:
    """Returns how deeply objects and arrays nest in a parsed JSON value (iteratively: no recursion limit)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return deepest


def object_type(event: Mapping[str, Any]) -> str:
    """Returns the Stripe object type the event is about (e.g. "invoice")."""
    return str(event["data"]["object"]["object"])


def is_read_resource(event: Mapping[str, Any]) -> bool:
    """Tells whether the event is about one of the five resources we read, or a customer's own discount."""
    return object_type(event) in READ_OBJECT_TYPES or is_customer_discount_event(event)


def is_customer_discount_event(event: Mapping[str, Any]) -> bool:
    """Tells whether the event is a change of a customer's own discount (`customer.discount.created`, `.updated` or
    `.deleted` about a discount of the customer as a whole, naming the customer): whether Stripe also sends
    `customer.updated` for it is not documented, so the discount's history is read from these too."""
    obj = event["data"]["object"]
    return (str(event["type"]).startswith(CUSTOMER_DISCOUNT_EVENT_PREFIX) and obj.get("object") == "discount"
            and is_name(obj.get("customer")) and all(obj.get(name) is None for name in _NOT_THE_CUSTOMERS_OWN))


def object_id(event: Mapping[str, Any]) -> str:
    """The id of what the event is about: its object's, or for a customer's discount its customer's (the discount
    is the customer's state, and versions before discounts had ids render it without one)."""
    obj = event["data"]["object"]
    return str(obj["customer"] if is_customer_discount_event(event) else obj["id"])


def is_test_webhook(event: Mapping[str, Any]) -> bool:
    """Tells whether the event is a dashboard test webhook (never revenue)."""
    return str(event["id"]).endswith(TEST_WEBHOOK_SUFFIX)


def envelope_for_event(
    event: Mapping[str, Any], tenant_id: str, source: Source, received_time: datetime
) -> Envelope:
    """Returns the envelope for a Stripe event: redacted payload, event time = the event's `created`."""
    obj = event["data"]["object"]
    return Envelope(
        tenant_id=tenant_id,
        event_id=str(event["id"]),
        event_type=str(event["type"]),
        object_type=str(obj["object"]),
        object_id=object_id(event),
        event_time=datetime.fromtimestamp(int(event["created"]), tz=timezone.utc),
        received_time=received_time,
        source=source,
        livemode=bool(event["livemode"]),
        api_version=event.get("api_version"),
        connected_account=event.get("account"),
        payload=redacted_json(dict(event)),
    )
