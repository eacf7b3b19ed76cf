"""What the projector says about a record it cannot apply: the dead letter it publishes and the row that counts it.

Both leave the process: the letter goes to the dead-letter topic, the row to the tenant's health, which anyone
with the tenant's API token reads. So the reason is said in words that quote nothing of the record (a Postgres
error's text quotes the refused row, card last4 and all), and the letter always fits the topic: a record near the
size limit, with its reason added, would be over it, so the letter keeps the record only up to a bound and says
where the whole one is. The original stays on the raw topic for ever.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
from aiokafka import ConsumerRecord

from plumbing.errors import error_site
from plumbing.health_rows import MESSAGE_CHARS
from plumbing.kafka import MAX_RECORD_BYTES
from plumbing.postgres import refusal_text
from projections.errors import ProjectionError
from projections.projector.store import DeadLetterRow
from schemas import DeadLetter
from schemas.codec import EnvelopeError
from schemas.stripe_objects import UnreadableObjectError

# Of the original record, a letter keeps at most a quarter of the record limit (a Stripe event is a few KiB): with
# the reason it stays under the limit, and under the 1 MiB a broker takes by default.
LETTER_VALUE_BYTES = MAX_RECORD_BYTES // 4
LETTER_KEY_BYTES = 1024  # a key is `<tenant_id>:<object_id>`, far shorter
LETTER_REASON_CHARS = 1500


def reason_text(exc: BaseException) -> str:
    """The reason a record was not applied, as it may be shown to the tenant, published and logged: Postgres's
    refusal without the row; our own errors' messages (they name the field); anything else by its type and where
    it was raised, since its text (a decoder's, a handler bug's) may quote the record."""
    if isinstance(exc, asyncpg.PostgresError):
        return refusal_text(exc)
    if isinstance(exc, (ProjectionError, UnreadableObjectError)):
        return str(exc)
    if isinstance(exc, EnvelopeError):  # the codec's own words, unless it quotes the decoder's error
        return str(exc) if exc.__cause__ is None else f"{type(exc).__name__} from {error_site(exc.__cause__)}"
    return error_site(exc)


def letter_row(record: ConsumerRecord, exc: BaseException, event_id: str = "") -> DeadLetterRow:
    """Returns the row that counts a dead-lettered record against its tenant (read from the record key)."""
    tenant = (record.key or b"").split(b":", 1)[0].decode("utf-8", "replace")[:255]
    return DeadLetterRow(tenant, record.topic, record.partition, record.offset,
                         event_id or str(getattr(exc, "event_id", "")), type(exc).__name__,
                         reason_text(exc)[:MESSAGE_CHARS])


def letter_for(record: ConsumerRecord, exc: BaseException, event_id: str, group: str, failed_time: datetime,
               refused_at: int | None = None) -> DeadLetter:
    """Returns the dead letter of a record: the record with the reason, its value cut to LETTER_VALUE_BYTES (a key
    to LETTER_KEY_BYTES) and the message saying so and where the whole record is. With `refused_at` (the dead-letter
    topic refused the letter at that many bytes: one made with a smaller `max.message.bytes`) the value is left out."""
    value, key, cuts = record.value, record.key, []
    if refused_at is not None:
        cuts.append(f"value left out: the dead-letter topic refused the letter at {refused_at} bytes")
        value = None
    elif value is not None and len(value) > LETTER_VALUE_BYTES:
        cuts.append(f"value cut to its first {LETTER_VALUE_BYTES} of {len(value)} bytes")
        value = value[:LETTER_VALUE_BYTES]
    if key is not None and len(key) > LETTER_KEY_BYTES:
        cuts.append(f"key cut to its first {LETTER_KEY_BYTES} of {len(key)} bytes")
        key = key[:LETTER_KEY_BYTES]
    message = reason_text(exc)[:LETTER_REASON_CHARS]
    if cuts:
        message += (f" [{'; '.join(cuts)}; event {event_id or 'unknown'}, whole on {record.topic} partition "
                    f"{record.partition} offset {record.offset}]")
    return DeadLetter(topic=record.topic, partition=record.partition, offset=record.offset, key=key, value=value,
                      consumer_group=group, error_type=type(exc).__name__, error_message=message,
                      failed_time=failed_time)
