"""Fixtures for the simulator's tests: a running SimServer and stripe clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import stripe

from stripe_sim import OLD_VERSION, AccountInfo, SimClock, SimServer

NOW = 1_760_000_000  # 2025-10-09T08:53:20Z, frozen so figures are repeatable


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[SimServer]:
    """A simulator on a free port with a frozen clock."""
    async with SimServer(seed=7, clock=SimClock(frozen_at=NOW)) as server:
        yield server


@pytest.fixture(scope="module")
def big_account(sim: SimServer) -> AccountInfo:
    """A generated account: 1,000 customers over 12 months, old API version, no rate limit."""
    info = sim.create_account(api_version=OLD_VERSION, customers=1000, months=12, seed=11)
    sim.set_rate_limit(info.id, 10_000)
    return info


@pytest.fixture
async def make_client(sim: SimServer) -> AsyncIterator[Callable[..., stripe.StripeClient]]:
    """Factory for official-library clients aimed at the simulator (closed after the test)."""
    http_clients: list[stripe.AIOHTTPClient] = []

    def make(key: str, retries: int = 0) -> stripe.StripeClient:
        http = stripe.AIOHTTPClient()
        http_clients.append(http)
        return stripe.StripeClient(key, base_addresses={"api": sim.base_url},
                                   http_client=http, max_network_retries=retries)

    yield make
    for http in http_clients:
        await http.close_async()
