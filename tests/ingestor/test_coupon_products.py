"""A coupon may be restricted to some products (`applies_to.products`) and then reduces only their items; Stripe
includes `applies_to` only when a coupon is asked for it (`expand[]=applies_to`), so no event, no subscription and
no list carries it. Every path — importer, poller, receiver — asks each forever coupon for its products (once,
remembered) and lays them in before publishing, so a subscription with a restricted coupon counts in MRR as the
simulator's ground truth says, in any API version. A coupon deleted at Stripe since it was applied cannot be asked:
its subscription is published as it came and its MRR refused by name, never reduced on a guess."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import stripe

from ingestor.envelope.coupons import COUPON_GONE
from ingestor.envelope.discounts import Expanded, Unexpanded, unexpanded, with_expanded
from projections.handlers.writes import writes_for
from schemas.stripe_objects import UnreadableObjectError, read_subscription
from service.worker import Worker
from stripe_sim import CURRENT_VERSION, LEGACY_VERSION, SimServer
from stripe_sim.render import render_event
from tests.helpers import month_of
from tests.ingestor.conftest import ControlClient, connect, published_envelopes
from tests.projections.support import mrr_figures, project_until_idle

DAY = 86400
COUPONS = 3  # in `restricted_account`: one retrieve each at most, whatever the number of events naming them
# This month's MRR in `restricted_account`: Pro $20 and Basic $10 with 30% off Pro only; the same with $5 off
# Basic only; two Basic with 30% off Pro only (nothing off); Pro with 10% off everything.
USD_MRR = (1400 + 1000) + (2000 + 500) + 2000 + 1800


def restricted_account(sim: SimServer, version: str) -> str:
    """An account (its events in `version`) whose subscriptions of the last three weeks carry forever coupons
    restricted to products, and one that is not."""
    account = sim.create_account(api_version=version, customers=0).id
    sim.set_rate_limit(account, 1000)
    book = sim.book(account)
    t0 = sim.clock.now() - 20 * DAY
    pro, basic = book.create_price(t0, "usd", 2000, nickname="Pro"), book.create_price(t0, "usd", 1000)
    pro_only = book.create_coupon(t0, "forever", percent_off=30, products=[pro["product"]])
    off_basic = book.create_coupon(t0, "forever", amount_off=500, currency="usd", products=[basic["product"]])
    everything = book.create_coupon(t0, "forever", percent_off=10)
    customers = [book.create_customer(t0 + i, f"coupons{i}@example.com")["id"] for i in range(4)]
    book.create_subscription(customers[0], [(pro, 1), (basic, 1)], t0 + DAY, coupon=pro_only)
    book.create_subscription(customers[1], [(pro, 1), (basic, 1)], t0 + DAY + 1, coupon=off_basic)
    book.create_subscription(customers[2], [(basic, 2)], t0 + DAY + 2, coupon=pro_only)
    book.create_subscription(customers[3], [(pro, 1)], t0 + DAY + 3, coupon=everything)
    return account


async def mrr_is_the_ground_truth(control: ControlClient, sim: SimServer, account: str, tenant: str) -> None:
    """Projects what was published: nothing refused, and this month's MRR is the simulator's."""
    await project_until_idle(control.settings, control.pool)
    truth = sim.ground_truth(account)
    this_month = month_of(truth["as_of"])
    assert truth["mrr"][this_month] == {"usd": USD_MRR}  # what the test is about
    async with control.pool.acquire() as conn:
        refused = await conn.fetch("SELECT reason, message FROM public.dead_lettered_events WHERE tenant_id = $1",
                                   tenant)
        mrr = await mrr_figures(conn, tenant)
    assert [dict(r) for r in refused] == []
    assert mrr.get(this_month) == truth["mrr"][this_month]


def coupon_retrieves(sim: SimServer, account: str) -> int:
    return sum(n for path, n in sim.request_counts(account).items() if path.startswith("GET /v1/coupons/"))


async def deliver_every_event(control: ControlClient, sim: SimServer, account: str, tenant: str,
                              token: str) -> list[tuple[str, int, str]]:
    """Delivers every event of the account, oldest first, signed, to the connection's webhook URL; returns the
    answers that were not 200."""
    secret = "whsec_" + "c0up0ns" * 5
    status, body = await control.call("PUT", f"/api/tenants/{tenant}/connections/test/webhook-secret", token,
                                      {"secret": secret})
    assert status == 200, body
    url = control.server.make_url(control.url_path(body["connection"]["webhook"]["url"]))
    refused = []
    for stored in reversed(sim.state.accounts[account].store(False).all("event")):
        payload = orjson.dumps(render_event(stored)).decode()
        headers = {"Content-Type": "application/json",
                   "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(payload, secret,
                                                                                        int(time.time()))}
        async with control.http.post(url, data=payload, headers=headers) as resp:
            if resp.status != 200:
                refused.append((stored["type"], resp.status, await resp.text()))
    return refused


def coupon(coupon_id: str, duration: str = "forever", **fields: Any) -> dict[str, Any]:
    return {"id": coupon_id, "object": "coupon", "duration": duration, "percent_off": 30, **fields}


def test_every_forever_coupon_without_products_is_found_and_given_them_in_every_shape() -> None:
    """The coupon embedded in `discount` (until basil), in `discounts[]` (expanded; under `source` since clover),
    in an item's discounts, and in `previous_attributes`; once and repeating coupons are not asked (no MRR)."""
    event: dict[str, Any] = {"id": "evt_1", "type": "customer.subscription.updated", "data": {
        "object": {"id": "sub_1", "object": "subscription",
                   "discount": {"id": "di_0", "coupon": coupon("co_old")},
                   "discounts": ["di_0", {"id": "di_1", "source": {"type": "coupon", "coupon": coupon("co_new")}},
                                 {"id": "di_2", "coupon": coupon("co_once", "once")}],
                   "items": {"data": [{"id": "si_1", "discounts": [{"id": "di_3", "coupon": coupon("co_item")}]}]}},
        "previous_attributes": {"discounts": [{"id": "di_4", "coupon": coupon("co_before")}]}}}
    assert unexpanded(event).coupons == ("co_old", "co_new", "co_item", "co_before")
    restricted = {"products": ["prod_a"]}
    found = Expanded(applies_to={"co_old": None, "co_new": restricted, "co_item": restricted,
                                 "co_before": COUPON_GONE})
    filled = with_expanded(event, found)
    obj = filled["data"]["object"]
    assert obj["discount"]["coupon"]["applies_to"] is None
    assert obj["discounts"][1]["source"]["coupon"]["applies_to"] == restricted
    assert "applies_to" not in obj["discounts"][2]["coupon"]
    assert obj["items"]["data"][0]["discounts"][0]["coupon"]["applies_to"] == restricted
    assert "applies_to" not in filled["data"]["previous_attributes"]["discounts"][0]["coupon"]  # gone: left as sent
    assert unexpanded(filled).coupons == ("co_before",)
    assert unexpanded(event).beyond(found) == Unexpanded()
    assert "applies_to" not in event["data"]["object"]["discount"]["coupon"]  # the event given is not changed


