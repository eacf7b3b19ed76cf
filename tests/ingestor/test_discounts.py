"""Discounts named only by id (Stripe since 2024-04; no `discount` object since basil; coupons under
`source.coupon` since clover) are filled in before publishing, on every path, so forever coupons count in
MRR whatever the version an event was rendered in."""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple

import orjson
import pytest
import stripe
from aiohttp.test_utils import TestServer

from ingestor.sources.poller import EVENTS_WINDOW_S
from schemas.stripe_objects import read_subscription
from service.web import create_ingest_app
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


class Connected(NamedTuple):
    """An account connected with its webhook signing secret."""

    account: str
    webhook_url: str
    connection_id: str
    key: str
    tenant: str
    token: str


async def connected_with_webhooks(control: ControlClient, sim: SimServer, secret: str) -> Connected:
    """Connects an account whose subscriptions have discounts, with a webhook signing secret."""
    account = sim.create_account(api_version=CURRENT_VERSION, customers=40).id
    sim.set_rate_limit(account, 1000)
    tenant, token, connection_id, key = await connect(control, sim, account)
    status, body = await control.call("PUT", f"/api/tenants/{tenant}/connections/test/webhook-secret", token,
                                      {"secret": secret})
    assert status == 200, body
    return Connected(account, body["connection"]["webhook"]["url"], connection_id, key, tenant, token)


async def test_the_receiver_fills_in_discounts_named_by_id(control: ControlClient, sim: SimServer) -> None:
    secret = "whsec_" + "d1sc0unt5" * 4
    account, webhook_url, *_ = await connected_with_webhooks(control, sim, secret)
    event = discounted_subscription_event(sim, account)
    assert all(isinstance(d, str) for d in event["data"]["object"]["discounts"])  # ids only, as Stripe sends them
    payload = orjson.dumps(event).decode()
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, int(time.time()))
    url = webhook_url.replace(control.settings.http.public_base_url.rstrip("/"), "")
    async with control.http.post(control.server.make_url(url), data=payload,
                                 headers={"Content-Type": "application/json", "Stripe-Signature": header}) as resp:
        assert resp.status == 200, await resp.text()
    [envelope] = [e for e in await published_envelopes(control.settings, 1) if e.event_id == event["id"]]
    assert_discounts_readable(orjson.loads(envelope.payload)["data"]["object"])


async def test_deliveries_waiting_for_discounts_get_503_instead_of_queueing_behind_a_slow_stripe(
    control: ControlClient, sim: SimServer
) -> None:
    """A tenant signs its own webhooks and can name discounts nobody fetched yet, as fast as it likes: each delivery
    waited for Stripe (and the account's budget) without a bound, its body held in the shared web process. Now a
    connection has at most `discount_fetches_per_connection` fetches waiting, each given up after
    `discount_fetch_timeout_s`: 503, and Stripe delivers again later."""
    secret = "whsec_" + "sl0wstr1pe" * 4
    account, webhook_url, *_ = await connected_with_webhooks(control, sim, secret)
    payload = orjson.dumps(discounted_subscription_event(sim, account)).decode()
    headers = {"Content-Type": "application/json",
               "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(payload, secret, int(time.time()))}
    receiver = control.settings.receiver.model_copy(update={"discount_fetch_timeout_s": 0.5,
                                                            "discount_fetches_per_connection": 2})
    server = TestServer(create_ingest_app(control.settings.model_copy(update={"receiver": receiver}), control.keyring,
                                          readers=control.readers), host="127.0.0.1")
    await server.start_server()
    url = server.make_url(control.url_path(webhook_url))

    async def deliver() -> tuple[int, dict[str, Any], str | None]:
        async with control.http.post(url, data=payload, headers=headers) as resp:
            return resp.status, await resp.json(), resp.headers.get("Retry-After")

    sim.set_faults({"kind": "latency", "latency_ms": 10_000})  # Stripe does not answer for ten seconds
    try:
        async with asyncio.timeout(5):  # each waited for Stripe before
            answers = await asyncio.gather(*(deliver() for _ in range(6)))
    finally:
        sim.set_faults()
        await server.close()
    assert [status for status, _, _ in answers] == [503] * 6
    assert all(answer["error"]["code"] == "temporarily_unavailable" and retry for _, answer, retry in answers)


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


async def deliver_signed(control: ControlClient, webhook_url: str, event: dict[str, Any],
                         secret: str) -> tuple[int, dict[str, Any]]:
    """Delivers `event` to the connection's webhook URL signed with `secret`; returns the status and JSON answer."""
    payload = orjson.dumps(event).decode()
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, int(time.time()))
    url = control.server.make_url(webhook_url.replace(control.settings.http.public_base_url.rstrip("/"), ""))
    async with control.http.post(url, data=payload,
                                 headers={"Content-Type": "application/json", "Stripe-Signature": header}) as resp:
        return resp.status, await resp.json()


