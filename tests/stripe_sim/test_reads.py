"""Read API through the official stripe library: pagination, filters, windows, versions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import stripe

from stripe_sim import CURRENT_VERSION, AccountInfo, SimServer
from stripe_sim.render import VERSIONS
from tests.stripe_sim.conftest import NOW

Make = Callable[..., stripe.StripeClient]


async def test_auto_paging_iter_over_all_customers(big_account: AccountInfo, make_client: Make,
                                                   sim: SimServer) -> None:
    client = make_client(big_account.restricted_key)
    first = await client.v1.customers.list_async({"limit": 100})
    ids = [c.id async for c in first.auto_paging_iter()]
    store = sim.state.accounts[big_account.id].test
    listed = [c["id"] for c in store.all("customer") if not c.get("deleted")]
    assert ids == listed and len(ids) > 900
    assert len(set(ids)) == len(ids)
    counts = sim.request_counts(big_account.id)
    assert all(n == 1 for path, n in counts.items() if "customers?limit=100" in path)


async def test_newest_first_has_more_and_url(big_account: AccountInfo, make_client: Make) -> None:
    page = await make_client(big_account.restricted_key).v1.charges.list_async()
    assert len(page.data) == 10 and page.has_more and page.url == "/v1/charges"
    created = [c.created for c in page.data]
    assert created == sorted(created, reverse=True)


async def test_events_iterate_over_1000_within_30_days(big_account: AccountInfo,
                                                       make_client: Make) -> None:
    client = make_client(big_account.restricted_key)
    page = await client.v1.events.list_async({"limit": 100})
    events = [e async for e in page.auto_paging_iter()]
    assert len(events) > 1000
    assert min(e.created for e in events) >= NOW - 30 * 86400
    assert len({e.id for e in events}) == len(events)


async def test_created_filters(big_account: AccountInfo, make_client: Make, sim: SimServer) -> None:
    client = make_client(big_account.restricted_key)
    lo, hi = NOW - 90 * 86400, NOW - 60 * 86400
    page = await client.v1.invoices.list_async({"limit": 100, "created": {"gte": lo, "lt": hi}})
    got = [i.id async for i in page.auto_paging_iter()]
    store = sim.state.accounts[big_account.id].test
    want = [i["id"] for i in store.all("invoice") if lo <= i["created"] < hi]
    assert got == want and len(got) > 100
    exact = store.all("invoice")[5]["created"]
    page = await client.v1.invoices.list_async({"created": exact})
    assert page.data and all(i.created == exact for i in page.data)
    page = await client.v1.invoices.list_async({"created": {"gt": NOW}})
    assert page.data == [] and not page.has_more


async def test_ending_before_pages_backwards(big_account: AccountInfo, make_client: Make) -> None:
    client = make_client(big_account.restricted_key)
    first = await client.v1.payment_intents.list_async({"limit": 30})
    anchor = first.data[25].id
    back = await client.v1.payment_intents.list_async({"limit": 10, "ending_before": anchor})
    assert [p.id for p in back.data] == [p.id for p in first.data[15:25]]
    assert back.has_more
    walked = [p.id async for p in (await client.v1.payment_intents.list_async(
        {"limit": 7, "ending_before": anchor})).auto_paging_iter()]
    assert walked == [p.id for p in reversed(first.data[:25])]


async def test_subscriptions_exclude_canceled_unless_all(big_account: AccountInfo,
                                                         make_client: Make,
                                                         sim: SimServer) -> None:
    client = make_client(big_account.restricted_key)
    default = [s async for s in (await client.v1.subscriptions.list_async(
        {"limit": 100})).auto_paging_iter()]
    everything = [s async for s in (await client.v1.subscriptions.list_async(
        {"limit": 100, "status": "all"})).auto_paging_iter()]
    assert all(s.status != "canceled" for s in default)
    assert any(s.status == "canceled" for s in everything)
    store = sim.state.accounts[big_account.id].test
    assert len(everything) == len(store.objects["subscription"])
    canceled = await client.v1.subscriptions.list_async({"status": "canceled", "limit": 5})
    assert all(s.status == "canceled" for s in canceled.data)


async def test_event_types_filter(big_account: AccountInfo, make_client: Make) -> None:
    client = make_client(big_account.restricted_key)
    page = await client.v1.events.list_async({"types": ["charge.refunded", "invoice.voided"],
                                              "limit": 100})
    kinds = {e.type async for e in page.auto_paging_iter()}
    assert kinds <= {"charge.refunded", "invoice.voided"} and "charge.refunded" in kinds
    one = await client.v1.events.list_async({"type": "customer.created", "limit": 3})
    assert {e.type for e in one.data} == {"customer.created"}
    with pytest.raises(stripe.InvalidRequestError) as err:
        await client.v1.events.list_async({"types": [f"t{i}" for i in range(21)]})
    assert err.value.param == "types"


async def test_limit_bounds(big_account: AccountInfo, make_client: Make) -> None:
    client = make_client(big_account.restricted_key)
    for bad in (0, 101):
        with pytest.raises(stripe.InvalidRequestError) as err:
            await client.v1.customers.list_async({"limit": bad})
        assert err.value.param == "limit" and err.value.http_status == 400
    assert len((await client.v1.customers.list_async({"limit": 1})).data) == 1


async def test_deleted_customer_not_listed_and_retrieved_as_stub(big_account: AccountInfo,
                                                                 make_client: Make,
                                                                 sim: SimServer) -> None:
    store = sim.state.accounts[big_account.id].test
    deleted = next(c for c in store.objects["customer"].values() if c.get("deleted"))
    client = make_client(big_account.restricted_key)
    got = await client.v1.customers.retrieve_async(deleted["id"])
    assert got.to_dict() == {"id": deleted["id"], "object": "customer", "deleted": True}
    page = await client.v1.customers.list_async({"limit": 100, "email": deleted["email"]})
    assert deleted["id"] not in [c.id for c in page.data]


async def test_missing_object_is_invalid_request(big_account: AccountInfo,
                                                 make_client: Make) -> None:
    with pytest.raises(stripe.InvalidRequestError) as err:
        await make_client(big_account.restricted_key).v1.charges.retrieve_async("ch_nope")
    assert err.value.http_status == 404 and err.value.code == "resource_missing"


async def test_events_render_in_account_api_version(sim: SimServer, big_account: AccountInfo,
                                                    make_client: Make) -> None:
    new = sim.create_account(api_version=CURRENT_VERSION, customers=30, seed=3)
    for info, basil in ((big_account, False), (new, True)):
        client = make_client(info.secret_key)
        page = await client.v1.events.list_async({"type": "invoice.paid", "limit": 1})
        evt = page.data[0].to_dict()
        inv = evt["data"]["object"]
        sub_page = await client.v1.events.list_async(
            {"type": "customer.subscription.created", "limit": 1})
        sub = sub_page.data[0].to_dict()["data"]["object"]
        assert evt["api_version"] == info.api_version
        if basil:
            assert "subscription" not in inv
            assert inv["parent"]["subscription_details"]["subscription"].startswith("sub_")
            assert "current_period_end" not in sub
            assert sub["items"]["data"][0]["current_period_end"] > 0
        else:
            assert inv["subscription"].startswith("sub_") and "parent" not in inv
            assert sub["current_period_end"] > 0
            assert "current_period_end" not in sub["items"]["data"][0]


async def test_test_and_live_modes_are_apart(sim: SimServer, make_client: Make) -> None:
    info = sim.create_account(customers=5, live_customers=3, seed=5)
    test_ids = {c.id for c in (await make_client(info.secret_key).v1.customers.list_async()).data}
    live = await make_client(info.live_secret_key).v1.customers.list_async()
    assert len(test_ids) == 5 and len(live.data) == 3
    assert all(c.livemode for c in live.data) and not test_ids & {c.id for c in live.data}
    with pytest.raises(stripe.InvalidRequestError):
        await make_client(info.live_secret_key).v1.customers.retrieve_async(test_ids.pop())


async def test_charges_list_expands_refunds_like_stripe(sim: SimServer, make_client: Callable[..., stripe.StripeClient]) -> None:
    info = sim.create_account(customers=0, seed=4711)
    book = sim.book(info.id)
    cus = book.create_customer(at=NOW - 5000)
    charge = book.one_off_payment(cus["id"], 5000, "usd", at=NOW - 4000)
    book.refund(charge["id"], 1500, at=NOW - 3000)
    book.refund(charge["id"], None, at=NOW - 2000)
    client = make_client(sim.secret_key(info.id))
    plain = await client.v1.charges.list_async({"limit": 10})
    assert plain.data[0].refunds.data == []
    page = await client.v1.charges.list_async({"limit": 10, "expand": ["data.refunds"]})
    refunds = page.data[0].refunds.data
    assert [(r.amount, r.created) for r in refunds] == [(3500, NOW - 2000), (1500, NOW - 3000)]


async def test_a_tiered_price_shows_its_tiers_only_when_expanded_like_stripe(sim: SimServer, make_client: Make) -> None:
    """Stripe includes a price's `tiers` only when asked (`expand[]=items.data.price.tiers` on a retrieve): not in
    events, not in a plain list or retrieve, not on invoice lines; and a list cannot ask for them (five levels of
    expansion, Stripe takes four)."""
    info = sim.create_account(customers=0, seed=4712)
    book = sim.book(info.id)
    tiers = [(5, 1000, 0), (None, 800, 500)]
    price = book.create_tiered_price(NOW - 9000, "usd", tiers, "graduated")
    cus = book.create_customer(at=NOW - 8000)
    sub = book.create_subscription(cus["id"], [(price, 7)], NOW - 7000)
    client = make_client(info.restricted_key)

    def item_price(obj: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = obj["items"]["data"][0]["price"]
        assert found["id"] == price["id"] and found["billing_scheme"] == "tiered"
        return found

    listed = (await client.v1.subscriptions.list_async({"limit": 10})).data[0].to_dict()
    retrieved = (await client.v1.subscriptions.retrieve_async(sub["id"])).to_dict()
    events = [e.to_dict() for e in (await client.v1.events.list_async({"limit": 100})).data]
    in_events = [e["data"]["object"] for e in events if e["data"]["object"]["object"] == "subscription"]
    lines = [line for e in events if e["data"]["object"]["object"] == "invoice"
             for line in e["data"]["object"]["lines"]["data"]]
    assert in_events and lines
    assert all("tiers" not in item_price(obj) for obj in (listed, retrieved, *in_events))
    assert all("tiers" not in line["price"] for line in lines)
    with pytest.raises(stripe.InvalidRequestError, match="more than 4 levels"):
        await client.v1.subscriptions.list_async({"limit": 10, "expand": ["data.items.data.price.tiers"]})
    expanded = await client.v1.subscriptions.retrieve_async(sub["id"], {"expand": ["items.data.price.tiers"]})
    assert [(t["up_to"], t["unit_amount"], t["flat_amount"]) for t in item_price(expanded.to_dict())["tiers"]] == tiers
    assert lines[0]["amount"] == 5 * 1000 + 2 * 800 + 500


@pytest.mark.parametrize("version", ["2019-02-19", CURRENT_VERSION])
async def test_a_coupons_products_show_only_when_the_coupon_is_asked_for_them_like_stripe(
        sim: SimServer, make_client: Make, version: str) -> None:
    """Stripe includes a coupon's `applies_to` only when asked (`expand[]=applies_to` on the coupon): not in
    events, not in a subscription's discount (embedded, or expanded under `source.coupon`)."""
    info = sim.create_account(api_version=version, customers=0)
    book = sim.book(info.id)
    price = book.create_price(NOW - 9000, "usd", 2000)
    coupon = book.create_coupon(NOW - 9000, "forever", percent_off=50, products=[price["product"]])
    cus = book.create_customer(at=NOW - 8000)
    sub = book.create_subscription(cus["id"], [(price, 1)], NOW - 7000, coupon=coupon)
    client = make_client(info.restricted_key)
    events = [e.to_dict() for e in (await client.v1.events.list_async({"limit": 100})).data]
    in_events = [e["data"]["object"] for e in events if e["data"]["object"]["object"] == "subscription"]
    retrieved = (await client.v1.subscriptions.retrieve_async(
        sub["id"], {"expand": ["discounts", "discounts.source.coupon"]})).to_dict()
    shown = [obj["discount"]["coupon"] for obj in in_events if version < "2025"] + [
        d["coupon"] if "coupon" in d else d["source"]["coupon"] for d in retrieved["discounts"]]
    assert in_events and shown and all(c["id"] == coupon["id"] and "applies_to" not in c for c in shown)
    plain = (await client.v1.coupons.retrieve_async(coupon["id"])).to_dict()
    asked = (await client.v1.coupons.retrieve_async(coupon["id"], {"expand": ["applies_to"]})).to_dict()
    listed = (await client.v1.coupons.list_async({"expand": ["data.applies_to"]})).data[0].to_dict()
    assert "applies_to" not in plain
    assert asked["applies_to"] == listed["applies_to"] == {"products": [price["product"]]}


