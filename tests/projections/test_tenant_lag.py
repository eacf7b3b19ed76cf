"""Per-tenant lag in the projector's metrics: every tenant whose events it applied has its own series (the age of
its oldest event in its latest batch), so a tenant that falls behind is visible even when the total is not."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from plumbing.kafka import KafkaPublisher
from plumbing.settings import Settings
from projections.projector.consumer import RevenueProjector
from projections.projector.metrics import TENANT_LAG_TTL_S, ProjectorMetrics
from stripe_sim import CURRENT_VERSION, SimServer
from tests.helpers import pinned_sim_clock
from tests.projections.support import history_envelopes, publish

pytestmark = pytest.mark.integration


async def test_each_tenant_has_its_own_lag_series(settings: Settings, pool: asyncpg.Pool,
                                                  create_topic: Callable[[str, int], Awaitable[None]]) -> None:
    await create_topic(settings.kafka.raw_topic, 2)
    await create_topic(settings.kafka.dead_letter_topic, 1)
    tenants = ["tenant_lag_a", "tenant_lag_b", "tenant_lag_c"]
    async with SimServer(seed=12, clock=pinned_sim_clock()) as sim:
        account = sim.create_account(api_version=CURRENT_VERSION, customers=5, months=3)
        envelopes = [e for t in tenants for e in history_envelopes(sim, account.id, t)]
    await publish(settings, envelopes)
    registry = CollectorRegistry()
    async with KafkaPublisher(settings.kafka, client_id="test-dlq") as dead_letters:
        projector = RevenueProjector(settings.kafka, pool, dead_letters, ProjectorMetrics(registry))
        await projector.start()
        try:
            await projector.run_until_idle(120)
        finally:
            await projector.stop()
    lags = {t: registry.get_sample_value("projector_tenant_lag_seconds", {"tenant": t}) for t in tenants}
    assert all(lag is not None and 0 <= lag < 600 for lag in lags.values()), lags
    assert registry.get_sample_value("projector_tenant_lag_seconds", {"tenant": "tenant_without_events"}) is None


def test_a_tenant_series_not_updated_for_ten_minutes_is_dropped() -> None:
    """A quiet tenant (or one whose partitions moved to another member) does not keep a past backlog for ever."""
    registry = CollectorRegistry()
    metrics = ProjectorMetrics(registry)
    metrics.tenant_lagged("tenant_quiet", 3600.0)
    metrics.tenant_lagged("tenant_busy", 1.0)
    metrics._tenant_lag_at["tenant_quiet"] -= TENANT_LAG_TTL_S + 1  # as if set eleven minutes ago
    metrics._expired_at -= 61
    metrics.tenant_lagged("tenant_busy", 2.0)
    assert registry.get_sample_value("projector_tenant_lag_seconds", {"tenant": "tenant_quiet"}) is None
    assert registry.get_sample_value("projector_tenant_lag_seconds", {"tenant": "tenant_busy"}) == 2.0
