"""Customer-level discounts: how a customer's `discount` renders per API version and is expanded, the events a
change emits, the invoices and MRR of the subscriptions that inherit it, and the generator's `customer_coupons`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
import stripe

from schemas.stripe_objects.previous import laid_over
from stripe_sim import CURRENT_VERSION, LEGACY_VERSION, OLD_VERSION, SimClock, SimServer, ground_truth
from stripe_sim.billing import Book
from stripe_sim.generator import GeneratorConfig, generate
from stripe_sim.model import Obj, SimState, Store
from stripe_sim.render import BASIL_VERSION, render, render_event
from tests.stripe_sim.conftest import NOW

Make = Callable[..., stripe.StripeClient]
DISCOUNT_FIELDS = {"id", "object", "customer", "subscription", "start", "end", "invoice", "invoice_item",
                   "promotion_code", "checkout_session"}


def ts(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp())


def hand_built(api_version: str = OLD_VERSION) -> tuple[Book, Store]:
    """An empty account's book (no server): objects are built with it and read from its store."""
    state = SimState(SimClock(NOW), 1)
    book = Book(state, state.add_account(api_version, seed=1))
    return book, book.store


def customer_with_discount(book: Book, at: int) -> tuple[Obj, Obj, Obj]:
    """A customer given a forever 30% coupon restricted to one product; returns (customer, coupon, price)."""
    price = book.create_price(at, "usd", 2000)
    coupon = book.create_coupon(at, "forever", percent_off=30, products=[price["product"]])
    cus = book.create_customer(at, "ada@example.com", "Ada")
    return book.apply_customer_coupon(cus["id"], coupon["id"], at + 60), coupon, price


@pytest.mark.parametrize("version", [LEGACY_VERSION, OLD_VERSION, BASIL_VERSION, CURRENT_VERSION])
def test_a_customers_discount_renders_as_each_version_shows_a_discount(version: str) -> None:
    """Before clover the coupon is embedded (without `applies_to`); from clover on it is named by id under
    `source.coupon` and there is no `coupon`. A customer without one has `discount: null`."""
    book, _ = hand_built(version)
    cus, coupon, _ = customer_with_discount(book, NOW - 9000)
    shown = render(cus, version)["discount"]
    assert DISCOUNT_FIELDS <= set(shown) and shown["object"] == "discount" and shown["id"].startswith("di_")
    assert (shown["customer"], shown["subscription"], shown["start"], shown["end"]) == (
        cus["id"], None, NOW - 9000 + 60, None)
    if version[:10] < "2025-09-30":
        assert "source" not in shown
        assert shown["coupon"]["id"] == coupon["id"] and shown["coupon"]["percent_off"] == 30
        assert "applies_to" not in shown["coupon"]
    else:
        assert "coupon" not in shown and shown["source"] == {"type": "coupon", "coupon": coupon["id"]}
    plain = book.create_customer(NOW - 100)
    assert render(plain, version)["discount"] is None


