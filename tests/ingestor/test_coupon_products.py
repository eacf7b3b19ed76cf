"""A coupon may be restricted to some products (`applies_to.products`) and then reduces only their items; Stripe
includes `applies_to` only when a coupon is asked for it (`expand[]=applies_to`), so no event, no subscription and
no list carries it. Every path — importer, poller, receiver — asks each forever coupon for its products (once,
remembered) and lays them in before publishing, so a subscription with a restricted coupon counts in MRR as the
simulator's ground truth says, in any API version. A coupon deleted at Stripe since it was applied cannot be asked:
its products are read from the discount that still applies it; one gone from there too leaves its subscription
published as it came and its MRR refused by name, never reduced on a guess."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import stripe

from ingestor.envelope.discounts import Expanded, Unexpanded, unexpanded, with_expanded
from ingestor.errors import ObjectMissingError
from ingestor.stripe_api.discounts import StripeDiscounts, fetch_expanded
from projections.handlers.mrr import subscription_mrr
from projections.handlers.writes import writes_for
from schemas.stripe_objects import UnreadableObjectError, read_subscription
from service.worker import Worker
from stripe_sim import CURRENT_VERSION, LEGACY_VERSION, SimServer
from stripe_sim.billing import Book
from stripe_sim.render import render_event
from tests.helpers import discounts_reading_from, month_of
from tests.ingestor.conftest import ControlClient, connect, projected_mrr_is_the_ground_truth, published_envelopes
from tests.projections.support import mrr_figures, project_until_idle

DAY = 86400
COUPONS = 3  # in `restricted_account`: one retrieve each at most, whatever the number of events naming them (none
# when the subscription's discounts, retrieved, bring them with their products)
# This month's MRR in `restricted_account`: Pro $20 and Basic $10 with 30% off Pro only; the same with $5 off
# Basic only; two Basic with 30% off Pro only (nothing off); Pro with 10% off everything.
USD_MRR = (1400 + 1000) + (2000 + 500) + 2000 + 1800


def pro_and_basic(sim: SimServer, version: str) -> tuple[Book, int, dict[str, Any], dict[str, Any]]:
    """An account (its events in `version`) with a Pro ($20) and a Basic ($10) monthly price three weeks ago."""
    account = sim.create_account(api_version=version, customers=0).id
    sim.set_rate_limit(account, 1000)
    book = sim.book(account)
    t0 = sim.clock.now() - 20 * DAY
    return book, t0, book.create_price(t0, "usd", 2000, nickname="Pro"), book.create_price(t0, "usd", 1000)


def restricted_account(sim: SimServer, version: str) -> str:
    """An account (its events in `version`) whose subscriptions of the last three weeks carry forever coupons
    restricted to products, and one that is not."""
    book, t0, pro, basic = pro_and_basic(sim, version)
    pro_only = book.create_coupon(t0, "forever", percent_off=30, products=[pro["product"]])
    off_basic = book.create_coupon(t0, "forever", amount_off=500, currency="usd", products=[basic["product"]])
    everything = book.create_coupon(t0, "forever", percent_off=10)
    customers = [book.create_customer(t0 + i, f"coupons{i}@example.com")["id"] for i in range(4)]
    book.create_subscription(customers[0], [(pro, 1), (basic, 1)], t0 + DAY, coupon=pro_only)
    book.create_subscription(customers[1], [(pro, 1), (basic, 1)], t0 + DAY + 1, coupon=off_basic)
    book.create_subscription(customers[2], [(basic, 2)], t0 + DAY + 2, coupon=pro_only)
    book.create_subscription(customers[3], [(pro, 1)], t0 + DAY + 3, coupon=everything)
    return str(book.account.id)


async def mrr_is_the_ground_truth(control: ControlClient, sim: SimServer, account: str, tenant: str,
                                  usd_mrr: float = USD_MRR) -> None:
    await projected_mrr_is_the_ground_truth(control, sim, account, tenant, {"usd": usd_mrr})


def item_discount_account(sim: SimServer) -> str:
    """An account (current version) whose items have their own forever discounts, named by id in every event, their
    coupons by id once expanded: 50% off Basic seats on the item, then 10% off the subscription; and 50% alone."""
    book, t0, pro, basic = pro_and_basic(sim, CURRENT_VERSION)
    half = book.create_coupon(t0, "forever", percent_off=50, products=[basic["product"]])
    tenth = book.create_coupon(t0, "forever", percent_off=10)
    first, second = (book.create_customer(t0 + i, f"items{i}@example.com")["id"] for i in range(2))
    book.create_subscription(first, [(pro, 1), (basic, 2)], t0 + DAY, coupon=tenth, item_coupons={basic["id"]: half})
    book.create_subscription(second, [(basic, 1)], t0 + DAY + 1, item_coupons={basic["id"]: half})
    return str(book.account.id)


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
    found = Expanded(coupons={"co_old": coupon("co_old", applies_to=None),
                              "co_new": coupon("co_new", applies_to=restricted),
                              "co_item": coupon("co_item", applies_to=restricted)})  # co_before: gone from Stripe
    filled = with_expanded(event, found)
    obj = filled["data"]["object"]
    assert obj["discount"]["coupon"]["applies_to"] is None
    assert obj["discounts"][1]["source"]["coupon"]["applies_to"] == restricted
    assert "applies_to" not in obj["discounts"][2]["coupon"]
    assert obj["items"]["data"][0]["discounts"][0]["coupon"]["applies_to"] == restricted
    assert "applies_to" not in filled["data"]["previous_attributes"]["discounts"][0]["coupon"]  # gone: left as sent
    assert unexpanded(filled).coupons == ("co_before",)
    assert unexpanded(event).beyond(found) == Unexpanded(coupons=("co_before",))
    assert "applies_to" not in event["data"]["object"]["discount"]["coupon"]  # the event given is not changed


async def brought_in(path: str, control: ControlClient, worker: Worker, sim: SimServer, account: str) -> str:
    """Connects the account and brings its history in by `path` (import, poll or webhooks); returns the tenant."""
    tenant, token, connection_id, _ = await connect(control, sim, account)
    if path == "import":
        outcome, = await worker.importer.run_pending(among={connection_id})
        assert outcome.state == "done", outcome
    elif path == "poll":
        assert (await worker.poller.poll_connection(connection_id)).state == "polled"
    else:
        assert await deliver_every_event(control, sim, account, tenant, token) == []
    return tenant


@pytest.mark.integration
@pytest.mark.parametrize("path", ["import", "poll", "webhooks"])
@pytest.mark.parametrize("version", [LEGACY_VERSION, CURRENT_VERSION])
async def test_coupons_restricted_to_products_count_on_every_path_asked_once(
    control: ControlClient, worker: Worker, sim: SimServer, create_topic: Callable[[str, int], Awaitable[None]],
    path: str, version: str,
) -> None:
    await create_topic(control.settings.kafka.dead_letter_topic, 1)
    account = restricted_account(sim, version)
    tenant = await brought_in(path, control, worker, sim, account)
    await mrr_is_the_ground_truth(control, sim, account, tenant)
    # Once each: a list cannot ask for their products (five levels); a retrieve of a subscription whose discounts
    # an event names by id brings them (current version); an older version's events embed the coupons.
    assert coupon_retrieves(sim, account) == (0 if path != "import" and version == CURRENT_VERSION else COUPONS)


@pytest.mark.integration
@pytest.mark.parametrize("path", ["import", "poll", "webhooks"])
async def test_an_items_own_discounts_named_by_id_count_on_every_path(
    control: ControlClient, worker: Worker, sim: SimServer, create_topic: Callable[[str, int], Awaitable[None]],
    path: str,
) -> None:
    """Since 2024-04 an item's discounts are ids in every event, and their coupons ids once expanded (five levels
    down): an active subscription with one was refused whole. Now MRR counts them as the ground truth does."""
    await create_topic(control.settings.kafka.dead_letter_topic, 1)
    account = item_discount_account(sim)
    tenant = await brought_in(path, control, worker, sim, account)
    await mrr_is_the_ground_truth(control, sim, account, tenant, usd_mrr=(2000 + 2 * 1000 * 0.5) * 0.9 + 500)
    # The item discounts' coupon, once; the subscription's comes with its products on a retrieve, not on a list.
    assert coupon_retrieves(sim, account) == (2 if path == "import" else 1)


def subscription_retrieves(sim: SimServer, account: str) -> int:
    return sum(n for path, n in sim.request_counts(account).items() if path.startswith("GET /v1/subscriptions/"))


def deleted_coupon_account(sim: SimServer, removed_from_subscription: bool) -> tuple[str, dict[str, Any]]:
    """An account whose subscription has a forever 30% off restricted to its product, the coupon deleted since (and
    with `removed_from_subscription`, the discount removed too); returns the account and the coupon."""
    account = sim.create_account(api_version=LEGACY_VERSION, customers=0).id
    sim.set_rate_limit(account, 1000)
    book = sim.book(account)
    t0 = sim.clock.now() - 2 * DAY
    pro = book.create_price(t0, "usd", 2000)
    gone = book.create_coupon(t0, "forever", percent_off=30, products=[pro["product"]])
    sub = book.create_subscription(book.create_customer(t0)["id"], [(pro, 1)], t0 + 1, coupon=gone)
    book.delete_coupon(gone["id"], t0 + 2)
    if removed_from_subscription:
        book._update("subscription", sub["id"], {"discount": None, "discounts": []}, t0 + 3,
                     "customer.subscription.updated", True)
    return account, gone


@pytest.mark.integration
async def test_a_coupon_deleted_at_stripe_is_read_from_the_discount_that_still_applies_it(
    control: ControlClient, sim: SimServer, create_topic: Callable[[str, int], Awaitable[None]],
) -> None:
    """Stripe answers 404 for a coupon deleted since it was applied, and the discount keeps applying it (deleting a
    coupon stops new redemptions only): its products are read from the subscription's discounts
    (`expand[]=discounts.source.coupon.applies_to`), once, and its MRR counts."""
    await create_topic(control.settings.kafka.dead_letter_topic, 1)
    account, _ = deleted_coupon_account(sim, removed_from_subscription=False)
    tenant, token, _, _ = await connect(control, sim, account)
    assert await deliver_every_event(control, sim, account, tenant, token) == []
    await project_until_idle(control.settings, control.pool)
    truth = sim.ground_truth(account)
    async with control.pool.acquire() as conn:
        refused = await conn.fetch("SELECT reason, message FROM public.dead_lettered_events WHERE tenant_id = $1",
                                   tenant)
        mrr = await mrr_figures(conn, tenant)
    assert [dict(r) for r in refused] == []
    assert mrr[month_of(truth["as_of"])] == truth["mrr"][month_of(truth["as_of"])] == {"usd": 1400}
    assert (coupon_retrieves(sim, account), subscription_retrieves(sim, account)) == (1, 1)


@pytest.mark.integration
async def test_a_coupon_gone_from_stripe_and_its_subscription_is_published_as_it_came_and_its_mrr_refused_by_name(
    control: ControlClient, sim: SimServer,
) -> None:
    """Deleted, and its discount removed since: which products it reduced cannot be read anywhere. The deliveries
    are accepted (a 503 would be retried for days, and a poller cycle would never end), the coupon published without
    `applies_to`, and the projector refuses the active state's MRR naming the coupon — never reducing every item."""
    account, gone = deleted_coupon_account(sim, removed_from_subscription=True)
    tenant, token, _, _ = await connect(control, sim, account)
    assert await deliver_every_event(control, sim, account, tenant, token) == []
    published = [orjson.loads(e.payload)["data"]["object"] for e in await published_envelopes(control.settings, 1)
                 if e.tenant_id == tenant and e.object_type == "subscription"]
    with_coupon = [obj for obj in published if obj.get("discount")]
    assert with_coupon and all("applies_to" not in obj["discount"]["coupon"] for obj in with_coupon)
    active = [e for e in await published_envelopes(control.settings, 1) if e.tenant_id == tenant
              and e.object_type == "subscription" and orjson.loads(e.payload)["data"]["object"]["status"] == "active"
              and orjson.loads(e.payload)["data"]["object"].get("discount")]
    assert active
    for envelope in active:
        with pytest.raises(UnreadableObjectError, match=f"coupon {gone['id']} came without applies_to"):
            writes_for(envelope)


