"""A tiered price (`billing_scheme: tiered`) bills by its `tiers`, which Stripe includes only when a request asks
(`expand[]=items.data.price.tiers`): no event carries them. The importer lists subscriptions with them, and the
receiver and the poller fill them in before publishing (one retrieve of the subscription, remembered per price),
so a tiered subscription — graduated or volume, in any API version — counts in MRR as the simulator's ground truth
says, and one moved from a flat price to a tiered one no longer keeps its old MRR."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import stripe

from ingestor.envelope.discounts import Expanded, Unexpanded, expanded_in, unexpanded, with_expanded
from ingestor.errors import ObjectMissingError, PermissionMissingError, StripeUnavailableError
from ingestor.stripe_api.discounts import REFUSED_PRICE_FORGOTTEN_S, expansions_for
from schemas.stripe_objects import read_subscription
from service.worker import Worker
from stripe_sim import CURRENT_VERSION, LEGACY_VERSION, SimServer
from stripe_sim.render import render_event
from tests.helpers import discounts_reading_from
from tests.ingestor.conftest import ControlClient, connect, projected_mrr_is_the_ground_truth
from tests.projections.support import bind_tenant, mrr_figures, project_until_idle

DAY = 86400
TIERED_PRICES = 3  # in `tiered_account`: one retrieve each, whatever the number of events naming them
TIERED_SUBSCRIPTIONS = 5  # in `tiered_account`


TIERS = [{"up_to": 5, "unit_amount": 1000, "flat_amount": 0}, {"up_to": None, "unit_amount": 800, "flat_amount": 500}]


def subscription_event(price: dict[str, Any], quantity: int = 7, **obj: Any) -> dict[str, Any]:
    item = {"id": "si_1", "price": price, "plan": {**price, "object": "plan", "interval": "month",
                                                   "interval_count": 1}, "quantity": quantity}
    return {"id": "evt_1", "type": "customer.subscription.updated", "api_version": CURRENT_VERSION,
            "data": {"object": {"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active",
                                "created": 1, "currency": "usd", "items": {"object": "list", "data": [item]},
                                **obj}}}


def tiered(price_id: str = "price_t", **price: Any) -> dict[str, Any]:
    return {"id": price_id, "object": "price", "currency": "usd", "billing_scheme": "tiered",
            "tiers_mode": "graduated", "recurring": {"interval": "month", "interval_count": 1,
                                                     "usage_type": "licensed"}, **price}


def test_a_licensed_tiered_price_without_its_tiers_is_unexpanded() -> None:
    assert unexpanded(subscription_event(tiered())) == Unexpanded((), ("price_t",))
    assert unexpanded(subscription_event(tiered(), discounts=["di_1"])) == Unexpanded(("di_1",), ("price_t",))
    assert not unexpanded(subscription_event(tiered(tiers=TIERS)))
    metered = tiered(recurring={"interval": "month", "interval_count": 1, "usage_type": "metered"})
    assert not unexpanded(subscription_event(metered))  # billed in arrears: no MRR, no tiers needed
    per_unit = {**tiered(), "billing_scheme": "per_unit", "unit_amount": 100}
    assert not unexpanded(subscription_event(per_unit))
    invoice = {"id": "evt_2", "data": {"object": {"object": "invoice", "lines": {"data": [{"price": tiered()}]}}}}
    assert not unexpanded(invoice)


def test_tiers_found_are_laid_into_the_items_and_the_state_before() -> None:
    event = subscription_event(tiered(), quantity=7)
    event["data"]["previous_attributes"] = {"items": {"object": "list", "data": [
        {"id": "si_1", "price": tiered(), "plan": {**tiered(), "object": "plan"}, "quantity": 3}]}}
    found = expanded_in({"items": {"data": [{"price": tiered(tiers=TIERS)}]}, "discounts": ["di_1"]})
    assert found == Expanded({}, {"price_t": TIERS})
    filled = with_expanded(event, found)
    assert event["data"]["object"]["items"]["data"][0]["price"].get("tiers") is None  # the input is left as it was
    item = filled["data"]["object"]["items"]["data"][0]
    assert item["price"]["tiers"] == TIERS and item["plan"]["tiers"] == TIERS
    assert read_subscription(filled["data"]["object"]).items[0].period_amount == 5 * 1000 + 2 * 800 + 500
    before = {**filled["data"]["object"], **filled["data"]["previous_attributes"]}
    assert read_subscription(before).items[0].period_amount == 3 * 1000
    assert with_expanded(event, Expanded({}, {"price_other": TIERS})) == event


def test_the_retrieve_asks_only_for_what_is_wanted() -> None:
    """Tiers alone need no coupon permission: a key without it still gets them."""
    assert expansions_for(Unexpanded((), ("price_t",))) == ["items.data.price.tiers"]
    discounts = ["discounts", "discounts.source.coupon", "discounts.source.coupon.applies_to", "items.data.discounts"]
    assert expansions_for(Unexpanded(("di_1",), ())) == discounts
    assert expansions_for(Unexpanded(("di_1",), ("price_t",))) == [*discounts, "items.data.price.tiers"]


def tiered_account(sim: SimServer, version: str) -> str:
    """An account (its events in `version`) whose subscriptions of the last three weeks are on tiered prices:
    graduated and volume in USD, a yearly graduated one in EUR, one moved from a flat price to a tiered one,
    and one whose seats grew on its tiered price."""
    account = sim.create_account(api_version=version, customers=0).id
    sim.set_rate_limit(account, 1000)
    book = sim.book(account)
    t0 = sim.clock.now() - 20 * DAY
    graduated = book.create_tiered_price(t0, "usd", [(5, 1000, 0), (20, 800, 1000), (None, 500, 0)], "graduated")
    volume = book.create_tiered_price(t0, "usd", [(10, 900, 0), (None, 700, 2000)], "volume")
    yearly = book.create_tiered_price(t0, "eur", [(3, 12000, 0), (None, 6000, 2400)], "graduated", "year")
    flat = book.create_price(t0, "usd", 2500)
    customers = [book.create_customer(t0 + i, f"tiers{i}@example.com")["id"] for i in range(5)]
    book.create_subscription(customers[0], [(graduated, 12)], t0 + DAY)
    book.create_subscription(customers[1], [(volume, 12)], t0 + DAY + 1)
    book.create_subscription(customers[2], [(yearly, 4)], t0 + DAY + 2)
    moved = book.create_subscription(customers[3], [(flat, 3)], t0 + DAY + 3)
    book.change_items(moved["id"], [(volume, 4)], t0 + 5 * DAY)
    grown = book.create_subscription(customers[4], [(graduated, 3)], t0 + 2 * DAY)
    book.change_items(grown["id"], [(graduated, 8)], t0 + 6 * DAY)
    return account


async def mrr_is_the_ground_truth(control: ControlClient, sim: SimServer, account: str, tenant: str) -> None:
    await projected_mrr_is_the_ground_truth(control, sim, account, tenant, {
        "eur": (3 * 12000 + 6000 + 2400) / 12, "usd": 11600 + 10400 + 3600 + (5000 + 3 * 800 + 1000)})


def subscription_retrieves(sim: SimServer, account: str) -> list[str]:
    return [path for path, n in sim.request_counts(account).items() for _ in range(n)
            if path.startswith("GET /v1/subscriptions/")]


@pytest.mark.integration
async def test_the_importer_fills_in_tiers_by_retrieve(
    control: ControlClient, worker: Worker, sim: SimServer, create_topic: Callable[[str, int], Awaitable[None]],
) -> None:
    await create_topic(control.settings.kafka.dead_letter_topic, 1)
    account = tiered_account(sim, CURRENT_VERSION)
    tenant, _, connection_id, _ = await connect(control, sim, account)
    outcome, = await worker.importer.run_pending(among={connection_id})
    assert outcome.state == "done", outcome
    await mrr_is_the_ground_truth(control, sim, account, tenant)
    # Stripe cannot list them (five levels of expansion; the simulator refuses it as Stripe does): one retrieve per
    # price at most, per subscription whose prices were not known yet.
    assert 0 < len(subscription_retrieves(sim, account)) <= TIERED_SUBSCRIPTIONS


@pytest.mark.integration
@pytest.mark.parametrize("version", [LEGACY_VERSION, CURRENT_VERSION])
async def test_the_poller_fills_in_tiers_once_per_price(
    control: ControlClient, worker: Worker, sim: SimServer, create_topic: Callable[[str, int], Awaitable[None]],
    version: str,
) -> None:
    await create_topic(control.settings.kafka.dead_letter_topic, 1)
    account = tiered_account(sim, version)
    tenant, _, connection_id, _ = await connect(control, sim, account)
    outcome = await worker.poller.poll_connection(connection_id)
    assert outcome.state == "polled", outcome
    await mrr_is_the_ground_truth(control, sim, account, tenant)
    assert len(subscription_retrieves(sim, account)) == TIERED_PRICES


@pytest.mark.integration
@pytest.mark.parametrize("version", [LEGACY_VERSION, CURRENT_VERSION])
async def test_the_receiver_fills_in_tiers_once_per_price(
    control: ControlClient, sim: SimServer, create_topic: Callable[[str, int], Awaitable[None]], version: str,
) -> None:
    await create_topic(control.settings.kafka.dead_letter_topic, 1)
    account = tiered_account(sim, version)
    tenant, token, _, _ = await connect(control, sim, account)
    answers = await deliver_every_event(control, sim, account, tenant, token)
    assert [a for a in answers if a[1] != 200] == []
    await mrr_is_the_ground_truth(control, sim, account, tenant)
    assert len(subscription_retrieves(sim, account)) == TIERED_PRICES


async def deliver_every_event(control: ControlClient, sim: SimServer, account: str, tenant: str,
                              token: str) -> list[tuple[str, int, str]]:
    """Sends the account's events to the tenant's webhook URL, newest first (as late deliveries come); returns each
    one's (type, status, body)."""
    secret = "whsec_" + "t1ered" * 6
    status, body = await control.call("PUT", f"/api/tenants/{tenant}/connections/test/webhook-secret", token,
                                      {"secret": secret})
    assert status == 200, body
    url = control.server.make_url(control.url_path(body["connection"]["webhook"]["url"]))
    answers: list[tuple[str, int, str]] = []
    for stored in reversed(sim.state.accounts[account].store(False).all("event")):
        event: dict[str, Any] = render_event(stored)
        payload = orjson.dumps(event).decode()
        headers = {"Content-Type": "application/json",
                   "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(payload, secret,
                                                                                        int(time.time()))}
        async with control.http.post(url, data=payload, headers=headers) as resp:
            answers.append((event["type"], resp.status, await resp.text()))
    return answers


