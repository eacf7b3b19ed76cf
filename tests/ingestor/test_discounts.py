"""Discounts named only by id (Stripe since 2024-04; no `discount` object since basil; coupons under
`source.coupon` since clover) are filled in before publishing, on every path, so forever coupons count in
MRR whatever the version an event was rendered in."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import stripe

from schemas.stripe_objects import read_subscription
from service.worker import Worker
from stripe_sim import CURRENT_VERSION, SimServer
from stripe_sim.render import render_event
from tests.ingestor.conftest import ControlClient, connect, published_envelopes

pytestmark = pytest.mark.integration


def discounted_subscription_event(sim: SimServer, account: str) -> dict[str, Any]:
    """A subscription event of the account whose subscription has a discount, rendered at the current version."""
    store = sim.state.accounts[account].store(False)
    for stored in store.all("event"):
        obj = stored["data"]["object"]
        if obj.get("object") == "subscription" and obj.get("discount"):
            return render_event(stored, CURRENT_VERSION)
    raise AssertionError("the simulated account has no discounted subscription")


def assert_discounts_readable(obj: dict[str, Any]) -> None:
    sub = read_subscription(obj)
    assert sub.unresolved_discounts == () and sub.coupons, obj.get("discounts")


async def test_the_receiver_fills_in_discounts_named_by_id(control: ControlClient, sim: SimServer) -> None:
    account = sim.create_account(api_version=CURRENT_VERSION, customers=40).id
    sim.set_rate_limit(account, 1000)
    tenant, token, _, _ = await connect(control, sim, account)
    secret = "whsec_" + "d1sc0unt5" * 4
    status, body = await control.call("PUT", f"/api/tenants/{tenant}/connections/test/webhook-secret", token,
                                      {"secret": secret})
    assert status == 200, body
    event = discounted_subscription_event(sim, account)
    assert all(isinstance(d, str) for d in event["data"]["object"]["discounts"])  # ids only, as Stripe sends them
    payload = orjson.dumps(event).decode()
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, int(time.time()))
    url = body["connection"]["webhook"]["url"].replace(control.settings.http.public_base_url.rstrip("/"), "")
    async with control.http.post(control.server.make_url(url), data=payload,
                                 headers={"Content-Type": "application/json", "Stripe-Signature": header}) as resp:
        assert resp.status == 200, await resp.text()
    [envelope] = [e for e in await published_envelopes(control.settings, 1) if e.event_id == event["id"]]
    assert_discounts_readable(orjson.loads(envelope.payload)["data"]["object"])


async def test_the_poller_fills_in_discounts_named_by_id(control: ControlClient, worker: Worker, sim: SimServer) -> None:
    account = sim.create_account(api_version=CURRENT_VERSION, customers=40).id
    sim.set_rate_limit(account, 1000)
    _, _, connection_id, _ = await connect(control, sim, account)
    outcome = await worker.poller.poll_connection(connection_id)
    assert outcome.state == "polled", outcome
    subscriptions = [orjson.loads(e.payload)["data"]["object"] for e in await published_envelopes(control.settings, 1)
                     if e.object_type == "subscription"]
    discounted = [s for s in subscriptions if s.get("discounts")]
    assert discounted
    for sub in discounted:
        assert_discounts_readable(sub)