def test_one_connection_naming_coupons_without_end_forgets_its_own_first() -> None:
    """A tenant signs its own webhooks and can name coupons or discounts that do not exist as fast as it likes: what
    the receiver remembers for it is bounded, so the other connections' coupons stay remembered."""
    discounts = StripeDiscounts(store=None, readers=None, max_remembered=10, max_per_connection=4)  # type: ignore[arg-type]
    discounts._remember("conn_b", "coupon", "co_b", coupon("co_b", applies_to=None))
    for i in range(100):
        discounts._remember("conn_a", "coupon", f"co_{i}", coupon(f"co_{i}", applies_to=None))
    assert discounts._remembered("conn_b", Unexpanded(coupons=("co_b",))).coupons == {
        "co_b": coupon("co_b", applies_to=None)}
    assert list(discounts._remembered("conn_a", Unexpanded(coupons=tuple(f"co_{i}" for i in range(100)))).coupons) == [
        f"co_{i}" for i in range(96, 100)]


async def test_an_items_discount_whose_coupon_is_gone_keeps_its_id_and_is_not_remembered() -> None:
    """An item's discount expanded with its coupon an id Stripe answers 404 for: it was laid in as it came and
    remembered, and the reader took the discount for read (its item at full price)."""
    discount = {"id": "di_x", "object": "discount", "source": {"type": "coupon", "coupon": "co_gone"}}
    subscription: dict[str, Any] = {
        "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active", "created": 1,
        "currency": "usd", "discounts": [],
        "items": {"data": [{"id": "si_1", "quantity": 1, "discounts": ["di_x"], "price": {
            "id": "price_1", "product": "prod_1", "currency": "usd", "unit_amount": 10_000,
            "recurring": {"interval": "month", "interval_count": 1}}}]}}

    class Stripe:
        asked: list[str] = []

        async def retrieve_raw(self, resource: str, object_id: str, params: dict[str, Any]) -> dict[str, Any]:
            self.asked.append(resource)
            if resource == "coupons":
                raise ObjectMissingError("No such coupon: 'co_gone'")
            expanded = {**subscription["items"]["data"][0], "discounts": [discount]}
            return {**subscription, "items": {"data": [expanded]}}

    event = {"id": "evt_1", "type": "customer.subscription.updated", "data": {"object": subscription}}
    wanted = unexpanded(event)
    assert wanted.discounts == ("di_x",)
    found = await fetch_expanded(Stripe(), "sub_1", wanted)  # type: ignore[arg-type]
    assert found.discounts == {} and found.coupons == {}
    with pytest.raises(UnreadableObjectError, match="di_x by id only"):
        subscription_mrr(read_subscription(with_expanded(event, found)["data"]["object"]))