GRADUATED_7 = 5 * 1000 + 2 * 800 + 500  # 7 seats on the graduated price of `moved_account`
VOLUME_12 = 12 * 700 + 2000  # 12 seats on its volume price


def moved_account(sim: SimServer, version: str, started_days_ago: int = 19, moved_days_ago: int = 15,
                  interval: str = "month") -> tuple[str, str]:
    """An account (its events in `version`) whose one subscription moved from a graduated price to a volume one
    (billed each `interval`, renewed until the move): the graduated price is on no subscription any more, so no
    retrieve of one gives its tiers. Returns (account, subscription id)."""
    account = sim.create_account(api_version=version, customers=0).id
    sim.set_rate_limit(account, 1000)
    book = sim.book(account)
    now = sim.clock.now()
    t0 = now - (started_days_ago + 1) * DAY
    graduated = book.create_tiered_price(t0, "usd", [(5, 1000, 0), (None, 800, 500)], "graduated", interval)
    volume = book.create_tiered_price(t0, "usd", [(10, 900, 0), (None, 700, 2000)], "volume", interval)
    customer = book.create_customer(t0, "moved@example.com")["id"]
    moved = book.create_subscription(customer, [(graduated, 7)], t0 + DAY)
    moved_at = now - moved_days_ago * DAY
    while (renewed := book.store.objects["subscription"][moved["id"]])["items"]["data"][0]["current_period_end"] \
            < moved_at:
        book.renew(renewed["id"])
    book.change_items(moved["id"], [(volume, 12)], moved_at)
    return account, moved["id"]


