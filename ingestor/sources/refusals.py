"""What Stripe listed or sent that cannot become a record: an object the import cannot make a snapshot of, an event
the poller cannot read, a webhook's event whose object the canonical model cannot read. Each is left out alone —
the rest of the page, the connection and other tenants go on — and counted in the tenant's health with the records
the projector dead-lettered (`public.dead_lettered_events`, as `unreadable_events`), once however often it is listed
again. Nothing of its content is kept: it may hold what
redaction would have dropped."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from ingestor.envelope.build import is_name
from ingestor.envelope.card_numbers import mask_pans
from ingestor.envelope.redaction import redacted_sorted_json
from ingestor.errors import IngestError
from plumbing.health_rows import MESSAGE_CHARS, NOT_A_KAFKA_PARTITION, HealthRow, count_in_health, stable_offset

_PLAIN_ID = re.compile(r"[A-Za-z0-9_]+")
_SECRET_LIKE = re.compile(r"secret|^(sk|rk|whsec)_", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Refused:
    """One item left out: whose, found by which reader (import or poll) in which list, named by `label` (its
    id where that is a name, else its created time), and why."""

    tenant_id: str
    reader: str
    resource: str
    label: str
    code: str
    message: str

    def offset(self) -> int:
        """A stable 63-bit number for (reader, resource, label): the row's key among the tenant's dead letters."""
        return stable_offset(self.reader, self.resource, self.label)


def refusal_of(tenant_id: str, reader: str, resource: str, item: object, exc: IngestError) -> Refused:
    """What is kept of an item left out: a label that names it without its content, and why."""
    return Refused(tenant_id, reader, resource, label_of(item), exc.code,
                   shown_message(f"{exc}; left out of the {reader} of {resource}"))


def shown_message(text: str) -> str:
    """Why something was left out, as it may be stored and shown: the reader quotes the value it could not read, which
    may be anything the sender put there, unredacted (a card number in `currency`), so card numbers are masked, NUL
    bytes (which Postgres's text refuses) dropped, and the whole cut to `MESSAGE_CHARS`."""
    return mask_pans(text.replace("\0", ""))[:MESSAGE_CHARS]


def label_of(item: object) -> str:
    """The item's id where it looks like one of Stripe's (letters, digits and `_`, no secret in it), else a
    hash of it (an id holding a card number, a client secret, a key or a NUL byte is shown by no one); an item
    without an id is named by its created time (or what it is) and a digest of its redacted content, so two
    such items listed in the same second are two rows, and the same one listed again is one."""
    if not isinstance(item, Mapping):
        return f"not an object ({type(item).__name__}) #{_content_digest(item)}"
    item_id, created = item.get("id"), item.get("created")
    if is_name(item_id):
        if _PLAIN_ID.fullmatch(item_id) and not _SECRET_LIKE.search(item_id) and mask_pans(item_id) == item_id:
            return item_id
        return "id #" + hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    named = f"created {created}" if type(created) is int else "no id or created time"
    return f"{named} #{_content_digest(item)}"


def _content_digest(item: object) -> str:
    """A short digest of the item's redacted JSON: it tells items apart without telling anything redaction
    drops (a card number is masked before it is hashed)."""
    try:
        text = redacted_sorted_json({"item": item})
    except (TypeError, ValueError, RecursionError):  # what JSON cannot hold, or nested past what redaction walks
        return "unreadable"
    return hashlib.sha256(text).hexdigest()[:12]


def last_usable_id(items: Sequence[object]) -> str | None:
    """The id of the last listed item that has one to go on from (`starting_after`), or None: the cursor moves
    past refused items, never past a page it cannot name a place in."""
    return next((i for item in reversed(items) if isinstance(item, Mapping) and is_name(i := item.get("id"))), None)


async def record_refused(db: asyncpg.Pool | asyncpg.Connection, items: Sequence[Refused]) -> None:
    """Counts `items` in their tenants' health (a row each, once: listed again, they change nothing)."""
    await count_in_health(db, (HealthRow(r.tenant_id, f"stripe-{r.reader}", NOT_A_KAFKA_PARTITION, r.offset(), r.label,
                                         r.code, r.message) for r in items))