async def test_a_discount_whose_coupon_came_without_its_products_is_asked_again_not_remembered() -> None:
    """Stripe once answered a forever coupon without `applies_to`: the receiver remembered the discount as it was,
    and every later delivery naming it was refused by name without Stripe being asked again."""
    forever = {"id": "co_f", "object": "coupon", "duration": "forever", "percent_off": 20}
    subscription: dict[str, Any] = {
        "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active", "created": 1,
        "currency": "usd", "discounts": ["di_1"],
        "items": {"data": [{"id": "si_1", "quantity": 1, "price": {
            "id": "price_1", "product": "prod_1", "currency": "usd", "unit_amount": 10_000,
            "recurring": {"interval": "month", "interval_count": 1}}}]}}

    class Stripe:
        answers_products = False

        async def retrieve_raw(self, resource: str, object_id: str, params: dict[str, Any]) -> dict[str, Any]:
            if resource == "coupons":
                return {**forever, "applies_to": None} if self.answers_products else dict(forever)
            return {**subscription, "discounts": [{"id": "di_1", "object": "discount", "coupon": dict(forever)}]}

        async def close(self) -> None:
            pass

    stripe_api = Stripe()
    discounts = discounts_reading_from(stripe_api)
    event = {"id": "evt_1", "type": "customer.subscription.updated", "data": {"object": subscription}}
    first = await discounts.for_object("conn", False, "subscription", "sub_1", unexpanded(event))
    with pytest.raises(UnreadableObjectError, match="without applies_to"):
        subscription_mrr(read_subscription(with_expanded(event, first)["data"]["object"]))
    stripe_api.answers_products = True
    again = await discounts.for_object("conn", False, "subscription", "sub_1", unexpanded(event))
    assert subscription_mrr(read_subscription(with_expanded(event, again)["data"]["object"])) == 8_000