async def mrr_paid(control: ControlClient, tenant: str, subscription_id: str) -> list[float]:
    """The MRR (minor units) the subscription's projected history shows while it pays, oldest first, each change
    once: of the versions at one time, the one that counts (the highest rank)."""
    async with control.pool.acquire() as conn:
        await bind_tenant(conn, tenant)
        rows = await conn.fetch("SELECT DISTINCT ON (state_time) mrr FROM projection.subscription_versions "
                                "WHERE tenant_id = $1 AND subscription_id = $2 ORDER BY state_time, state_rank DESC",
                                tenant, subscription_id)
    return [float(mrr) for mrr, _ in itertools.groupby(r["mrr"] for r in rows) if mrr > 0]


def price_retrieves(sim: SimServer, account: str) -> int:
    return sum(n for path, n in sim.request_counts(account).items() if path.startswith("GET /v1/prices/"))


@pytest.mark.integration
@pytest.mark.parametrize("source", ["poll", "webhooks"])
@pytest.mark.parametrize("version", [LEGACY_VERSION, CURRENT_VERSION])
async def test_an_event_of_a_tiered_price_the_subscription_has_left_counts_at_that_prices_tiers(
    control: ControlClient, worker: Worker, sim: SimServer, create_topic: Callable[[str, int], Awaitable[None]],
    version: str, source: str,
) -> None:
    """The subscription's retrieve gives the tiers of the prices it has now: the event of its time on the earlier
    price was unreadable (dead-lettered; its seven seats missing from every month before the move) until the
    price itself is asked for its tiers."""
    await create_topic(control.settings.kafka.dead_letter_topic, 1)
    account, moved = moved_account(sim, version)
    tenant, token, connection_id, _ = await connect(control, sim, account)
    if source == "poll":
        outcome = await worker.poller.poll_connection(connection_id)
        assert outcome.state == "polled", outcome
    else:
        assert [a for a in await deliver_every_event(control, sim, account, tenant, token) if a[1] != 200] == []
    await projected_mrr_is_the_ground_truth(control, sim, account, tenant, {"usd": VOLUME_12})
    assert await mrr_paid(control, tenant, moved) == [GRADUATED_7, VOLUME_12]
    assert price_retrieves(sim, account) == 1  # the graduated price; the volume one's tiers come with its subscription


