"""Stripe renders each event at the API version in force when it was created, so a tenant's topic holds
many shapes. Whatever version each event comes in — 2019's legacy plans and source cards, 2022, 2024,
basil, or the library's current one — the revenue tables come out the same, to the cent."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from projections.projector.store import PostgresProjectionStore
from stripe_sim import CURRENT_VERSION, LEGACY_VERSION, VERSIONS, SimServer
from tests.helpers import pinned_sim_clock
from tests.projections.support import apply_all, dump, history_envelopes

pytestmark = pytest.mark.integration
# What differs between versions by design: the raw object kept beside each row, the item list's price ids
# (a legacy item names its plan), and a charge's or payment intent's invoice (basil removed the link from
# both; it is not money). Every amount, currency, status, time and every aggregate is compared.
SHAPE_COLUMNS = ("data", "items", "card_brand", "invoice_id")


class Account:
    def __init__(self, sim: SimServer, account_id: str, pool: asyncpg.Pool):
        self.sim, self.account_id, self.pool = sim, account_id, pool

    async def project(self, tenant: str, version_of: Any) -> dict[str, list[tuple[Any, ...]]]:
        store = PostgresProjectionStore(self.pool, "versions-test")
        envelopes = history_envelopes(self.sim, self.account_id, tenant, version_of=version_of)
        await apply_all(store, envelopes)
        async with self.pool.acquire() as conn:
            return await dump(conn, tenant, leave_out=SHAPE_COLUMNS)


@pytest.fixture(scope="module")
async def account(clean_database: str) -> AsyncIterator[Account]:
    pool = await asyncpg.create_pool(clean_database, min_size=1, max_size=3)
    async with SimServer(seed=616, clock=pinned_sim_clock()) as sim:
        info = sim.create_account(api_version=CURRENT_VERSION, customers=25, months=12,
                                  currencies=("usd", "eur", "jpy"))
        yield Account(sim, info.id, pool)
    await pool.close()


@pytest.fixture(scope="module")
async def all_current(account: Account) -> dict[str, list[tuple[Any, ...]]]:
    return await account.project("versions_current", lambda event: CURRENT_VERSION)


@pytest.mark.parametrize("version", VERSIONS)
async def test_every_event_in_one_version_gives_the_same_tables(account: Account, all_current: Any, version: str) -> None:
    tables = await account.project(f"versions_all_{version[:10]}", lambda event: version)
    assert tables["daily_revenue"] and tables["mrr_by_month"]
    assert tables == all_current


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_each_event_in_a_random_version_gives_the_same_tables(account: Account, all_current: Any, seed: int) -> None:
    rng = random.Random(seed)
    chosen: dict[str, str] = {}

    def version_of(event: dict[str, Any]) -> str:
        return chosen.setdefault(event["id"], rng.choice(VERSIONS))

    tables = await account.project(f"versions_mixed_{seed}", version_of)
    assert set(chosen.values()) == set(VERSIONS)
    assert tables == all_current


async def test_legacy_shapes_are_really_legacy(account: Account) -> None:
    """The simulator's 2019 rendering has what the canonical model must cope with (so the tests above mean it)."""
    envelopes = history_envelopes(account.sim, account.account_id, "shape_probe", version_of=lambda e: LEGACY_VERSION)
    import orjson
    objects = [orjson.loads(e.payload)["data"]["object"] for e in envelopes]
    charge = next(o for o in objects if o["object"] == "charge" and o["status"] == "succeeded")
    sub = next(o for o in objects if o["object"] == "subscription")
    assert "amount_captured" not in charge and "payment_method_details" not in charge and charge["source"]["brand"][0].isupper()
    assert "currency" not in sub and "price" not in sub["items"]["data"][0] and "interval" in sub["items"]["data"][0]["plan"]
