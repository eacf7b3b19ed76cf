"""Rows of a tenant's health: what was not applied, and why (`public.dead_lettered_events`).

The projector counts the records it dead-lettered (their topic, partition and offset); the import and the poller
count what Stripe listed that could not become a record, and the projector what a customer's discount could not do,
neither of them a Kafka record: their partition is NOT_A_KAFKA_PARTITION and their offset a stable number made from
what names them, so counting the same thing again changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import NamedTuple

import asyncpg

NOT_A_KAFKA_PARTITION = -1
MESSAGE_CHARS = 500  # the most of a row's message kept and shown (the reason, not the record)


class HealthRow(NamedTuple):
    """One thing not applied, counted against its tenant."""

    tenant_id: str
    topic: str
    partition: int
    offset: int
    event_id: str
    reason: str
    message: str


def stable_offset(*parts: str) -> int:
    """A stable 63-bit number (a Postgres bigint) for `parts`: the key of a row that is not a Kafka record."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


async def count_in_health(db: asyncpg.Pool | asyncpg.Connection, rows: Iterable[HealthRow]) -> None:
    """Counts `rows` in their tenants' health, each once: counted again, they change nothing."""
    rows = [row._replace(event_id=_text(row.event_id), reason=_text(row.reason),
                         message=_text(row.message)[:MESSAGE_CHARS]) for row in rows]
    if rows:
        await db.execute(
            "INSERT INTO public.dead_lettered_events "
            '(tenant_id, topic, partition, "offset", event_id, reason, message) '
            "SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int8[], $5::text[], $6::text[], $7::text[]) "
            "ON CONFLICT DO NOTHING",
            *map(list, zip(*rows)))


def _text(value: str) -> str:
    """`value` as PostgreSQL `text` takes it: a NUL (which a tenant's own signed webhook may put in an id a message
    quotes) refused the whole batch, and the event it named was dead-lettered whole. Dropped, as the readers' refusals
    drop it (`ingestor/sources/refusals.py`)."""
    return value.replace("\0", "")