@pytest.mark.integration
@pytest.mark.parametrize(("interval", "started_days_ago"), [("month", 59), ("year", 500)])
@pytest.mark.parametrize("version", [LEGACY_VERSION, CURRENT_VERSION])
async def test_an_upgrade_older_than_the_events_window_counts_the_tiered_price_it_left_until_then(
    control: ControlClient, worker: Worker, sim: SimServer, create_topic: Callable[[str, int], Awaitable[None]],
    version: str, interval: str, started_days_ago: int,
) -> None:
    """Its creation is gone from the events API: the update's `previous_attributes` are the only account of the
    price it left. They were not filled in, so the state before was unreadable and left out, and the import's
    snapshot counted the new price back to the start: 3,300 a month too much for fifty days, nothing in health.
    Yearly, renewed before the window: the state before counted from the current period's start only, the
    snapshot's guess (the new price) standing for the year before it."""
    await create_topic(control.settings.kafka.dead_letter_topic, 1)
    account, moved = moved_account(sim, version, started_days_ago, moved_days_ago=10, interval=interval)
    tenant, _, connection_id, _ = await connect(control, sim, account)
    outcome, = await worker.importer.run_pending(among={connection_id})
    assert outcome.state == "done", outcome
    polled = await worker.poller.poll_connection(connection_id)
    assert polled.state == "polled", polled
    per_month = 1 if interval == "month" else 12
    await projected_mrr_is_the_ground_truth(control, sim, account, tenant, {"usd": round(VOLUME_12 / per_month, 2)})
    assert await mrr_paid(control, tenant, moved) == [round(GRADUATED_7 / per_month, 6),
                                                      round(VOLUME_12 / per_month, 6)]
    async with control.pool.acquire() as conn:
        months = await mrr_figures(conn, tenant)
    assert months == {month: mrr for month, mrr in sim.ground_truth(account)["mrr"].items() if mrr}  # every month
    assert price_retrieves(sim, account) == 1


