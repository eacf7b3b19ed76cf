"""Days and months in the tenant's time zone: the same history, read for a tenant in Auckland, equals the
simulator's ground truth computed in Auckland's calendar — and differs from the UTC one, so the zone is used.
Changing the zone changes the next read, with no replay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from projections.projector.store import PostgresProjectionStore
from stripe_sim import CURRENT_VERSION, SimServer
from tests.helpers import pinned_sim_clock
from tests.projections.support import (
    apply_all,
    daily_figures,
    history_envelopes,
    mrr_figures,
    subscriber_figures,
)

pytestmark = pytest.mark.integration
TENANT = "tenant_time_zone"
ZONE = "Pacific/Auckland"  # UTC+12/+13: most of a UTC day's afternoon is the next day there


@dataclass
class World:
    pool: asyncpg.Pool
    truth: dict[str, dict[str, Any]]  # zone -> the simulator's ground truth in that zone's calendar


@pytest.fixture(scope="module")
async def world(clean_database: str) -> AsyncIterator[World]:
    pool = await asyncpg.create_pool(clean_database, min_size=1, max_size=2)
    await pool.execute("INSERT INTO tenants (tenant_id, name, token_sha256) VALUES ($1, 'tz', sha256(convert_to($1, 'UTF8'))) "
                       "ON CONFLICT (tenant_id) DO NOTHING", TENANT)
    async with SimServer(seed=42, clock=pinned_sim_clock()) as sim:
        account = sim.create_account(api_version=CURRENT_VERSION, customers=50, months=12, currencies=("usd", "jpy"))
        await apply_all(PostgresProjectionStore(pool, "tz-test"), history_envelopes(sim, account.id, TENANT))
        truth = {zone: sim.ground_truth(account.id, zone=zone) for zone in ("UTC", ZONE)}
    yield World(pool, truth)
    await pool.close()


async def figures(pool: asyncpg.Pool, zone: str, as_of: int) -> dict[str, Any]:
    """Our daily revenue, failed payments, MRR and subscribers, months up to the simulator's "now" in `zone`."""
    last_month = datetime.fromtimestamp(as_of, ZoneInfo(zone)).strftime("%Y-%m")
    async with pool.acquire() as conn:
        daily, failed = await daily_figures(conn, TENANT)
        mrr = {m: v for m, v in (await mrr_figures(conn, TENANT)).items() if m <= last_month}
        subscribers = {m: v for m, v in (await subscriber_figures(conn, TENANT)).items() if m <= last_month}
    return {"daily": daily, "failed": failed, "mrr": mrr, "subscribers": subscribers}


def expected(truth: dict[str, Any]) -> dict[str, Any]:
    mrr = {m: {c: v for c, v in cur.items() if v > 0} for m, cur in truth["mrr"].items()}
    return {"daily": truth["daily"], "failed": truth["failed"], "mrr": {m: v for m, v in mrr.items() if v},
            "subscribers": truth["subscribers"]}


async def test_days_and_months_follow_the_tenants_zone_and_a_change_needs_no_replay(world: World) -> None:
    in_zone, in_utc = expected(world.truth[ZONE]), expected(world.truth["UTC"])
    # this history has charges and a subscription change in the hours where the two calendars disagree
    assert in_zone["daily"] != in_utc["daily"] and in_zone["mrr"] != in_utc["mrr"]
    await world.pool.execute("UPDATE tenants SET time_zone = $2 WHERE tenant_id = $1", TENANT, ZONE)
    ours = await figures(world.pool, ZONE, world.truth[ZONE]["as_of"])
    assert ours["daily"] == in_zone["daily"] and ours["failed"] == in_zone["failed"]
    assert ours["mrr"] == in_zone["mrr"]
    assert {m: ours["subscribers"].get(m) for m in in_zone["subscribers"]} == in_zone["subscribers"]
    # Back to UTC: the next read is UTC's calendar again (the views derive days and months at read time).
    await world.pool.execute("UPDATE tenants SET time_zone = 'UTC' WHERE tenant_id = $1", TENANT)
    ours = await figures(world.pool, "UTC", world.truth["UTC"]["as_of"])
    assert ours["daily"] == in_utc["daily"] and ours["mrr"] == in_utc["mrr"]