async def test_a_customers_discount_coupon_and_its_products_show_only_when_expanded(
        sim: SimServer, make_client: Make) -> None:
    """Retrieve: `discount.source.coupon` gives the coupon (without `applies_to`), `….applies_to` with it; a list
    takes `data.discount.source.coupon`. A deleted coupon stays on the discount that applied it."""
    info = sim.create_account(api_version=OLD_VERSION, customers=0)
    book = sim.book(info.id)
    cus, coupon, price = customer_with_discount(book, NOW - 9000)
    book.delete_coupon(coupon["id"], NOW - 8000)
    client = make_client(info.restricted_key)
    plain = (await client.v1.customers.retrieve_async(cus["id"])).to_dict()
    assert plain["discount"]["source"] == {"type": "coupon", "coupon": coupon["id"]}  # the library's version: clover on
    expanded = (await client.v1.customers.retrieve_async(
        cus["id"], {"expand": ["discount.source.coupon"]})).to_dict()["discount"]["source"]["coupon"]
    assert expanded["id"] == coupon["id"] and "applies_to" not in expanded
    with_products = (await client.v1.customers.retrieve_async(
        cus["id"], {"expand": ["discount.source.coupon.applies_to"]})).to_dict()["discount"]["source"]["coupon"]
    assert with_products["applies_to"] == {"products": [price["product"]]}
    listed = (await client.v1.customers.list_async({"expand": ["data.discount.source.coupon"]})).data[0].to_dict()
    assert listed["discount"]["source"]["coupon"] == expanded
    events = [e.to_dict() for e in (await client.v1.events.list_async({"type": "customer.updated"})).data]
    [updated] = events
    assert updated["data"]["object"]["discount"]["coupon"]["id"] == coupon["id"]  # in the account's version (2024)
    assert "applies_to" not in updated["data"]["object"]["discount"]["coupon"]


@pytest.mark.parametrize("version", [LEGACY_VERSION, CURRENT_VERSION])
def test_each_change_emits_the_discount_events_and_customer_updated_with_the_previous_discount(version: str) -> None:
    """Applying emits `customer.discount.created`, switching `customer.discount.updated`, removing
    `customer.discount.deleted`, each followed by `customer.updated` whose `previous_attributes` is the
    previous discount as the version shows it (or null; of a switched one, what changed, as Stripe diffs a hash);
    the state history keeps every step."""
    book, store = hand_built(version)
    t0 = NOW - 9000
    first, coupon, _ = customer_with_discount(book, t0)
    other = book.create_coupon(t0, "repeating", percent_off=10, duration_in_months=3)
    second = book.apply_customer_coupon(first["id"], other["id"], t0 + 120)
    removed = book.remove_customer_discount(first["id"], t0 + 180)
    assert removed["discount"] is None and second["discount"]["end"] is not None
    events = [render_event(e) for e in reversed(store.all("event"))]
    assert [e["type"] for e in events if e["type"].startswith("customer.")] == [
        "customer.created", "customer.discount.created", "customer.updated", "customer.discount.updated",
        "customer.updated", "customer.discount.deleted", "customer.updated"]
    updates = [e["data"] for e in events if e["type"] == "customer.updated"]
    shown = [render(c, version)["discount"] for c in (first, second)]
    assert [updates[0]["previous_attributes"], updates[2]["previous_attributes"]] == [{"discount": None},
                                                                                      {"discount": shown[1]}]
    switched = updates[1]["previous_attributes"]["discount"]  # what changed of the discount and its coupon only
    assert laid_over({"discount": shown[1]}, {"discount": switched}) == {"discount": shown[0]}
    assert "customer" not in switched and "object" not in switched  # the same on both: not named
    assert [u["object"]["discount"] for u in updates] == [shown[0], shown[1], None]
    if version < "2025":
        assert shown[0]["coupon"]["id"] == coupon["id"] and "applies_to" not in shown[0]["coupon"]
    else:
        assert shown[0]["source"]["coupon"] == coupon["id"] and "coupon" not in shown[0]
    deleted = next(e for e in events if e["type"] == "customer.discount.deleted")["data"]["object"]
    assert deleted == shown[1]
    assert [(store.state_at(first["id"], at) or {})["discount"] for at in (t0 + 60, t0 + 120, t0 + 180)] == [
        first["discount"], second["discount"], None]
    book.delete_coupon(coupon["id"], t0 + 200)
    with pytest.raises(ValueError):  # as Stripe refuses a deleted coupon
        book.apply_customer_coupon(first["id"], coupon["id"], t0 + 240)


