"""From a Stripe event (parsed JSON) to the envelope the three producers publish. Pure: no I/O, no clock.

The receiver, the poller and the importer all go through `envelope_for_event`, so a webhook
delivery and a poll of the same Stripe event produce the same event id, key and payload.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import orjson

from ingestor.errors import BadEventError
from ingestor.redaction import redact_event
from schemas import Envelope, Source

# The five resources we read; events about anything else are acknowledged but not published.
READ_OBJECT_TYPES = frozenset({"customer", "charge", "subscription", "invoice", "payment_intent"})
# Dashboard "send test webhook" events have ids like evt_00000000000000.
TEST_WEBHOOK_SUFFIX = "_00000000000000"


def parse_event(body: bytes) -> dict[str, Any]:
    """Returns the Stripe event in `body`; raises BadEventError if it is not JSON or not an event."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadEventError(f"body is not valid JSON: {exc.msg} at position {exc.pos}", "malformed_json") from exc
    check_event_shape(event)
    return event  # type: ignore[no-any-return]


def check_event_shape(event: object) -> None:
    """Raises BadEventError unless `event` has the fields every Stripe event has."""
    if not isinstance(event, dict):
        raise BadEventError("body is not a Stripe event: expected a JSON object", "not_an_event")
    problems = []
    if event.get("object") != "event":
        problems.append('"object" must be "event"')
    if not isinstance(event.get("id"), str) or not event["id"].startswith("evt_"):
        problems.append('"id" must be an evt_… string')
    if not isinstance(event.get("type"), str) or not event["type"]:
        problems.append('"type" must be a non-empty string')
    if not isinstance(event.get("created"), int) or isinstance(event.get("created"), bool):
        problems.append('"created" must be an integer (epoch seconds)')
    if not isinstance(event.get("livemode"), bool):
        problems.append('"livemode" must be true or false')
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict) or not isinstance(obj.get("object"), str):
        problems.append('"data.object" must be a Stripe object with an "object" type')
    elif not isinstance(obj.get("id"), str):
        problems.append('"data.object.id" must be a string')
    if problems:
        raise BadEventError("body is not a Stripe event: " + "; ".join(problems), "not_an_event")


def object_type(event: Mapping[str, Any]) -> str:
    """Returns the Stripe object type the event is about (e.g. "invoice")."""
    return str(event["data"]["object"]["object"])


def is_read_resource(event: Mapping[str, Any]) -> bool:
    """Tells whether the event is about one of the five resources we read."""
    return object_type(event) in READ_OBJECT_TYPES


def is_test_webhook(event: Mapping[str, Any]) -> bool:
    """Tells whether the event is a dashboard test webhook (never revenue)."""
    return str(event["id"]).endswith(TEST_WEBHOOK_SUFFIX)


def envelope_for_event(
    event: Mapping[str, Any], tenant_id: str, source: Source, received_time: datetime
) -> Envelope:
    """Returns the envelope for a Stripe event: redacted payload, event time = the event's `created`."""
    obj = event["data"]["object"]
    redacted = redact_event(dict(event))
    return Envelope(
        tenant_id=tenant_id,
        event_id=str(event["id"]),
        event_type=str(event["type"]),
        object_type=str(obj["object"]),
        object_id=str(obj["id"]),
        event_time=datetime.fromtimestamp(int(event["created"]), tz=timezone.utc),
        received_time=received_time,
        source=source,
        livemode=bool(event["livemode"]),
        api_version=event.get("api_version"),
        connected_account=event.get("account"),
        payload=orjson.dumps(redacted).decode(),
    )
