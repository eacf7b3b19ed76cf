"""Errors map onto the stripe library's own exception classes, with Stripe's bodies and headers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import stripe

from stripe_sim import AccountInfo, SimServer
from stripe_sim.errors import StripeError

Make = Callable[..., stripe.StripeClient]


@pytest.fixture
def account(sim: SimServer) -> AccountInfo:
    return sim.create_account(customers=3)


async def test_unknown_key_is_authentication_error(make_client: Make) -> None:
    with pytest.raises(stripe.AuthenticationError) as err:
        await make_client("rk_test_51NotARealKeyAtAllXYZabcd").v1.customers.list_async()
    body = err.value.json_body["error"]
    assert err.value.http_status == 401
    assert body["message"] == "Invalid API Key provided: rk_test_*********************abcd"
    assert body["type"] == "invalid_request_error"
    assert err.value.request_id and err.value.request_id.startswith("req_")


async def test_revoked_key_is_expired(sim: SimServer, account: AccountInfo,
                                      make_client: Make) -> None:
    key = sim.create_restricted_key(account.id)
    await make_client(key).v1.customers.list_async()
    sim.revoke_key(key)
    with pytest.raises(stripe.AuthenticationError) as err:
        await make_client(key).v1.customers.list_async()
    assert err.value.json_body["error"]["code"] == "api_key_expired"
    assert err.value.http_status == 401


async def test_missing_permission_is_permission_error(sim: SimServer, account: AccountInfo,
                                                      make_client: Make) -> None:
    key = sim.create_restricted_key(account.id, permissions={"customers", "events"})
    client = make_client(key)
    await client.v1.customers.list_async()
    with pytest.raises(stripe.PermissionError) as err:
        await client.v1.charges.list_async()
    masked = key[:8] + "*" * (len(key) - 12) + key[-4:]
    assert err.value.http_status == 403
    assert err.value.json_body["error"]["type"] == "invalid_request_error"
    assert err.value.user_message == (
        f"The provided key '{masked}' does not have the required permissions for this endpoint "
        f"on account '{account.id}'. Having the 'rak_charge_read' permission would allow this "
        "request to continue.")


async def test_secret_key_reads_everything(account: AccountInfo, make_client: Make) -> None:
    client = make_client(account.secret_key)
    for service in (client.v1.customers, client.v1.charges, client.v1.subscriptions,
                    client.v1.invoices, client.v1.payment_intents, client.v1.events):
        await service.list_async({"limit": 1})


async def test_rate_limit_is_rate_limit_error(sim: SimServer, account: AccountInfo,
                                              make_client: Make) -> None:
    sim.set_rate_limit(account.id, 3)
    client = make_client(account.secret_key)
    with pytest.raises(stripe.RateLimitError) as err:
        for _ in range(10):
            await client.v1.customers.list_async()
    assert err.value.http_status == 429
    assert err.value.json_body["error"]["code"] == "rate_limit"
    assert err.value.json_body["error"]["type"] == "invalid_request_error"
    assert err.value.headers["stripe-rate-limited-reason"] == "global-rate"
    assert "stripe-should-retry" not in err.value.headers
    counts = sim.request_counts(account.id)
    assert counts["GET /v1/customers"] >= 4


def _allowed(sim: SimServer, key_id: str, endpoint: str, tries: int = 200) -> tuple[int, str]:
    """How many requests pass the limit at once before the first 429, and that 429's reason."""
    key = sim.state.keys[key_id]
    for allowed in range(tries):
        try:
            sim.limiter.check(key, endpoint)
        except StripeError as err:
            return allowed, err.headers["Stripe-Rate-Limited-Reason"]
    return tries, ""


async def test_default_test_mode_limit_is_25(sim: SimServer, account: AccountInfo) -> None:
    allowed, reason = _allowed(sim, account.secret_key, "GET /v1/customers")
    assert allowed in (25, 26) and reason in ("global-rate", "endpoint-rate")
    assert _allowed(sim, account.secret_key, "GET /v1/charges")[0] <= 1  # the account's budget is spent


