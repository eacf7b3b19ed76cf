"""End to end through the real broker and server: simulator history, shuffled and duplicated, projected,
equals the simulator's independently computed ground truth to the cent (USD, EUR and zero-decimal JPY)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from plumbing.settings import Settings
from stripe_sim import CURRENT_VERSION, OLD_VERSION, SimServer
from tests.helpers import month_of, pinned_sim_clock, topic_size
from tests.projections.support import (
    daily_figures,
    history_envelopes,
    mrr_figures,
    project_until_idle,
    publish,
    shuffled_with_duplicates,
    subscriber_figures,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(seed=21, clock=pinned_sim_clock()) as server:
        yield server


@pytest.mark.parametrize("api_version", [OLD_VERSION, CURRENT_VERSION])
@pytest.mark.parametrize("customer_coupons", [False, True], ids=["own discounts", "customer discounts"])
async def test_shuffled_duplicated_history_matches_ground_truth(
    api_version: str, customer_coupons: bool, sim: SimServer, settings: Settings, pool: asyncpg.Pool,
    create_topic: Callable[[str, int], Awaitable[None]],
) -> None:
    """With `customer_coupons`, customers also get discounts of their own and lose some (every month's MRR counts
    them from the customer's event, whatever order it arrives in)."""
    account = sim.create_account(api_version=api_version, customers=60, months=12, currencies=("usd", "eur", "jpy"),
                                 customer_coupons=customer_coupons)
    tenant = f"tenant_{api_version[:4]}_{int(time.time() * 1000) % 10**8}"
    envelopes = history_envelopes(sim, account.id, tenant)
    assert len(envelopes) > 500
    deliveries = shuffled_with_duplicates(envelopes, seed=3)
    await create_topic(settings.kafka.raw_topic, 4)
    await create_topic(settings.kafka.dead_letter_topic, 1)
    await publish(settings, deliveries)

    projector = await project_until_idle(settings, pool)

    assert projector.applied_events == len({e.event_id for e in envelopes})  # none lost, none twice
    assert await topic_size(settings.kafka, settings.kafka.dead_letter_topic) == 0
    truth = sim.ground_truth(account.id)
    async with pool.acquire() as conn:
        daily, failed = await daily_figures(conn, tenant)
        assert daily == truth["daily"]
        assert failed == truth["failed"]
        assert {c for day in daily.values() for c in day} == {"usd", "eur", "jpy"}
        # Months after the simulator's pinned "now" carry its last state on to today's month: not in the truth.
        last_month = month_of(truth["as_of"])
        mrr = {m: v for m, v in (await mrr_figures(conn, tenant)).items() if m <= last_month}
        expected_mrr = {m: {c: v for c, v in cur.items() if v > 0} for m, cur in truth["mrr"].items()}
        assert mrr == {m: v for m, v in expected_mrr.items() if v}
        subscribers = {m: v for m, v in (await subscriber_figures(conn, tenant)).items() if m <= last_month}
        assert len(truth["subscribers"]) >= 12
        assert {m: subscribers.get(m) for m in truth["subscribers"]} == truth["subscribers"]
        assert all(v == {"active": 0, "new": 0, "churned": 0} for m, v in subscribers.items() if m not in truth["subscribers"])