def test_an_invoice_gets_the_customers_discount_unless_its_subscription_has_its_own() -> None:
    """20% off the customer: a subscription without discounts pays $16 of $20; one with its own 50% coupon pays $10
    (the customer's ignored); one with an item coupon of $5 off pays ($20 - $5) × 0.8. An invoice before the coupon
    and one after its removal pay in full."""
    book, store = hand_built()
    t0 = ts("2025-03-01")
    price = book.create_price(t0, "usd", 2000)
    fifth, half = book.create_coupon(t0, "forever", percent_off=20), book.create_coupon(t0, "forever", percent_off=50)
    five_off = book.create_coupon(t0, "forever", amount_off=500, currency="usd")
    cus = book.create_customer(t0)["id"]
    before = book.create_subscription(cus, [(price, 1)], t0)
    book.apply_customer_coupon(cus, fifth["id"], t0 + 60)
    plain = book.create_subscription(cus, [(price, 1)], t0 + 120)
    own = book.create_subscription(cus, [(price, 1)], t0 + 120, coupon=half)
    item = book.create_subscription(cus, [(price, 1)], t0 + 120, item_coupons={price["id"]: five_off})

    def paid(sub: Obj) -> int:
        """What the subscription's latest invoice took."""
        latest = store.objects["subscription"][sub["id"]]["latest_invoice"]
        return int(store.objects["invoice"][latest]["amount_paid"])

    discount_id = store.objects["customer"][cus]["discount"]["id"]
    assert [paid(s) for s in (before, plain, own, item)] == [2000, 1600, 1000, 1200]
    inv = store.objects["invoice"][plain["latest_invoice"]]
    assert inv["discounts"] == [discount_id] and inv["total_discount_amounts"] == [
        {"amount": 400, "discount": discount_id}]
    assert paid(book.renew(before["id"])) == paid(book.renew(plain["id"])) == 1600  # April: the coupon came later
    book.remove_customer_discount(cus, ts("2025-04-15"))
    assert paid(book.renew(plain["id"])) == 2000


def test_a_customers_coupon_restricted_to_a_product_reduces_only_its_lines() -> None:
    """30% off Pro only, on the customer: a subscription of Pro ($20) and Basic ($10) pays $24."""
    book, store = hand_built()
    t0 = ts("2025-03-01")
    pro, basic = book.create_price(t0, "usd", 2000), book.create_price(t0, "usd", 1000)
    coupon = book.create_coupon(t0, "forever", percent_off=30, products=[pro["product"]])
    cus = book.create_customer(t0)["id"]
    book.apply_customer_coupon(cus, coupon["id"], t0)
    sub = book.create_subscription(cus, [(pro, 1), (basic, 1)], t0 + 60)
    assert store.objects["invoice"][sub["latest_invoice"]]["amount_paid"] == 2400


def test_mrr_applies_the_customers_forever_coupon_of_its_moment_to_its_products() -> None:
    """30% off Pro on the customer from mid-March to mid-May: a Pro ($20) + Basic ($10) subscription counts 30 in
    February, 24 in March and April, 30 in May (removed); a subscription with its own 10% coupon counts 18 in March
    (the customer's ignored); a once coupon on a customer counts nothing."""
    book, store = hand_built()
    t0 = ts("2025-02-01")
    pro, basic = book.create_price(t0, "usd", 2000), book.create_price(t0, "usd", 1000)
    pro_off = book.create_coupon(t0, "forever", percent_off=30, products=[pro["product"]])
    tenth = book.create_coupon(t0, "forever", percent_off=10)
    once = book.create_coupon(t0, "once", percent_off=50)
    cus, other = book.create_customer(t0)["id"], book.create_customer(t0)["id"]
    book.create_subscription(cus, [(pro, 1), (basic, 1)], t0)
    book.create_subscription(other, [(pro, 1)], t0, coupon=tenth)
    book.apply_customer_coupon(cus, pro_off["id"], ts("2025-03-15"))
    book.apply_customer_coupon(other, pro_off["id"], ts("2025-03-15"))
    book.remove_customer_discount(cus, ts("2025-05-15"))
    book.apply_customer_coupon(cus, once["id"], ts("2025-05-20"))
    mrr = ground_truth(store, ts("2025-05-31"))["mrr"]
    assert [mrr[m]["usd"] for m in ("2025-02", "2025-03", "2025-04", "2025-05")] == [
        3000 + 1800, 2400 + 1800, 2400 + 1800, 3000 + 1800]