@pytest.mark.parametrize("version", ["2022-11-15", "2024-06-20", CURRENT_VERSION])
async def test_an_items_own_discounts_are_ids_unless_expanded_like_stripe(
        sim: SimServer, make_client: Make, version: str) -> None:
    """An item's `discounts` (2024-04 on; before, an item could not have its own) are ids in events and retrieves;
    `expand[]=items.data.discounts` gives them, their coupon under `source.coupon` by id (five levels down)."""
    info = sim.create_account(api_version=version, customers=0)
    book = sim.book(info.id)
    price = book.create_price(NOW - 9000, "usd", 2000)
    coupon = book.create_coupon(NOW - 9000, "forever", percent_off=50)
    sub = book.create_subscription(book.create_customer(at=NOW - 8000)["id"], [(price, 1)], NOW - 7000,
                                   item_coupons={price["id"]: coupon})
    client = make_client(info.restricted_key)
    events = [e.to_dict() for e in (await client.v1.events.list_async({"limit": 100})).data]
    [item] = [e["data"]["object"] for e in events if e["data"]["object"]["object"] == "subscription"][0]["items"]["data"]
    if version < "2024-04-03":
        assert "discounts" not in item
    else:
        assert [d[:3] for d in item["discounts"]] == ["di_"]
    retrieved = (await client.v1.subscriptions.retrieve_async(sub["id"], {"expand": ["items.data.discounts"]})).to_dict()
    [discount] = retrieved["items"]["data"][0]["discounts"]
    assert discount["source"]["coupon"] == coupon["id"]  # the library's version: clover on
    listed = (await client.v1.subscriptions.list_async({"expand": ["data.items.data.discounts"]})).data[0].to_dict()
    assert listed["items"]["data"][0]["discounts"] == [discount]


