"""Webhook deliveries: Stripe's signature scheme, retries, duplicates, shuffling, secret rolling."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import stripe
from aiohttp import web

from stripe_sim import SimServer


@dataclass
class Receiver:
    """A local webhook endpoint that records deliveries and answers scripted statuses."""

    url: str = ""
    received: list[tuple[str, bytes]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((request.headers["Stripe-Signature"], await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body in self.received]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    await runner.cleanup()


@pytest.fixture(autouse=True)
def default_delivery(sim: SimServer) -> None:
    sim.set_delivery(duplicates=0.0, shuffle=False, backoff=(0.02, 0.04, 0.08), timeout=2.0)


async def test_delivery_verifies_with_right_secret_only(sim: SimServer,
                                                        receiver: Receiver) -> None:
    info = sim.create_account(customers=0)
    ep_id, secret = sim.add_webhook_endpoint(info.id, receiver.url)
    book = sim.book(info.id)
    cus = book.create_customer(sim.clock.now(), "a@example.com", "A")
    await sim.wait_deliveries_idle(5)
    assert len(receiver.received) == 1
    header, body = receiver.received[0]
    event = stripe.Webhook.construct_event(body.decode(), header, secret)
    assert event.id.startswith("evt_") and event.type == "customer.created"
    assert event.data.object.id == cus["id"]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body.decode(), header, "whsec_wrong")
    log = sim.deliveries(ep_id)
    assert [d.state for d in log] == ["succeeded"] and log[0].attempts[0].status == 200


async def test_only_matching_account_and_mode_receive(sim: SimServer, receiver: Receiver) -> None:
    a = sim.create_account(customers=0)
    b = sim.create_account(customers=0)
    sim.add_webhook_endpoint(a.id, receiver.url)
    sim.book(b.id).create_customer(sim.clock.now())
    sim.book(a.id, livemode=True).create_customer(sim.clock.now())
    await sim.wait_deliveries_idle(5)
    assert receiver.received == []


async def test_retries_on_non_2xx_until_success(sim: SimServer, receiver: Receiver) -> None:
    info = sim.create_account(customers=0)
    ep_id, _ = sim.add_webhook_endpoint(info.id, receiver.url)
    receiver.statuses = [500, 503]
    sim.book(info.id).create_customer(sim.clock.now())
    await sim.wait_deliveries_idle(5)
    (delivery,) = sim.deliveries(ep_id)
    assert [a.status for a in delivery.attempts] == [500, 503, 200]
    assert delivery.state == "succeeded" and len(receiver.received) == 3
    assert len({json.loads(b)["id"] for _, b in receiver.received}) == 1


async def test_gives_up_after_backoff_schedule(sim: SimServer, receiver: Receiver) -> None:
    info = sim.create_account(customers=0)
    ep_id, _ = sim.add_webhook_endpoint(info.id, receiver.url)
    receiver.statuses = [500] * 10
    evt_source = sim.book(info.id).create_customer(sim.clock.now())
    await sim.wait_deliveries_idle(5)
    (delivery,) = sim.deliveries(ep_id)
    assert delivery.state == "failed" and len(delivery.attempts) == 4
    assert evt_source["id"]


async def test_unreachable_endpoint_is_logged(sim: SimServer) -> None:
    info = sim.create_account(customers=0)
    ep_id, _ = sim.add_webhook_endpoint(info.id, "http://127.0.0.1:9/hook")
    sim.book(info.id).create_customer(sim.clock.now())
    await sim.wait_deliveries_idle(5)
    (delivery,) = sim.deliveries(ep_id)
    assert delivery.state == "failed" and all(a.error for a in delivery.attempts)


async def test_rolled_secret_both_verify_during_grace(sim: SimServer, receiver: Receiver) -> None:
    info = sim.create_account(customers=0)
    ep_id, old = sim.add_webhook_endpoint(info.id, receiver.url)
    new = sim.roll_webhook_secret(ep_id, grace_seconds=3600)
    sim.book(info.id).create_customer(sim.clock.now())
    await sim.wait_deliveries_idle(5)
    header, body = receiver.received[-1]
    assert header.count("v1=") == 2
    for secret in (old, new):
        stripe.Webhook.construct_event(body.decode(), header, secret)
    sim.clock.advance(3601)
    try:
        sim.book(info.id).create_customer(sim.clock.now())
        await sim.wait_deliveries_idle(5)
        header, body = receiver.received[-1]
        assert header.count("v1=") == 1
        stripe.Webhook.construct_event(body.decode(), header, new)
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(body.decode(), header, old)
    finally:
        sim.clock.advance(-3601)


async def test_duplicates_and_shuffle(sim: SimServer, receiver: Receiver) -> None:
    info = sim.create_account(customers=0)
    sim.add_webhook_endpoint(info.id, receiver.url)
    sim.set_delivery(duplicates=1.0, shuffle=True, shuffle_window=0.2)
    book = sim.book(info.id)
    emitted = [book.create_customer(sim.clock.now() + i)["id"] for i in range(20)]
    await sim.wait_deliveries_idle(5)
    got = [e["data"]["object"]["id"] for e in receiver.events()]
    assert sorted(got) == sorted(emitted * 2)
    firsts = list(dict.fromkeys(got))
    assert firsts != emitted  # shuffled (probability of in-order by chance is negligible)


async def test_send_test_webhook(sim: SimServer, receiver: Receiver) -> None:
    info = sim.create_account(customers=0)
    ep_id, secret = sim.add_webhook_endpoint(info.id, receiver.url)
    sim.send_test_webhook(ep_id, "invoice.paid")
    await sim.wait_deliveries_idle(5)
    header, body = receiver.received[0]
    event = stripe.Webhook.construct_event(body.decode(), header, secret)
    assert event.id == "evt_00000000000000"
    assert event.type == "invoice.paid" and event.data.object.id == "in_00000000000000"
    assert event.api_version == info.api_version


async def test_delivery_log_over_admin_http(sim: SimServer, receiver: Receiver) -> None:
    import aiohttp
    info = sim.create_account(customers=0)
    async with aiohttp.ClientSession(sim.base_url) as http:
        async with http.post(f"/_sim/accounts/{info.id}/webhook_endpoints",
                             json={"url": receiver.url}) as resp:
            ep = await resp.json()
        async with http.post(f"/_sim/webhook_endpoints/{ep['id']}/test", json={}) as resp:
            assert resp.status == 202
        async with http.post("/_sim/deliveries/wait", json={"timeout": 5}) as resp:
            assert (await resp.json()) == {"idle": True}
        async with http.get("/_sim/deliveries", params={"endpoint": ep["id"]}) as resp:
            log = await resp.json()
    assert len(log) == 1 and log[0]["attempts"][0]["status"] == 200
    assert log[0]["event_id"] == "evt_00000000000000"
    assert ep["secret"].startswith("whsec_")


async def test_pending_webhooks_counts_down(sim: SimServer, receiver: Receiver) -> None:
    info = sim.create_account(customers=0)
    sim.add_webhook_endpoint(info.id, receiver.url)
    sim.add_webhook_endpoint(info.id, receiver.url)
    sim.book(info.id).create_customer(sim.clock.now())
    evt = sim.state.accounts[info.id].test.all("event")[0]
    assert evt["pending_webhooks"] == 2
    await asyncio.wait_for(sim.wait_deliveries_idle(5), 6)
    assert evt["pending_webhooks"] == 0 and len(receiver.received) == 2
