"""Applies a batch of envelopes to the projection tables: rows, dedupe records and positions in one transaction.

The processed-events insert says which events are new (a conflict means "already applied"); only
those are applied. States are collapsed to the newest per object before the upsert (one statement
cannot update a row twice), and the upsert itself keeps whichever of stored and incoming is newer,
so the result does not depend on delivery order. Positions only move forward. A crash before the
commit leaves nothing; after it, the positions say where to resume — nothing is lost or doubled. The customers a
batch touches have their own discounts joined into their subscriptions' MRR in the same transaction
(`customer_join`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from plumbing.health_rows import HealthRow, count_in_health
from plumbing.postgres import translates_database_errors
from projections.errors import PositionGapError
from projections.handlers.writes import STATE_COLUMNS, RefundRow, StateRow, Writes
from projections.projector.customer_join import join_customer_discounts, lock_customers

SCHEMA = "projection"
JSON_TYPES = ("json", "jsonb")
COMMON_COLUMNS = ("tenant_id", "id", "state_time", "state_rank", "state_event_id", "livemode")
# Lineage of a refund or refunded level: the earliest (state time, event id) that showed it, whatever
# order events arrive in; a row from before lineage was stored (event_id NULL) takes the first one seen.
_EARLIEST_EVENT = (
    "first_seen = LEAST({t}.first_seen, EXCLUDED.first_seen), event_id = CASE WHEN {t}.event_id IS NULL "
    "OR (EXCLUDED.first_seen, EXCLUDED.event_id) < ({t}.first_seen, {t}.event_id) THEN EXCLUDED.event_id "
    "ELSE {t}.event_id END"
)
# A refund state overrules the stored one only when newer by the listing charge's order; rows written before
# migration 0075 carry no order and yield to any (every SET clause reads the row as it was).
_NEWER_REFUND = ("(r.state_time IS NULL OR (EXCLUDED.state_time, EXCLUDED.state_rank, EXCLUDED.state_event_id) "
                 "> (r.state_time, r.state_rank, r.state_event_id))")
COLUMN_TYPES: Mapping[str, str] = {
    "tenant_id": "text", "id": "text", "state_time": "int8", "state_rank": "int8", "state_event_id": "text",
    "livemode": "bool", "deleted": "bool", "created": "timestamptz", "email": "text", "name": "text",
    "currency": "text", "data": "json", "customer_id": "text", "invoice_id": "text", "payment_intent_id": "text",
    "amount": "int8", "amount_captured": "int8", "amount_refunded": "int8", "status": "text", "captured": "bool",
    "failure_code": "text", "card_brand": "text", "card_last4": "text", "description": "text",
    "start_date": "timestamptz", "trial_end": "timestamptz", "current_period_start": "timestamptz",
    "current_period_end": "timestamptz", "cancel_at_period_end": "bool", "canceled_at": "timestamptz",
    "ended_at": "timestamptz", "mrr": "numeric", "items": "jsonb", "subscription_id": "text",
    "billing_reason": "text", "total": "int8", "amount_due": "int8", "amount_paid": "int8",
    "amount_remaining": "int8", "period_start": "timestamptz", "period_end": "timestamptz",
    "paid_at": "timestamptz", "number": "text", "amount_received": "int8",
}


@dataclass(frozen=True, slots=True)
class Applied:
    """What one batch did."""

    new_events: int
    duplicates: int

    def __add__(self, other: Applied) -> Applied:
        return Applied(self.new_events + other.new_events, self.duplicates + other.duplicates)


# A record the projector dead-lettered, counted against its tenant (the health panel shows them).
DeadLetterRow = HealthRow


def _upsert_sql(schema: str, table: str) -> str:
    columns = COMMON_COLUMNS + STATE_COLUMNS[table]
    # JSON travels as text (asyncpg has no json[] codec by default) and is cast back here.
    params = ", ".join(
        f"${i}::{'text' if COLUMN_TYPES[c] in JSON_TYPES else COLUMN_TYPES[c]}[]" for i, c in enumerate(columns, 1)
    )
    selects = ", ".join(f"{c}::{COLUMN_TYPES[c]}" if COLUMN_TYPES[c] in JSON_TYPES else c for c in columns)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[2:])
    return (
        f"INSERT INTO {schema}.{table} AS t ({', '.join(columns)}) "
        f"SELECT {selects} FROM unnest({params}) AS u({', '.join(columns)}) "
        f"ON CONFLICT (tenant_id, id) DO UPDATE SET {updates} "
        f"WHERE (t.state_time, t.state_rank, t.state_event_id) "
        f"< (EXCLUDED.state_time, EXCLUDED.state_rank, EXCLUDED.state_event_id)"
    )


def newest_per_object(states: Iterable[StateRow]) -> dict[str, list[StateRow]]:
    """Returns, per table, one state per object: the newest by the last-writer-wins order."""
    newest: dict[tuple[str, str, str], StateRow] = {}
    for state in states:
        key = (state.table, state.tenant_id, state.object_id)
        held = newest.get(key)
        if held is None or state.order > held.order:
            newest[key] = state
    by_table: dict[str, list[StateRow]] = {}
    for state in newest.values():
        by_table.setdefault(state.table, []).append(state)
    return by_table


def _columns(rows: Sequence[StateRow]) -> list[list[Any]]:
    width = 6 + len(rows[0].values)
    cols: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        prefix = (row.tenant_id, row.object_id, row.state_time, row.state_rank, row.state_event_id, row.livemode)
        for i, value in enumerate(prefix + row.values):
            cols[i].append(value.decode() if isinstance(value, bytes) else value)
    return cols


@translates_database_errors
class PostgresProjectionStore:
    """The projection tables of one schema (`projection`, or a replay's fresh schema)."""

    def __init__(self, pool: asyncpg.Pool, consumer_group: str, schema: str = SCHEMA):
        self._pool = pool
        self._group = consumer_group
        self._schema = schema
        self._upserts = {table: _upsert_sql(schema, table) for table in STATE_COLUMNS}

    async def positions(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """Returns the next offset to read per partition, for the partitions that have one."""
        rows = await self._pool.fetch(
            f"SELECT partition, next_offset FROM {self._schema}.consumer_positions "
            "WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3::int[])",
            self._group, topic, list(partitions),
        )
        return {r["partition"]: r["next_offset"] for r in rows}

    async def apply(
        self,
        events: Sequence[tuple[str, str, Writes]],
        positions: Mapping[tuple[str, int], int],
        first_offsets: Mapping[tuple[str, int], int] | None = None,
        dead_letters: Sequence[DeadLetterRow] = (),
    ) -> Applied:
        """Applies the new events among `events` ((tenant_id, event_id, writes)) and stores `positions`,
        with the records of the batch that were dead-lettered (each counted once, whatever the retries).

        With `first_offsets`, refuses (PositionGapError) a batch that starts after a partition's
        stored position: records in between were never applied here (a replay swapped the tables
        in, or the consumer was repositioned), so the caller must seek back. Raises asyncpg errors;
        on any error nothing of the batch is stored.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            if first_offsets:
                await self._check_no_gap(conn, first_offsets)
            await count_in_health(conn, dead_letters)
            return await self.apply_in(conn, events, positions)

    async def _check_no_gap(self, conn: asyncpg.Connection, first_offsets: Mapping[tuple[str, int], int]) -> None:
        rows = await conn.fetch(
            f"SELECT topic, partition, next_offset FROM {self._schema}.consumer_positions "
            "WHERE consumer_group = $1 AND (topic, partition) IN (SELECT * FROM unnest($2::text[], $3::int[])) FOR UPDATE",
            self._group, [k[0] for k in first_offsets], [k[1] for k in first_offsets],
        )
        for row in rows:
            first = first_offsets[(row["topic"], row["partition"])]
            if row["next_offset"] < first:
                raise PositionGapError(
                    f"partition {row['partition']} is stored at {row['next_offset']} but the batch starts at {first}"
                )

    async def apply_in(
        self, conn: asyncpg.Connection, events: Sequence[tuple[str, str, Writes]], positions: Mapping[tuple[str, int], int]
    ) -> Applied:
        """Same as `apply`, inside the caller's transaction."""
        unique = {(t, e): w for t, e, w in events}
        await lock_customers(conn, self._schema, set().union(*(w.customers() for w in unique.values())))
        new: set[tuple[str, str]] = set()
        if unique:
            rows = await conn.fetch(
                f"INSERT INTO {self._schema}.processed_events (tenant_id, event_id) "
                "SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING RETURNING tenant_id, event_id",
                [k[0] for k in unique], [k[1] for k in unique],
            )
            new = {(r["tenant_id"], r["event_id"]) for r in rows}
        writes = Writes()
        for key in new:
            writes.extend(unique[key])
        await self._write(conn, writes)
        if positions:
            await conn.execute(
                f"INSERT INTO {self._schema}.consumer_positions AS p (consumer_group, topic, partition, next_offset) "
                "SELECT $1, * FROM unnest($2::text[], $3::int[], $4::int8[]) "
                "ON CONFLICT (consumer_group, topic, partition) DO UPDATE "
                "SET next_offset = GREATEST(p.next_offset, EXCLUDED.next_offset), updated_at = now()",
                self._group, [k[0] for k in positions], [k[1] for k in positions], list(positions.values()),
            )
        return Applied(new_events=len(new), duplicates=len(events) - len(new))

    async def _write(self, conn: asyncpg.Connection, writes: Writes) -> None:
        for table, rows in sorted(newest_per_object(writes.states).items()):
            await conn.execute(self._upserts[table], *_columns(rows))
        await count_in_health(conn, writes.health)
        s = self._schema
        if writes.refunds:
            # One row per refund: its newest state by the listing charge state's order (seen_at, rank, event id),
            # whatever order the events came in, and the earliest event that showed it (lineage).
            newest: dict[tuple[str, str], RefundRow] = {}
            earliest: dict[tuple[str, str], tuple[int, str]] = {}
            for r in writes.refunds:
                refund = (r.tenant_id, r.refund_id)
                kept = newest.get(refund)
                if kept is None or (r.seen_at, r.state_rank, r.event_id) > (kept.seen_at, kept.state_rank, kept.event_id):
                    newest[refund] = r
                earliest[refund] = min(earliest.get(refund, (r.seen_at, r.event_id)), (r.seen_at, r.event_id))
            await conn.execute(
                f"INSERT INTO {s}.refunds AS r (tenant_id, id, charge_id, currency, amount, status, created, first_seen, "
                "event_id, state_time, state_rank, state_event_id) SELECT * FROM unnest($1::text[], $2::text[], "
                "$3::text[], $4::text[], $5::int8[], $6::text[], $7::timestamptz[], $8::int8[], $9::text[], $10::int8[], "
                "$11::int8[], $12::text[]) "
                "ON CONFLICT (tenant_id, id) DO UPDATE SET "
                f"amount = CASE WHEN {_NEWER_REFUND} THEN EXCLUDED.amount ELSE r.amount END, "
                f"status = CASE WHEN {_NEWER_REFUND} THEN EXCLUDED.status ELSE r.status END, "
                f"state_rank = CASE WHEN {_NEWER_REFUND} THEN EXCLUDED.state_rank ELSE r.state_rank END, "
                f"state_event_id = CASE WHEN {_NEWER_REFUND} THEN EXCLUDED.state_event_id ELSE r.state_event_id END, "
                f"state_time = CASE WHEN {_NEWER_REFUND} THEN EXCLUDED.state_time ELSE r.state_time END, "
                f"{_EARLIEST_EVENT.format(t='r')}",
                *map(list, zip(*((r.tenant_id, r.refund_id, r.charge_id, r.currency, r.amount, r.status, r.created,
                                  *earliest[refund], r.seen_at, r.state_rank, r.event_id)
                                 for refund, r in newest.items()))),
            )
        if writes.refund_states:
            states: dict[tuple[str, str, int, int, int], str] = {}  # one row per state, its smallest event id
            for st in writes.refund_states:
                key = (st.tenant_id, st.charge_id, st.state_time, st.state_rank, st.amount_refunded)
                states[key] = min(states.get(key, st.event_id), st.event_id)
            await conn.execute(
                f"INSERT INTO {s}.charge_refund_states AS t (tenant_id, charge_id, state_time, state_rank, "
                "amount_refunded, event_id) SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], "
                "$5::int8[], $6::text[]) ON CONFLICT (tenant_id, charge_id, state_time, state_rank, amount_refunded) "
                "DO UPDATE SET event_id = least(t.event_id, EXCLUDED.event_id)",
                *map(list, zip(*(key + (event_id,) for key, event_id in states.items()))),
            )
        if writes.versions:
            await conn.execute(
                f"INSERT INTO {s}.subscription_versions (tenant_id, subscription_id, state_time, state_rank, "
                "state_event_id, customer_id, currency, status, mrr, customer_discount_basis) "
                "SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::text[], "
                "$7::text[], $8::text[], $9::numeric[], $10::jsonb[]) ON CONFLICT DO NOTHING",
                *map(list, zip(*((v.tenant_id, v.subscription_id, v.state_time, v.state_rank, v.state_event_id,
                                  v.customer_id, v.currency, v.status, v.mrr,
                                  v.customer_discount_basis.decode() if v.customer_discount_basis else None)
                                 for v in writes.versions))),
            )
        if writes.customer_discounts:
            await conn.execute(
                f"INSERT INTO {s}.customer_discounts (tenant_id, customer_id, state_time, state_rank, state_event_id, "
                "coupon) SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::jsonb[]) "
                "ON CONFLICT DO NOTHING",
                *map(list, zip(*((d.tenant_id, d.customer_id, d.state_time, d.state_rank, d.state_event_id,
                                  d.coupon.decode() if d.coupon else None) for d in writes.customer_discounts))),
            )
        customers = writes.customers()
        if customers:
            await join_customer_discounts(conn, s, customers)
