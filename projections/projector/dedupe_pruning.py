"""Keeps the dedupe table (`processed_events`) bounded: rows older than the retention are deleted.

Why this is safe: the dedupe row only saves work. Every write a handler makes is idempotent and order-free
(object states are last-writer-wins on (state_time, state_rank, event id); refunds on the order of the charge
states that listed them; subscription versions are keyed by their event; lineage keeps the earliest event), so the
same event applied a second time after its row was pruned — a late webhook retry, a replayed topic — changes no
table (tests/projections/test_dedupe_pruning.py proves it over a whole shuffled history). An import re-run after
the retention fetches snapshots again at a new time: an unchanged object then adds a version with the same values,
which changes no figure. The retention is longer than anything that re-delivers routinely (Stripe's webhook
retries: 3 days; the events API: 30 days), so such an event is skipped, not re-applied, and the applied-events
metric stays honest.

Deleted per tenant in batches through the (tenant_id, applied_at) index, so the table can be distributed by
tenant and one tenant's backlog never holds a long lock on another's rows. One projector member prunes at a
time (an advisory lock); the others skip the round.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
from prometheus_client import Counter

from plumbing.logs import get_logger

log = get_logger(__name__)

# An arbitrary, fixed advisory-lock id for "pruning processed_events".
PRUNE_LOCK_ID = 0x5EED_0DD5
BATCH_ROWS = 10_000


async def prune_processed_events(pool: asyncpg.Pool, older_than: timedelta, schema: str = "projection",
                                 batch_rows: int = BATCH_ROWS) -> int | None:
    """Deletes the dedupe rows applied more than `older_than` ago; returns how many, or None when another
    member holds the pruning lock (it is pruning now)."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", PRUNE_LOCK_ID):
            return None
        try:
            tenants = [r["tenant_id"] for r in await conn.fetch(
                f"WITH RECURSIVE t AS (SELECT min(tenant_id) AS tenant_id FROM {schema}.processed_events "
                f"UNION ALL SELECT (SELECT min(tenant_id) FROM {schema}.processed_events p WHERE p.tenant_id > t.tenant_id) "
                "FROM t WHERE t.tenant_id IS NOT NULL) SELECT tenant_id FROM t WHERE tenant_id IS NOT NULL")]
            deleted = 0
            for tenant in tenants:
                while True:
                    done = await conn.execute(
                        f"DELETE FROM {schema}.processed_events WHERE (tenant_id, event_id) IN ("
                        f"SELECT tenant_id, event_id FROM {schema}.processed_events "
                        "WHERE tenant_id = $1 AND applied_at < now() - $2::interval LIMIT $3)",
                        tenant, older_than, batch_rows)
                    count = int(done.split()[-1])
                    deleted += count
                    if count < batch_rows:
                        break
            return deleted
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", PRUNE_LOCK_ID)


async def prune_periodically(pool: asyncpg.Pool, older_than: timedelta, every_s: float,
                             pruned: Counter | None = None) -> None:
    """Prunes now and then every `every_s` seconds until cancelled (the projector cancels it at shutdown rather than
    wait for a round); a failed round is logged and retried next time."""
    while True:
        try:
            deleted = await prune_processed_events(pool, older_than)
            if deleted:
                log.info("dedupe rows pruned", rows=deleted, older_than_days=older_than.days)
                if pruned is not None:
                    pruned.inc(deleted)
        except Exception as exc:  # noqa: BLE001 - one failed round must not end pruning for the process's life
            log.warning("dedupe pruning failed; next round retries", error=repr(exc)[:300])
        await asyncio.sleep(every_s)  # the pruning interval
