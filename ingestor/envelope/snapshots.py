"""From a Stripe object read by the importer to a snapshot envelope. Pure: no I/O, no clock.

The history import has objects, not events, so each object becomes a synthetic Stripe-event-shaped
record: type `<object>.snapshot`, `data.object` = the redacted object, created = the fetch time
(the time of that state). The event id is derived from the tenant and the canonical JSON of the
redacted object, so the same state imported twice gets the same id and consumers dedupe it, while
a changed state gets a new id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from ingestor.envelope.redaction import redact_event
from schemas import Envelope, Source

SNAPSHOT_ID_PREFIX = "snap_"
SNAPSHOT_ID_HEX_CHARS = 32  # 128 bits of SHA-256


def snapshot_event_id(tenant_id: str, redacted_object: Mapping[str, Any]) -> str:
    """Returns `snap_` + the truncated SHA-256 of the tenant and the object's canonical JSON."""
    canonical = orjson.dumps(redacted_object, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(tenant_id.encode() + b"\x00" + canonical).hexdigest()
    return SNAPSHOT_ID_PREFIX + digest[:SNAPSHOT_ID_HEX_CHARS]


def snapshot_envelope(
    obj: Mapping[str, Any], tenant_id: str, livemode: bool, api_version: str | None, fetched_at: datetime
) -> Envelope:
    """Returns the snapshot envelope of one object as fetched at `fetched_at` in `api_version`."""
    redacted = redact_event(dict(obj))
    event_id = snapshot_event_id(tenant_id, redacted)
    event_type = f"{redacted['object']}.snapshot"
    created = int(fetched_at.timestamp())
    payload = {
        "id": event_id, "object": "event", "type": event_type, "created": created,
        "livemode": livemode, "api_version": api_version, "data": {"object": redacted},
    }
    return Envelope(
        tenant_id=tenant_id,
        event_id=event_id,
        event_type=event_type,
        object_type=str(redacted["object"]),
        object_id=str(redacted["id"]),
        event_time=fetched_at,
        received_time=fetched_at,
        source=Source.IMPORT,
        livemode=livemode,
        api_version=api_version,
        connected_account=None,
        payload=orjson.dumps(payload).decode(),
    )