def _generated(customer_coupons: bool, seed: int = 5, customers: int = 60) -> Store:
    state = SimState(SimClock(NOW), seed)
    account = state.add_account(OLD_VERSION, seed=seed)
    generate(Book(state, account), GeneratorConfig(customers=customers, customer_coupons=customer_coupons), NOW)
    return account.test


def test_without_customer_coupons_a_generated_account_is_the_one_it_always_was() -> None:
    """The option defaults to off, and off changes nothing: these are the figures seed 5 gave before it existed."""
    store, default = _generated(False), _generated(False)
    gt = ground_truth(store, NOW)
    assert {m: gt["mrr"][m] for m in ("2025-08", "2025-09", "2025-10")} == {
        "2025-08": {"eur": 12306.67, "jpy": 78668.33, "usd": 152295.0},
        "2025-09": {"eur": 12306.67, "jpy": 84186.67, "usd": 125345.0},
        "2025-10": {"eur": 12306.67, "jpy": 87376.67, "usd": 149345.0}}
    assert gt["subscribers"]["2025-10"] == {"active": 53, "new": 2, "churned": 0}
    assert GeneratorConfig().customer_coupons is False
    assert [e["id"] for e in store.all("event")] == [e["id"] for e in default.all("event")]
    assert not any(c.get("discount") for c in store.objects["customer"].values())
    assert not any(e["type"].startswith("customer.discount.") for e in store.all("event"))


def test_with_customer_coupons_some_customers_have_one_for_a_while_and_the_rest_is_drawn_alike() -> None:
    """On: customers get one of two forever coupons (one restricted to products) and some lose it; the same
    customers sign up at the same times as without, and MRR is never more, sometimes less."""
    on, off = _generated(True, seed=2, customers=300), _generated(False, seed=2, customers=300)
    applied = [e["data"]["object"] for e in on.all("event") if e["type"] == "customer.discount.created"]
    removed = [e for e in on.all("event") if e["type"] == "customer.discount.deleted"]
    assert len(applied) > 20 and removed
    assert {d["coupon"]["applies_to"] is None for d in applied} == {True, False}
    assert {d["coupon"]["duration"] for d in applied} == {"forever"}
    assert any(c.get("discount") for c in on.objects["customer"].values())

    def signups(store: Store) -> list[tuple[Any, ...]]:
        return [(c["created"], c["name"]) for c in reversed(store.all("customer"))]

    assert signups(on) == signups(off)
    for cus_id in on.objects["customer"]:  # discount changes made in time order with the rest of the history
        times = [t for t, _ in on.versions[cus_id]]
        assert times == sorted(times) and times[-1] <= NOW
    mrr_on, mrr_off = ground_truth(on, NOW)["mrr"], ground_truth(off, NOW)["mrr"]
    assert mrr_on.keys() == mrr_off.keys()
    pairs = [(mrr_on[m].get(c, 0.0), v) for m in mrr_off for c, v in mrr_off[m].items()]
    assert all(a <= b for a, b in pairs) and any(a < b for a, b in pairs)


def test_the_option_passes_through_the_server_and_is_checked() -> None:
    sim = SimServer(clock=SimClock(NOW))
    info = sim.create_account(customers=80, seed=3, customer_coupons=True)
    events = sim.state.accounts[info.id].test.all("event")
    assert any(e["type"] == "customer.discount.created" for e in events)
    with pytest.raises(ValueError):
        sim.create_account(customers=1, customer_coupons="yes")  # type: ignore[arg-type]