def customer_discount_account(sim: SimServer, version: str, customer_updated: bool = True) -> str:
    """An account (its events in `version`) whose customers have discounts of their own, which reduce their
    subscriptions without discounts of their own: 30% off Pro given a day after subscribing (Pro and Basic); 10% off
    everything before subscribing (two Basic); 30% off Pro on a customer whose subscription has its own 10% (ignored);
    30% off Pro given and taken away again. Each change comes as a `customer.discount.*` event, and as a
    `customer.updated` too if `customer_updated`."""
    book, t0, pro, basic = pro_and_basic(sim, version)
    pro_only = book.create_coupon(t0, "forever", percent_off=30, products=[pro["product"]])
    everything = book.create_coupon(t0, "forever", percent_off=10)
    customers = [book.create_customer(t0 + i, f"customer{i}@example.com")["id"] for i in range(4)]
    book.create_subscription(customers[0], [(pro, 1), (basic, 1)], t0 + DAY)
    book.apply_customer_coupon(customers[0], pro_only["id"], t0 + 2 * DAY, customer_updated)
    book.apply_customer_coupon(customers[1], everything["id"], t0 + DAY, customer_updated)
    book.create_subscription(customers[1], [(basic, 2)], t0 + 2 * DAY)
    book.create_subscription(customers[2], [(pro, 1)], t0 + DAY, coupon=everything)
    book.apply_customer_coupon(customers[2], pro_only["id"], t0 + 2 * DAY, customer_updated)
    book.create_subscription(customers[3], [(pro, 1)], t0 + DAY)
    book.apply_customer_coupon(customers[3], pro_only["id"], t0 + 2 * DAY, customer_updated)
    book.remove_customer_discount(customers[3], t0 + 4 * DAY, customer_updated)
    return str(book.account.id)