WITHOUT_PRICES = {"customers", "charges", "subscriptions", "invoices", "payment_intents", "events", "coupons"}


@pytest.mark.integration
async def test_without_the_prices_permission_the_months_before_an_upgrade_older_than_the_window_are_named_in_health(
    control: ControlClient, worker: Worker, sim: SimServer, create_topic: Callable[[str, int], Awaitable[None]],
) -> None:
    """The update's `previous_attributes` are the only account of the tiered price it left, and without the key's
    Prices permission its tiers cannot be read: the months before the update show the import's snapshot (the new
    price from the start). That was silent — nothing in health, 3,300 a month too much; the update is now named
    there, and the update itself still counts."""
    await create_topic(control.settings.kafka.dead_letter_topic, 1)
    # Yearly, renewed before the window: the upgrade is its only event there (a renewal on the price it left would
    # be unreadable itself).
    account, moved = moved_account(sim, CURRENT_VERSION, started_days_ago=500, moved_days_ago=10, interval="year")
    tenant, token, connection_id, _ = await connect(control, sim, account, permissions=WITHOUT_PRICES)
    outcome, = await worker.importer.run_pending(among={connection_id})
    assert outcome.state == "done", outcome
    polled = await worker.poller.poll_connection(connection_id)
    assert polled.state == "polled", polled
    await project_until_idle(control.settings, control.pool)
    status, view = await control.call("GET", f"/api/tenants/{tenant}", token)
    assert status == 200, view
    upgrade = next(e["id"] for e in sim.state.accounts[account].test.all("event")  # newest first: the move
                   if e["type"] == "customer.subscription.updated")
    unreadable = view["unreadable_events"]
    assert unreadable["count"] == 1 and [e["event_id"] for e in unreadable["latest"]] == [upgrade], unreadable
    message = unreadable["latest"][0]["message"]
    assert "the state before this update cannot be read" in message and "price.tiers are needed" in message
    assert await mrr_paid(control, tenant, moved) == [round(VOLUME_12 / 12, 6)]  # the update counts


