"""Replay rebuilds projections from offset zero into fresh tables and swaps them in; live projectors follow."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from plumbing.settings import Settings
from projections.projector.replay import replay
from stripe_sim import CURRENT_VERSION, SimServer
from tests.projections.support import dump, history_envelopes, project_until_idle, publish
from tests.projections.test_order_and_duplicates import CHARGE, T, event

pytestmark = pytest.mark.integration


async def test_tenant_replay_and_full_replay_restore_damaged_tables(
    settings: Settings, pool: asyncpg.Pool, create_topic: Callable[[str, int], Awaitable[None]],
) -> None:
    tenant_a, tenant_b = f"replay_a_{settings.kafka.projector_group[-8:]}", f"replay_b_{settings.kafka.projector_group[-8:]}"
    async with SimServer(seed=31) as sim:
        account = sim.create_account(api_version=CURRENT_VERSION, customers=15, months=12)
        history_a = history_envelopes(sim, account.id, tenant_a)
        history_b = history_envelopes(sim, account.id, tenant_b)
    await create_topic(settings.kafka.raw_topic, 3)
    await create_topic(settings.kafka.dead_letter_topic, 1)
    await publish(settings, history_a + history_b)
    await project_until_idle(settings, pool)
    async with pool.acquire() as conn:
        healthy_a, healthy_b = await dump(conn, tenant_a), await dump(conn, tenant_b)
        # A projection bug damaged both tenants' rows.
        await conn.execute("UPDATE projection.charges SET amount_captured = 1 WHERE tenant_id = ANY($1)", [tenant_a, tenant_b])
        assert await dump(conn, tenant_a) != healthy_a

    report = await replay(settings, pool, tenant_id=tenant_a, timeout_s=120)
    assert report.events_applied == len({e.event_id for e in history_a}) and report.old_schema is None
    async with pool.acquire() as conn:
        assert await dump(conn, tenant_a) == healthy_a
        assert await dump(conn, tenant_b) != healthy_b  # only the replayed tenant was rebuilt

    report = await replay(settings, pool, timeout_s=120)
    assert report.old_schema is not None
    async with pool.acquire() as conn:
        assert await dump(conn, tenant_a) == healthy_a
        assert await dump(conn, tenant_b) == healthy_b
        assert await conn.fetchval("SELECT to_regnamespace($1)::text", report.old_schema) == report.old_schema
        # The analytics views now read the swapped-in tables.
        based_on = await conn.fetch("SELECT DISTINCT table_schema FROM information_schema.view_table_usage "
                                    "WHERE view_schema = 'analytics' AND table_schema LIKE 'projection%'")
        assert [r["table_schema"] for r in based_on] == ["projection"]

    # The live group carries on in the swapped-in tables: a new payment is applied there.
    await publish(settings, [event(CHARGE | {"id": "ch_after_swap", "status": "succeeded"}, "charge.succeeded",
                                   "evt_after_swap", T, tenant_a)])
    await project_until_idle(settings, pool)
    assert await pool.fetchval(
        "SELECT amount FROM projection.charges WHERE tenant_id = $1 AND id = 'ch_after_swap'", tenant_a) == 5000
    await pool.execute(f"DROP SCHEMA {report.old_schema} CASCADE")
