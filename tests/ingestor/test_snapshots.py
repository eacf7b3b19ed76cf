"""Snapshot envelopes of imported objects: ids from the redacted text, and objects that cannot be one refused."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest

from ingestor.envelope.redaction import redact_event
from ingestor.envelope.snapshots import snapshot_envelope, snapshot_event_id
from ingestor.errors import BadEventError

FETCHED = datetime(2026, 6, 1, tzinfo=timezone.utc)


def envelope(obj: dict[str, Any]):  # type: ignore[no-untyped-def]
    return snapshot_envelope(obj, "tenant_a", True, "2024-06-20", FETCHED)


def test_the_payload_is_the_redacted_object_and_the_id_its_hash() -> None:
    charge = {"id": "ch_1", "object": "charge", "created": 1767225600, "amount": 500, "currency": "usd",
              "payment_method_details": {"type": "card", "card": {"brand": "visa", "last4": "4242",
                                                                   "fingerprint": "fp_1", "cvc_check": "pass"}}}
    snapshot = envelope(charge)
    payload = json.loads(snapshot.payload)
    assert payload["data"]["object"] == redact_event(charge)
    assert "fingerprint" not in snapshot.payload and "cvc_check" not in snapshot.payload
    canonical = orjson.dumps(redact_event(charge), option=orjson.OPT_SORT_KEYS)
    assert snapshot.event_id == payload["id"] == snapshot_event_id("tenant_a", canonical)
    assert (snapshot.object_id, snapshot.object_type, snapshot.event_type) == ("ch_1", "charge", "charge.snapshot")
    assert envelope(dict(reversed(list(charge.items())))).event_id == snapshot.event_id  # key order does not matter


@pytest.mark.parametrize("obj", [
    {"object": "charge", "id": {"card": {"number": "4242424242424242", "cvc": "123"}}},
    {"object": "payment_intent", "id": {"client_secret": "pi_1_secret_XYZ"}},
    {"object": "charge", "id": ["4242\n4242\n4242\n4242"]},
    {"object": {"secret": "sk_live_abc"}, "id": "ch_1"},
    {"object": "charge"},
    {"object": "charge", "id": ""},
    "ch_4242424242424242", ["ch_1"], 7, None,  # not an object at all
])
def test_an_object_without_a_string_id_and_type_is_refused_and_nothing_of_it_shown(obj: Any) -> None:
    """The id is the record's key and the type names the event: the text of a dict there would carry what
    redaction drops from the payload."""
    with pytest.raises(BadEventError) as refused:
        envelope(obj)
    assert refused.value.code == "malformed_object"
    assert "4242" not in str(refused.value) and "secret" not in str(refused.value)


def test_a_part_nested_past_what_json_writers_take_is_still_redacted_away() -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    intent = {"id": "pi_1", "object": "payment_intent", "created": 1767225600, "client_secret": deep}
    assert json.loads(envelope(intent).payload)["data"]["object"] == {"id": "pi_1", "object": "payment_intent",
                                                                      "created": 1767225600}


def test_an_object_json_cannot_hold_is_refused() -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    with pytest.raises(BadEventError, match="cannot be written as JSON"):
        envelope({"id": "in_1", "object": "invoice", "created": 1767225600, "lines": deep})


def test_an_object_nested_as_deep_as_a_parser_takes_is_refused_not_a_crash() -> None:
    deep: Any = {"x": 1}
    for _ in range(1000):  # orjson parses up to 1,023 levels; redaction's walk cannot go so deep
        deep = {"a": deep}
    with pytest.raises(BadEventError) as refused:
        envelope({"id": "in_1", "object": "invoice", "created": 1767225600, "lines": deep})
    assert refused.value.code == "malformed_object"


@pytest.mark.parametrize("created", [None, "1767225600", 1767225600.5, True, -1, 2**64 - 1])
def test_an_object_without_an_integer_created_time_is_refused(created: object) -> None:
    """The import pages by `created`: an object without it as an integer cannot be placed in a slice."""
    obj = {"id": "ch_1", "object": "charge"} | ({} if created is None else {"created": created})
    with pytest.raises(BadEventError, match="integer created") as refused:
        envelope(obj)
    assert refused.value.code == "malformed_object"