@pytest.mark.integration
@pytest.mark.parametrize("sources", [("poll",), ("webhooks", "poll")])
async def test_without_the_prices_permission_only_those_events_are_unreadable_each_counted_once(
    control: ControlClient, worker: Worker, sim: SimServer, create_topic: Callable[[str, int], Awaitable[None]],
    sources: tuple[str, ...],
) -> None:
    """Prices is an optional permission: a key without it connects, its connection keeps polling (a 403 is no reason
    to stop reading), and the events it would have read (the subscription's two states on the graduated price) are
    counted in health by name, the rest projected (the move itself counts; the state before it is named). Delivered by
    webhook and listed by the poller too, each is still one event in health (the receiver's row and the projector's
    dead letter of the poller's record were two)."""
    await create_topic(control.settings.kafka.dead_letter_topic, 1)
    account, moved = moved_account(sim, CURRENT_VERSION)
    tenant, token, connection_id, _ = await connect(control, sim, account, permissions=WITHOUT_PRICES)
    if "webhooks" in sources:
        answers = await deliver_every_event(control, sim, account, tenant, token)
        assert sorted((t, s) for t, s, body in answers if "unreadable" in body) == [
            ("customer.subscription.created", 200), ("customer.subscription.updated", 200)]
    for _ in range(2):
        outcome = await worker.poller.poll_connection(connection_id)
        assert outcome.state == "polled", outcome
    assert await control.pool.fetchval("SELECT status FROM stripe_connections WHERE connection_id = $1",
                                       connection_id) not in ("permission_missing", "key_invalid")
    await project_until_idle(control.settings, control.pool)
    status, view = await control.call("GET", f"/api/tenants/{tenant}", token)
    assert status == 200, view
    unreadable = view["unreadable_events"]
    assert unreadable["count"] == 3 and sum(unreadable["by_reason"].values()) == 3, unreadable
    named = {e["event_id"]: e["message"] for e in unreadable["latest"]}
    upgrade = next(e["id"] for e in sim.state.accounts[account].test.all("event")  # newest first: the move
                   if e["type"] == "customer.subscription.updated")
    assert "the state before this update cannot be read" in named.pop(upgrade), unreadable  # it counts; before not
    assert len(named) == 2 and all("price.tiers are needed for a tiered price" in m for m in named.values()), named
    # The refused price asked for once by the receiver and once by the poller's cycle, not once per event naming it.
    assert price_retrieves(sim, account) == len(sources)
    assert await mrr_paid(control, tenant, moved) == [VOLUME_12]


async def test_a_price_stripe_refuses_is_not_asked_again_for_each_event_naming_it() -> None:
    """Each delivery naming a tiered price the subscription has left asked Stripe again (the subscription's
    retrieve, then the price) when Stripe refused it: 403 without the key's Prices permission, 404 for a plan
    deleted or an id a tenant's own webhook made up (up to 21 requests an event, from its own budget). Now a 404 is
    believed for good and a 403 for REFUSED_PRICE_FORGOTTEN_S: the permission can be given to the same key."""
    left, gone = tiered("price_left"), tiered("price_gone")

    class Stripe:
        asked: list[str] = []
        forbidden = True

        async def retrieve_raw(self, resource: str, object_id: str, params: dict[str, Any]) -> dict[str, Any]:
            self.asked.append(object_id)
            if object_id == "price_gone":
                raise ObjectMissingError("No such price: 'price_gone'")
            if resource == "prices" and self.forbidden:
                raise PermissionMissingError("The provided key does not have the required permissions", "rak_plan_read")
            if resource == "prices":
                return {**left, "tiers": TIERS}
            return {"id": "sub_1", "object": "subscription", "items": {"data": []}}

        async def close(self) -> None:
            pass

    stripe_api = Stripe()
    now = [0.0]
    discounts = discounts_reading_from(stripe_api, clock=lambda: now[0])
    event = subscription_event(tiered("price_now", tiers=TIERS))
    event["data"]["previous_attributes"] = {"items": {"object": "list", "data": [
        {"id": "si_1", "price": gone, "quantity": 3}, {"id": "si_2", "price": left, "quantity": 1}]}}
    wanted = unexpanded(event)
    assert set(wanted.tiered_prices) == {"price_gone", "price_left"}
    for _ in range(3):  # three deliveries naming them: the subscription's retrieve each (it may be on them now),
        found = await discounts.for_object("conn", False, "subscription", "sub_1", wanted)
        assert found.tiers == {} and found.no_tiers == {"price_gone": "missing", "price_left": "forbidden"}
    assert stripe_api.asked == ["sub_1", "price_gone", "price_left", "sub_1", "sub_1"]  # each price alone once
    stripe_api.forbidden, stripe_api.asked = False, []
    now[0] += REFUSED_PRICE_FORGOTTEN_S + 1  # the Prices permission given to the key meanwhile
    found = await discounts.for_object("conn", False, "subscription", "sub_1", wanted)
    assert found.tiers == {"price_left": TIERS} and stripe_api.asked == ["sub_1", "price_left"]  # not the 404 again
    other = await discounts.for_object("conn_other", False, "subscription", "sub_1", wanted)
    assert other.no_tiers == {"price_gone": "missing"}  # another connection's memory is its own


