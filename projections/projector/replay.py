"""Replay: rebuild the projections from offset zero into fresh tables, then swap them in.

The live tables keep serving while a replay consumer group (its own name, its own positions)
applies the whole raw topic into a new schema built from the same migrations. Then, in one
transaction:

- all tenants: the new schema becomes `projection` (the old one is kept as `projection_old_*`
  until dropped), and the live group's positions there are set to where the replay stopped;
- one tenant: that tenant's rows are replaced by the rebuilt ones, and the live group's
  positions move back to where the replay stopped (never forward).

Live projectors notice the positions at their next batch (it starts past the stored position)
and seek back, so events that arrived during the replay are applied to the new tables too —
those already there are skipped as duplicates.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from prometheus_client import CollectorRegistry

from plumbing.migrations import read_migrations
from plumbing.settings import Settings
from projections import MIGRATIONS_DIR
from projections.projector.consumer import RevenueProjector
from projections.projector.metrics import ProjectorMetrics

SCHEMA_LINE = re.compile(r"^(SET LOCAL search_path TO|CREATE SCHEMA IF NOT EXISTS) projection\b", re.MULTILINE)
LIVE_SCHEMA = "projection"


@dataclass(frozen=True)
class ReplayReport:
    """What a replay did."""

    schema: str
    events_applied: int
    seconds: float
    tenant_id: str | None
    old_schema: str | None


RERUN_MARK = "-- rerun-after-replay"


def views_to_rebind(directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Returns the migrations whose views must be re-created after a swap (views bind to tables)."""
    return [m.sql for m in read_migrations(directory) if m.sql.startswith(RERUN_MARK)]


def projection_migrations(directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Returns, in order, the SQL of the migrations that build the `projection` schema."""
    return [m.sql for m in read_migrations(directory) if SCHEMA_LINE.search(m.sql)]


async def create_projection_schema(conn: asyncpg.Connection, schema: str) -> None:
    """Builds an empty copy of the projection tables and views in `schema`."""
    for sql in projection_migrations():
        async with conn.transaction():
            await conn.execute(SCHEMA_LINE.sub(lambda m: f"{m.group(1)} {schema}", sql))


async def _base_tables(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.tables t WHERE table_schema = $1 AND table_type = 'BASE TABLE' "
        "AND EXISTS (SELECT 1 FROM information_schema.columns c WHERE c.table_schema = t.table_schema "
        "AND c.table_name = t.table_name AND c.column_name = 'tenant_id') ORDER BY table_name",
        schema,
    )
    return [r["table_name"] for r in rows]


async def swap_in(conn: asyncpg.Connection, schema: str, replay_group: str, live_group: str,
                  tenant_id: str | None, stamp: str) -> str | None:
    """Swaps the rebuilt projections in (see the module docstring); returns the old schema's name, if kept."""
    async with conn.transaction():
        # Serialises with live batches, which lock their position rows.
        await conn.execute(f"LOCK TABLE {LIVE_SCHEMA}.consumer_positions IN EXCLUSIVE MODE")
        if tenant_id is None:
            await conn.execute(
                f"INSERT INTO {schema}.consumer_positions (consumer_group, topic, partition, next_offset) "
                f"SELECT $1, topic, partition, next_offset FROM {schema}.consumer_positions WHERE consumer_group = $2 "
                "ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
                live_group, replay_group,
            )
            old = f"{LIVE_SCHEMA}_old_{stamp}"
            await conn.execute(f"ALTER SCHEMA {LIVE_SCHEMA} RENAME TO {old}")
            await conn.execute(f"ALTER SCHEMA {schema} RENAME TO {LIVE_SCHEMA}")
            for sql in views_to_rebind():
                await conn.execute(sql)
            return old
        for table in await _base_tables(conn, schema):
            await conn.execute(f"DELETE FROM {LIVE_SCHEMA}.{table} WHERE tenant_id = $1", tenant_id)
            await conn.execute(
                f"INSERT INTO {LIVE_SCHEMA}.{table} SELECT * FROM {schema}.{table} WHERE tenant_id = $1", tenant_id
            )
        await conn.execute(
            f"UPDATE {LIVE_SCHEMA}.consumer_positions p SET next_offset = LEAST(p.next_offset, r.next_offset) "
            f"FROM {schema}.consumer_positions r WHERE p.consumer_group = $1 AND r.consumer_group = $2 "
            "AND p.topic = r.topic AND p.partition = r.partition",
            live_group, replay_group,
        )
    await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return None


async def replay(settings: Settings, pool: asyncpg.Pool, tenant_id: str | None = None,
                 timeout_s: float = 3600.0, on_progress: Callable[[int], None] | None = None) -> ReplayReport:
    """Rebuilds the projections (of one tenant, or all) from offset zero and swaps them in."""
    started = time.monotonic()
    stamp = time.strftime("%Y%m%d%H%M%S") + f"{int(time.time() * 1000) % 1000:03d}"
    schema = f"projection_replay_{stamp}"
    replay_group = f"{settings.kafka.projector_group}-replay-{stamp}"
    async with pool.acquire() as conn:
        await create_projection_schema(conn, schema)
    projector = RevenueProjector(settings.kafka, pool, None, ProjectorMetrics(CollectorRegistry()),
                                 group_id=replay_group, schema=schema, tenant_filter=tenant_id)
    await projector.start()
    try:
        await projector.run_until_idle(timeout_s, on_progress=on_progress)
    finally:
        await projector.stop()
    async with pool.acquire() as conn:
        old = await swap_in(conn, schema, replay_group, settings.kafka.projector_group, tenant_id, stamp)
    return ReplayReport(schema, projector.applied_events, time.monotonic() - started, tenant_id, old)
