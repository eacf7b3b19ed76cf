"""From a Stripe object read by the importer to a snapshot envelope. Pure: no I/O, no clock.

The history import has objects, not events, so each object becomes a synthetic Stripe-event-shaped
record: type `<object>.snapshot`, `data.object` = the redacted object, created = a second before Stripe
read that state (`STATE_SECONDS_BEFORE_ASKED`). The event id is derived from the tenant and the canonical JSON of the
redacted object (compact, keys sorted), so the same state imported twice gets the same id and
consumers dedupe it, while a changed state gets a new id. The payload carries that same text, so each
object is serialised once (the importer's hot path).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from ingestor.envelope.build import MAX_CREATED, MAX_NAME_LENGTH, is_name
from ingestor.envelope.card_numbers import mask_pans
from ingestor.envelope.redaction import redacted_sorted_json
from ingestor.errors import BadEventError
from schemas import Envelope, Source

SNAPSHOT_ID_PREFIX = "snap_"
# How long before the request that returned a page its snapshots are dated. Stripe read the objects after the
# request was sent, so a change it made after reading them has an event of that second or later (our clock and
# Stripe's within a second of each other): dated two seconds earlier, the snapshot loses to that event. Dated when
# the answer came (hundreds of ms later), it beat a deletion made while the page was on its way, and brought the
# customer back for good (Stripe's lists never show it again to correct it).
STATE_SECONDS_BEFORE_ASKED = 2
SNAPSHOT_ID_HEX_CHARS = 32  # 128 bits of SHA-256


def snapshot_event_id(tenant_id: str, canonical_json: bytes) -> str:
    """Returns `snap_` + the truncated SHA-256 of the tenant and the redacted object's canonical JSON."""
    digest = hashlib.sha256(tenant_id.encode() + b"\x00" + canonical_json).hexdigest()
    return SNAPSHOT_ID_PREFIX + digest[:SNAPSHOT_ID_HEX_CHARS]


def snapshot_envelope(
    obj: Mapping[str, Any], tenant_id: str, livemode: bool, api_version: str | None, asked_at: datetime
) -> Envelope:
    """Returns the snapshot envelope of one object of a page asked for at `asked_at` (when the request that
    returned it was sent) in `api_version`; raises
    BadEventError for an object without a string id and type or an integer `created` (what the import pages
    by), or one JSON cannot hold: the import leaves it out and counts it in the tenant's health."""
    if not isinstance(obj, Mapping):  # what a page holds is whatever Stripe (or a proxy) sent
        raise BadEventError("Stripe listed an item that is not an object", "malformed_object")
    object_type, object_id = obj.get("object"), obj.get("id")
    if not (is_name(object_type) and is_name(object_id)):  # a dict's text there would carry what redaction drops
        raise BadEventError(f"Stripe listed an object without a string id and type of 1 to {MAX_NAME_LENGTH} "
                            "characters", "malformed_object")
    created = obj.get("created")
    if type(created) is not int or not 0 <= created <= MAX_CREATED:
        raise BadEventError("Stripe listed an object without an integer created time (1970 to 9999)",
                            "malformed_object")
    try:
        canonical = redacted_sorted_json(dict(obj))
    except (TypeError, orjson.JSONEncodeError) as exc:  # nested beyond what JSON writers take, or a 65-bit integer
        raise BadEventError(f"Stripe listed an object that cannot be written as JSON: {exc}",
                            "malformed_object") from None
    except RecursionError:  # nested so deep (up to the thousand levels a parser takes) redaction cannot walk it
        raise BadEventError("Stripe listed an object nested too deeply to redact", "malformed_object") from None
    event_id = snapshot_event_id(tenant_id, canonical)
    object_type, object_id = mask_pans(object_type), mask_pans(object_id)  # as in the payload
    event_type = f"{object_type}.snapshot"
    created = int(asked_at.timestamp()) - STATE_SECONDS_BEFORE_ASKED
    payload = {
        "id": event_id, "object": "event", "type": event_type, "created": created,
        "livemode": livemode, "api_version": api_version, "data": {"object": orjson.Fragment(canonical)},
    }
    return Envelope(
        tenant_id=tenant_id,
        event_id=event_id,
        event_type=event_type,
        object_type=object_type,
        object_id=object_id,
        event_time=datetime.fromtimestamp(created, tz=asked_at.tzinfo),
        received_time=asked_at,
        source=Source.IMPORT,
        livemode=livemode,
        api_version=api_version,
        connected_account=None,
        payload=orjson.dumps(payload).decode(),
    )