async def polled_up_to(control: ControlClient, connection_id: str, created: int) -> None:
    """Stores the connection's poll cursor at `created`, as a poll that ran then (the next one reads from there)."""
    await control.pool.execute(
        "INSERT INTO poll_cursors (connection_id, last_event_created, recent_event_ids, updated_at) "
        "VALUES ($1, $2, '{}', now())", connection_id, created)


async def test_a_delivery_whose_fill_in_stripe_refuses_the_key_for_is_left_to_the_poller(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    """The key revoked at Stripe: a delivery naming discounts by id was answered 503 for as long as the key stayed
    broken; Stripe delivers again for three days, then disables the endpoint (every revenue event of the tenant with
    it). Now it is acknowledged, not published; the poller, which stops at the same refusal with its cursor kept,
    publishes it filled in once a working key is entered."""
    secret = "whsec_" + "r3v0ked" * 5
    account, url, connection_id, key, tenant, token = await connected_with_webhooks(control, sim, secret)
    event = discounted_subscription_event(sim, account)
    await polled_up_to(control, connection_id, event["created"] - 1)  # polled before the event came
    sim.revoke_key(key)
    status, answer = await deliver_signed(control, url, event, secret)
    assert (status, answer["published"]) == (200, False) and "poller" in answer["left_to_poller"], answer
    assert key not in str(answer)
    assert event["id"] not in {e.event_id for e in await published_envelopes(control.settings)}
    stopped = await worker.poller.poll_connection(connection_id)
    assert (stopped.state, stopped.detail) == ("stopped", "key_invalid"), stopped
    # Known refused, the key is not shown to Stripe again (many refused keys from our address could have Stripe
    # refuse the address, every tenant with it).
    asked = sim.request_counts(account)
    status, answer = await deliver_signed(control, url, event, secret)
    assert (status, answer["published"]) == (200, False) and sim.request_counts(account) == asked, answer
    status, body = await control.call("PUT", f"/api/tenants/{tenant}/connections/test/key", token,
                                      {"key": sim.create_restricted_key(account)})
    assert status == 200, body
    polled = await worker.poller.poll_connection(connection_id)
    assert polled.state == "polled", polled
    [envelope] = [e for e in await published_envelopes(control.settings, 1) if e.event_id == event["id"]]
    assert_discounts_readable(orjson.loads(envelope.payload)["data"]["object"])


async def test_an_event_the_poller_is_not_sure_to_list_is_not_left_to_it_when_the_key_is_refused(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    """While Stripe refuses the key, a delivery of an event no poll is sure to list was acknowledged as left to the
    poller and lost for good (the import gives the object's state, not its change; the MRR of the months it changed
    was wrong): one older than any poll reaches back (30 days less an hour: resent from the Dashboard weeks later; the
    fault suite's history, delivered as it is made), or any event of a connection never polled (its first poll reads
    from whenever a key works, less 30 days). Now those are answered 503, so Stripe delivers them again, and once a
    working key is entered they are published, filled in; a recent one on a polled connection is still left to the
    poller."""
    secret = "whsec_" + "0ldr3v0k" * 5
    account, url, connection_id, key, tenant, token = await connected_with_webhooks(control, sim, secret)
    recent = discounted_subscription_event(sim, account)
    old = recent | {"id": recent["id"] + "old", "created": int(time.time()) - EVENTS_WINDOW_S}
    sim.revoke_key(key)
    status, answer = await deliver_signed(control, url, recent, secret)  # never polled yet
    assert (status, answer["error"]["code"]) == (503, "temporarily_unavailable"), answer
    await polled_up_to(control, connection_id, recent["created"] - 1)
    status, answer = await deliver_signed(control, url, old, secret)
    assert (status, answer["error"]["code"]) == (503, "temporarily_unavailable"), answer
    assert key not in str(answer)
    status, answer = await deliver_signed(control, url, recent, secret)  # polled now: the poller lists it
    assert (status, answer["published"]) == (200, False) and "poller" in answer["left_to_poller"], answer
    assert old["id"] not in {e.event_id for e in await published_envelopes(control.settings)}
    status, body = await control.call("PUT", f"/api/tenants/{tenant}/connections/test/key", token,
                                      {"key": sim.create_restricted_key(account)})
    assert status == 200, body
    status, answer = await deliver_signed(control, url, old, secret)
    assert (status, answer["published"]) == (200, True), answer
    [envelope] = [e for e in await published_envelopes(control.settings, 1) if e.event_id == old["id"]]
    assert_discounts_readable(orjson.loads(envelope.payload)["data"]["object"])


async def test_an_event_naming_a_subscription_stripe_no_longer_has_is_counted_and_polling_goes_on(
    control: ControlClient, worker: Worker, sim: SimServer
) -> None:
    """A subscription event whose subscription Stripe answers 404 for (a test account's data deleted): the fill-in
    failed the poll, and every poll after it (its cursor held before the event), so nothing more of the tenant was
    polled. Now what it names stays unknown, the event goes on to be refused by name in health, and polling goes
    on."""
    account = sim.create_account(api_version=CURRENT_VERSION, customers=40).id
    sim.set_rate_limit(account, 1000)
    _, _, connection_id, _ = await connect(control, sim, account)
    event = discounted_subscription_event(sim, account)
    del sim.state.accounts[account].store(False).objects["subscription"][event["data"]["object"]["id"]]
    for _ in range(2):
        outcome = await worker.poller.poll_connection(connection_id, force=True)
        assert outcome.state == "polled", outcome
    [envelope] = [e for e in await published_envelopes(control.settings, 1) if e.event_id == event["id"]]
    assert read_subscription(orjson.loads(envelope.payload)["data"]["object"]).unresolved_discounts


async def test_a_permission_taken_away_is_answered_503_so_the_key_edited_in_place_reads_it_on_stripes_retry(
    control: ControlClient, sim: SimServer
) -> None:
    """A restricted key's permissions can be edited in place: once Coupons is "Read" again, Stripe's next delivery
    is read and published, with no one pressing Test (left to the poller, it waited for a Test; after 30 days it
    was never listed again)."""
    secret = "whsec_" + "n0c0up0ns" * 4
    account, url, _, key, *_ = await connected_with_webhooks(control, sim, secret)
    event = discounted_subscription_event(sim, account)
    granted = sim.state.keys[key].permissions
    sim.state.keys[key].permissions = granted - {"coupons"}
    status, answer = await deliver_signed(control, url, event, secret)
    assert (status, answer["error"]["code"]) == (503, "temporarily_unavailable"), answer
    sim.state.keys[key].permissions = granted
    status, answer = await deliver_signed(control, url, event, secret)
    assert (status, answer) == (200, {"received": True, "published": True})
    [envelope] = [e for e in await published_envelopes(control.settings, 1) if e.event_id == event["id"]]
    assert_discounts_readable(orjson.loads(envelope.payload)["data"]["object"])