async def test_a_price_refused_alone_still_comes_with_a_subscription_on_it_now() -> None:
    """A price one subscription left and Stripe refused alone (a plan deleted, which another subscription still
    bills; or no Prices permission) comes with the other subscription's retrieve, which needs neither: remembered as
    refused, it kept that subscription's events without tiers (unreadable, dead-lettered for good)."""
    plan = tiered("price_p")

    class Stripe:
        asked: list[str] = []

        async def retrieve_raw(self, resource: str, object_id: str, params: dict[str, Any]) -> dict[str, Any]:
            self.asked.append(object_id)
            if resource == "prices":
                raise ObjectMissingError("No such price: 'price_p'")
            on_it = object_id == "sub_2"
            return {"id": object_id, "object": "subscription",
                    "items": {"data": [{"price": {**plan, "tiers": TIERS}}] if on_it else []}}

        async def close(self) -> None:
            pass

    stripe_api = Stripe()
    discounts = discounts_reading_from(stripe_api)
    left = subscription_event(tiered("price_now", tiers=TIERS))  # sub_1, which left price_p
    left["data"]["previous_attributes"] = {"items": {"object": "list", "data": [
        {"id": "si_1", "price": plan, "quantity": 3}]}}
    assert (await discounts.for_object("conn", False, "subscription", "sub_1", unexpanded(left))).no_tiers == {
        "price_p": "missing"}
    on_it = subscription_event(plan, id="sub_2")
    found = await discounts.for_object("conn", False, "subscription", "sub_2", unexpanded(on_it))
    assert found.tiers == {"price_p": TIERS} and stripe_api.asked == ["sub_1", "price_p", "sub_2"]
    cycle = Expanded(no_tiers={"price_p": "missing"})  # the poller's (or the import's) memory for its cycle
    assert unexpanded(on_it).beyond(cycle).tiered_prices == ("price_p",)  # still wanted: its retrieve gives it


async def test_a_refusal_is_remembered_even_when_the_receiver_gives_up_waiting() -> None:
    """The slow case the memory is for: a fill-in cut off by the receiver's bound kept the tiers found by then but
    not the refusals, and the next delivery asked again."""
    release = asyncio.Event()

    class Stripe:
        asked: list[str] = []

        async def retrieve_raw(self, resource: str, object_id: str, params: dict[str, Any]) -> dict[str, Any]:
            self.asked.append(object_id)
            if object_id == "price_gone":
                raise ObjectMissingError("No such price: 'price_gone'")
            if object_id == "price_slow":
                await release.wait()  # Stripe (or the budget) slower than the receiver's bound
            return {"id": object_id, "object": "subscription", "items": {"data": []}}

        async def close(self) -> None:
            pass

    stripe_api = Stripe()
    discounts = discounts_reading_from(stripe_api, timeout_s=0.05)
    event = subscription_event(tiered("price_now", tiers=TIERS))
    event["data"]["previous_attributes"] = {"items": {"object": "list", "data": [
        {"id": "si_1", "price": tiered("price_gone"), "quantity": 3},
        {"id": "si_2", "price": tiered("price_slow"), "quantity": 1}]}}
    with pytest.raises(StripeUnavailableError):
        await discounts.for_object("conn", False, "subscription", "sub_1", unexpanded(event))
    stripe_api.asked = []
    with pytest.raises(StripeUnavailableError):
        await discounts.for_object("conn", False, "subscription", "sub_1", unexpanded(event))
    assert "price_gone" not in stripe_api.asked and "price_slow" in stripe_api.asked
    release.set()