@pytest.mark.integration
async def test_the_importer_asks_each_coupon_for_its_products_once(
    control: ControlClient, worker: Worker, sim: SimServer, create_topic: Callable[[str, int], Awaitable[None]],
) -> None:
    await create_topic(control.settings.kafka.dead_letter_topic, 1)
    account = restricted_account(sim, CURRENT_VERSION)
    tenant, _, connection_id, _ = await connect(control, sim, account)
    outcome, = await worker.importer.run_pending(among={connection_id})
    assert outcome.state == "done", outcome
    await mrr_is_the_ground_truth(control, sim, account, tenant)
    assert coupon_retrieves(sim, account) == COUPONS


@pytest.mark.integration
@pytest.mark.parametrize("version", [LEGACY_VERSION, CURRENT_VERSION])
async def test_the_poller_asks_each_coupon_for_its_products_once(
    control: ControlClient, worker: Worker, sim: SimServer, create_topic: Callable[[str, int], Awaitable[None]],
    version: str,
) -> None:
    await create_topic(control.settings.kafka.dead_letter_topic, 1)
    account = restricted_account(sim, version)
    tenant, _, connection_id, _ = await connect(control, sim, account)
    outcome = await worker.poller.poll_connection(connection_id)
    assert outcome.state == "polled", outcome
    await mrr_is_the_ground_truth(control, sim, account, tenant)
    assert coupon_retrieves(sim, account) == COUPONS


@pytest.mark.integration
@pytest.mark.parametrize("version", [LEGACY_VERSION, CURRENT_VERSION])
async def test_the_receiver_asks_each_coupon_for_its_products_once(
    control: ControlClient, sim: SimServer, create_topic: Callable[[str, int], Awaitable[None]], version: str,
) -> None:
    await create_topic(control.settings.kafka.dead_letter_topic, 1)
    account = restricted_account(sim, version)
    tenant, token, _, _ = await connect(control, sim, account)
    assert await deliver_every_event(control, sim, account, tenant, token) == []
    await mrr_is_the_ground_truth(control, sim, account, tenant)
    assert coupon_retrieves(sim, account) == COUPONS


@pytest.mark.integration
async def test_a_coupon_deleted_at_stripe_is_published_as_it_came_and_its_mrr_refused_by_name(
    control: ControlClient, sim: SimServer,
) -> None:
    """Stripe answers 404 for a coupon deleted since it was applied: its products cannot be known. The delivery is
    accepted (a 503 would be retried for days, and a poller cycle would never end), the coupon published without
    `applies_to`, and the projector refuses the subscription's MRR naming the coupon — never reducing every item."""
    account = sim.create_account(api_version=LEGACY_VERSION, customers=0).id
    sim.set_rate_limit(account, 1000)
    book = sim.book(account)
    t0 = sim.clock.now() - 2 * DAY
    pro = book.create_price(t0, "usd", 2000)
    gone = book.create_coupon(t0, "forever", percent_off=30, products=[pro["product"]])
    sub = book.create_subscription(book.create_customer(t0)["id"], [(pro, 1)], t0 + 1, coupon=gone)
    book.delete_coupon(gone["id"], t0 + 2)
    tenant, token, _, _ = await connect(control, sim, account)
    assert await deliver_every_event(control, sim, account, tenant, token) == []
    published = [e for e in await published_envelopes(control.settings, 1)
                 if e.tenant_id == tenant and e.object_id == sub["id"]]
    assert published and coupon_retrieves(sim, account) == 1  # 404 remembered: not asked again
    for envelope in published:
        obj = orjson.loads(envelope.payload)["data"]["object"]
        assert "applies_to" not in obj["discount"]["coupon"]
        if obj["status"] == "active":
            with pytest.raises(UnreadableObjectError, match=f"coupon {gone['id']} came without applies_to"):
                writes_for(envelope)
    assert any(read_subscription(orjson.loads(e.payload)["data"]["object"]).status == "active" for e in published)