async def test_live_mode_allows_100_a_second_but_25_per_endpoint(sim: SimServer, account: AccountInfo) -> None:
    assert _allowed(sim, account.live_secret_key, "GET /v1/charges") == (25, "endpoint-rate")
    assert _allowed(sim, account.live_secret_key, "GET /v1/charges/{id}") == (25, "endpoint-rate")
    assert _allowed(sim, account.live_secret_key, "GET /v1/invoices") == (25, "endpoint-rate")
    assert _allowed(sim, account.live_secret_key, "GET /v1/customers") == (25, "global-rate")  # 100 in all
    seen = sim.request_rate(account.id, livemode=True)
    assert seen["requests"] == 104 and seen["rate_limited"] == 4 and seen["rate_limited_endpoint"] == 3
    assert seen["busiest_second"] == 104


@pytest.mark.parametrize("status", [500, 503])
async def test_injected_server_errors_are_api_errors(sim: SimServer, account: AccountInfo,
                                                     make_client: Make, status: int) -> None:
    sim.set_faults({"kind": "status", "status": status, "count": 1})
    client = make_client(account.secret_key)
    with pytest.raises(stripe.APIError) as err:
        await client.v1.invoices.list_async()
    assert err.value.http_status == status
    assert err.value.json_body["error"]["type"] == "api_error"
    await client.v1.invoices.list_async()  # count used up: fault gone
    assert sim.faults.active == []


async def test_library_retries_faults_and_should_retry_false_stops_it(
        sim: SimServer, account: AccountInfo, make_client: Make) -> None:
    sim.set_faults({"kind": "status", "status": 503, "count": 2})
    page = await make_client(account.secret_key, retries=2).v1.customers.list_async()
    assert page.object == "list"
    sim.set_faults({"kind": "status", "status": 500, "count": 1, "should_retry": False})
    with pytest.raises(stripe.APIError) as err:
        await make_client(account.secret_key, retries=2).v1.customers.list_async()
    assert err.value.headers["stripe-should-retry"] == "false"
    sim.set_faults()


async def test_dropped_connection_is_connection_error(sim: SimServer, account: AccountInfo,
                                                      make_client: Make) -> None:
    sim.set_faults({"kind": "drop"})  # every attempt: aiohttp itself may retry a GET once
    with pytest.raises(stripe.APIConnectionError):
        await make_client(account.secret_key).v1.charges.list_async()
    sim.set_faults()
    await make_client(account.secret_key).v1.charges.list_async()


async def test_latency_fault_delays(sim: SimServer, account: AccountInfo,
                                    make_client: Make) -> None:
    import time
    sim.set_faults({"kind": "latency", "latency_ms": 150, "count": 1})
    started = time.monotonic()
    await make_client(account.secret_key).v1.charges.list_async()
    assert time.monotonic() - started >= 0.15


async def test_a_request_counts_against_the_limit_as_it_arrives_and_a_429_comes_back_at_once(
        sim: SimServer, account: AccountInfo, make_client: Make) -> None:
    """Stripe's limiter sees when a client sends, not when a slow page is served: counted after the latency, the
    busiest second seen was this process's timers firing late in a bunch, not what the client sent."""
    import asyncio
    import time
    sim.set_rate_limit(account.id, 3)
    sim.set_faults({"kind": "latency", "latency_ms": 400})
    client = make_client(account.secret_key)

    async def timed() -> tuple[bool, float]:
        started = time.monotonic()
        try:
            await client.v1.customers.list_async()
        except stripe.RateLimitError:
            return False, time.monotonic() - started
        return True, time.monotonic() - started

    answers = await asyncio.gather(*(timed() for _ in range(6)))
    sim.set_faults()
    assert sorted(served for served, _ in answers) == [False] * 3 + [True] * 3  # the bucket holds three
    assert all(took >= 0.4 for served, took in answers if served)
    assert all(took < 0.4 for served, took in answers if not served)  # refused on arrival, not after serving
    seen = sim.request_rate(account.id, livemode=False)
    assert seen["requests"] == 6 and seen["rate_limited"] == 3


async def test_every_response_has_request_id(sim: SimServer, account: AccountInfo,
                                             make_client: Make) -> None:
    page = await make_client(account.secret_key).v1.customers.list_async()
    assert page.last_response.request_id.startswith("req_")