@pytest.mark.parametrize("version", VERSIONS)
async def test_an_updates_previous_attributes_name_what_changed_as_its_version_shows_it_like_stripe(
        sim: SimServer, make_client: Make, version: str) -> None:
    """Stripe's `previous_attributes` are the top-level fields that changed, as the event's version shows them: a
    renewal names the old period at the top before basil (its items, unchanged there, left out) and on the items
    from basil on; an upgrade before Prices (2020-04-28) names the old `plan` and `quantity` beside the items, and
    before 2019-10-17 the old `start` (when the plan configuration began)."""
    info = sim.create_account(api_version=version, customers=0, seed=4720 + VERSIONS.index(version))
    book = sim.book(info.id)
    cheap, dear = book.create_price(NOW - 60 * 86400, "usd", 1000), book.create_price(NOW - 60 * 86400, "usd", 3000)
    cus = book.create_customer(at=NOW - 45 * 86400)
    sub = book.create_subscription(cus["id"], [(cheap, 1)], NOW - 45 * 86400)
    old_period = (sub["items"]["data"][0]["current_period_start"], sub["items"]["data"][0]["current_period_end"])
    book.renew(sub["id"])
    book.change_items(sub["id"], [(dear, 2)], NOW - 5 * 86400)
    client = make_client(info.restricted_key)
    updates = [e.to_dict()["data"] for e in (await client.v1.events.list_async(
        {"type": "customer.subscription.updated", "limit": 10})).data]
    upgrade, renewal = updates
    basil = version >= "2025-03-31"
    if basil:
        assert list(renewal["previous_attributes"]) == ["items"]
        assert [(it["current_period_start"], it["current_period_end"])
                for it in renewal["previous_attributes"]["items"]["data"]] == [old_period]
    else:
        assert renewal["previous_attributes"] == {"current_period_start": old_period[0],
                                                  "current_period_end": old_period[1]}
        assert renewal["object"]["current_period_start"] == old_period[1]
    before_prices = version < "2020-04-28"
    # (`start`: the current plan configuration's, before 2019-10-17)
    assert sorted(upgrade["previous_attributes"]) == (["items", "plan", "quantity", "start"] if before_prices
                                                      else ["items"])
    (old_item,) = upgrade["previous_attributes"]["items"]["data"]
    assert (old_item["plan"]["amount"], old_item["quantity"]) == (1000, 1)
    assert ("price" in old_item) is not before_prices and ("current_period_end" in old_item) is basil
    if before_prices:
        assert (upgrade["previous_attributes"]["plan"]["amount"], upgrade["previous_attributes"]["quantity"]) == (1000, 1)
    # Before 2019-10-17 no `start_date`: `start` is when the current plan configuration began (the upgrade's time).
    started = {name: upgrade["object"][name] for name in ("start", "start_date") if name in upgrade["object"]}
    assert started == ({"start": NOW - 5 * 86400} if version < "2019-10-17" else {"start_date": sub["start_date"]})
