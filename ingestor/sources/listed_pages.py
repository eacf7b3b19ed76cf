"""What one listed page of the history import becomes: a Kafka record per object (its snapshot envelope, keyed
and encoded as every producer does: `EnvelopeCodec.record`), what cannot be one, and what the slice needs to go on. Pure: no I/O, no
clock, no logging.

It is most of the importer's CPU — parsing the page, redacting, hashing and encoding every object — so the
importer runs it in a pool of processes (`PagePool`): in the event loop's process alone, a worker imports no
faster than one core allows, whatever the budget leaves.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import NamedTuple

import orjson

from ingestor.envelope.build import is_name
from ingestor.envelope.snapshots import snapshot_envelope
from ingestor.errors import BadEventError
from ingestor.sources.refusals import Refused, refusal_of
from plumbing.partitioning import key_hash
from schemas import EnvelopeCodec


class ListedObject(NamedTuple):
    """One listed item as its slice needs it: its created time (None if not an integer), its id if the cursor
    can go on from it, and its record (key, value) with its key's hash (`partitioning.key_hash`: hashing every key
    was a seventh of the worker's event loop) or why it has none. A tuple: it crosses the pool's pipe."""

    created: int | None
    cursor_id: str | None
    record: tuple[bytes, bytes] | None
    refused: Refused | None
    key_hash: int | None = None


class ListedPage(NamedTuple):
    """A page's items in Stripe's order (newest first), and whether Stripe has more after them; `items` is None
    when the body is not a list page."""

    items: list[ListedObject] | None
    has_more: bool


@cache
def _codec() -> EnvelopeCodec:
    return EnvelopeCodec()


def listed_page(body: bytes, resource: str, tenant_id: str, livemode: bool, api_version: str | None,
                asked_at: datetime) -> ListedPage:
    """The records of a list page's objects as snapshots (the page asked for at `asked_at`, in `api_version`); an
    object the snapshot step refuses (`snapshot_envelope`) is left out with its refusal, the rest goes on."""
    try:
        decoded = orjson.loads(body)
        data, has_more = decoded["data"], bool(decoded["has_more"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ListedPage(None, False)
    if not isinstance(data, list):
        return ListedPage(None, False)
    codec = _codec()
    items = []
    for obj in data:
        created = obj.get("created") if isinstance(obj, dict) else None
        object_id = obj.get("id") if isinstance(obj, dict) else None
        cursor_id = object_id if is_name(object_id) else None
        try:
            envelope = snapshot_envelope(obj, tenant_id, livemode, api_version, asked_at)
        except BadEventError as exc:
            items.append(ListedObject(created if type(created) is int else None, cursor_id, None,
                                      refusal_of(tenant_id, "import", resource, obj, exc)))
        else:
            key, value = codec.record(envelope)
            items.append(ListedObject(created, cursor_id, (key, value), None, key_hash(key)))
    return ListedPage(items, has_more)