@pytest.mark.integration
@pytest.mark.parametrize("path", ["import", "poll", "webhooks"])
@pytest.mark.parametrize("version", [LEGACY_VERSION, CURRENT_VERSION])
async def test_a_customers_own_discount_counts_on_every_path(
    control: ControlClient, worker: Worker, sim: SimServer, create_topic: Callable[[str, int], Awaitable[None]],
    path: str, version: str,
) -> None:
    """A customer's discount reduces its subscriptions that have none of their own, as Stripe bills them: MRR
    ignored it. Its coupon (by id since clover, products only when asked) is filled in on every path."""
    await create_topic(control.settings.kafka.dead_letter_topic, 1)
    account = customer_discount_account(sim, version)
    tenant = await brought_in(path, control, worker, sim, account)
    await mrr_is_the_ground_truth(control, sim, account, tenant, usd_mrr=(1400 + 1000) + 1800 + 1800 + 2000)


@pytest.mark.integration
@pytest.mark.parametrize("path", ["poll", "webhooks"])
@pytest.mark.parametrize("version", [LEGACY_VERSION, CURRENT_VERSION])
async def test_a_customers_discount_changed_by_its_own_events_only_counts(
    control: ControlClient, worker: Worker, sim: SimServer, create_topic: Callable[[str, int], Awaitable[None]],
    path: str, version: str,
) -> None:
    """Stripe documents `customer.discount.created`, `.updated` and `.deleted` for a customer's discount, not
    whether `customer.updated` comes too: when it does not, the customer's discount was never counted (the poller
    did not ask for these events, the receiver acknowledged them unread). Now each is the customer's discount from
    its time on, its coupon filled in as a customer's is (by id since clover, products only when asked)."""
    await create_topic(control.settings.kafka.dead_letter_topic, 1)
    account = customer_discount_account(sim, version, customer_updated=False)
    tenant = await brought_in(path, control, worker, sim, account)
    await mrr_is_the_ground_truth(control, sim, account, tenant, usd_mrr=(1400 + 1000) + 1800 + 1800 + 2000)
