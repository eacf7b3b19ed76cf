"""The dedupe table is bounded: rows older than the retention are pruned, per tenant, and an event applied again
after its row was pruned — a late webhook retry, a re-run import, a full replay, in any order — changes no
table and no figure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import pydantic
import pytest

from plumbing.settings import ProjectorSettings
from projections.handlers.writes import writes_for
from projections.projector.dedupe_pruning import PRUNE_LOCK_ID, prune_processed_events
from projections.projector.store import PostgresProjectionStore
from schemas import Envelope
from stripe_sim import CURRENT_VERSION, SimServer
from tests.helpers import pinned_sim_clock
from tests.projections.support import apply_all, dump, history_envelopes, shuffled_with_duplicates

pytestmark = pytest.mark.integration
OLD, RECENT = "tenant_prune_old", "tenant_prune_recent"


@dataclass
class World:
    pool: asyncpg.Pool
    store: PostgresProjectionStore
    envelopes: list[Envelope]  # OLD's whole history


@pytest.fixture(scope="module")
async def world(clean_database: str) -> AsyncIterator[World]:
    pool = await asyncpg.create_pool(clean_database, min_size=1, max_size=3)
    store = PostgresProjectionStore(pool, "prune-test")
    async with SimServer(seed=808, clock=pinned_sim_clock()) as sim:
        account = sim.create_account(api_version=CURRENT_VERSION, customers=40, months=12, currencies=("usd", "eur"))
        envelopes = history_envelopes(sim, account.id, OLD)
        recent = history_envelopes(sim, account.id, RECENT)
    await apply_all(store, shuffled_with_duplicates(envelopes, seed=1))
    await apply_all(store, recent)
    yield World(pool, store, envelopes)
    await pool.close()


async def rows_of(pool: asyncpg.Pool, tenant: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM projection.processed_events WHERE tenant_id = $1", tenant))


async def test_old_rows_are_pruned_and_reapplying_their_events_changes_nothing(world: World) -> None:
    async with world.pool.acquire() as conn:
        before = await dump(conn, OLD)
    distinct = len({e.event_id for e in world.envelopes})
    assert await rows_of(world.pool, OLD) == distinct
    recent_rows = await rows_of(world.pool, RECENT)
    # OLD's events were applied 60 days ago; RECENT's just now
    await world.pool.execute("UPDATE projection.processed_events SET applied_at = now() - interval '60 days' "
                             "WHERE tenant_id = $1", OLD)

    deleted = await prune_processed_events(world.pool, timedelta(days=45), batch_rows=500)

    assert deleted == distinct, "every row older than the retention, in batches"
    assert await rows_of(world.pool, OLD) == 0
    assert await rows_of(world.pool, RECENT) == recent_rows, "rows younger than the retention stay"
    # Every pruned event delivered again — twice for some, in another order: the late retry, the re-run import,
    # the full replay. Each is applied again (its row is gone) and no table or view changes.
    applied = await world.store.apply([(e.tenant_id, e.event_id, writes_for(e)) for e in world.envelopes[:1]], {})
    assert applied.new_events == 1
    await apply_all(world.store, shuffled_with_duplicates(world.envelopes, seed=99, duplicate_share=0.5))
    async with world.pool.acquire() as conn:
        after = await dump(conn, OLD)
    assert after == before
    assert await rows_of(world.pool, OLD) == distinct, "the re-applied events are remembered again"


async def test_one_member_prunes_at_a_time(world: World) -> None:
    async with world.pool.acquire() as holder:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", PRUNE_LOCK_ID)
        try:
            assert await prune_processed_events(world.pool, timedelta(days=45)) is None
        finally:
            await holder.execute("SELECT pg_advisory_unlock($1)", PRUNE_LOCK_ID)


def test_the_retention_cannot_be_shorter_than_stripes_redelivery_windows() -> None:
    assert ProjectorSettings().dedupe_retention_days == 45
    with pytest.raises(pydantic.ValidationError):
        ProjectorSettings(dedupe_retention_days=30)  # the events API re-lists 30 days: a re-run import is routine
