"""The canonical model of the five Stripe objects (schemas/stripe_objects/): each field's rule across API
versions, Stripe's own example objects, and the property that a money field is derived by its rule or the
object is refused — never defaulted."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.stripe_objects import (
    Charge,
    Invoice,
    Subscription,
    UnreadableObjectError,
    read_charge,
    read_invoice,
    read_object,
    read_payment_intent,
    read_subscription,
)
from stripe_sim.objects import template

T = 1_700_000_000


@pytest.mark.parametrize("kind", ["charge", "customer", "invoice", "payment_intent", "subscription"])
def test_stripes_own_example_objects_read(kind: str) -> None:
    """Stripe's example objects (its OpenAPI repository's fixtures, as the simulator carries them)."""
    example = template(kind)
    record = read_object(example)
    assert record.id == example["id"]
    if "currency" in example and example["currency"]:
        assert getattr(record, "currency") == example["currency"]


def charge(**fields: Any) -> dict[str, Any]:
    return {"id": "ch_1", "object": "charge", "created": T, "amount": 1000, "currency": "usd", "status": "succeeded",
            "amount_captured": 1000, "amount_refunded": 0, "captured": True, **fields}


def drop(obj: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in names}


# Charges -------------------------------------------------------------------------------------------

def test_a_charge_without_amount_captured_takes_its_amount_when_captured() -> None:
    """The silent zero: gross revenue came out 0 for charges of versions before amount_captured."""
    assert read_charge(drop(charge(), "amount_captured")).amount_captured == 1000
    assert read_charge(drop(charge(captured=False, status="pending"), "amount_captured")).amount_captured == 0
    with pytest.raises(UnreadableObjectError, match="amount_captured"):
        read_charge(drop(charge(), "amount_captured", "captured"))


def test_legacy_charge_statuses_and_cards() -> None:
    legacy = drop(charge(status="paid", source={"object": "card", "brand": "American Express", "last4": "0005"}),
                  "amount_captured")
    record = read_charge(legacy)
    assert (record.status, record.card_brand, record.card_last4) == ("succeeded", "amex", "0005")
    oldest = drop(charge(paid=False, card={"object": "card", "brand": "Visa", "last4": "4242"}), "status")
    assert (read_charge(oldest).status, read_charge(oldest).card_brand) == ("failed", "visa")


def test_refunds_listed_in_every_shape() -> None:
    refund = {"id": "re_1", "amount": 300, "created": T}
    as_list = drop(charge(refunds={"object": "list", "data": [refund]}), "amount_refunded")
    as_array = drop(charge(refunds=[refund]), "amount_refunded")
    assert read_charge(as_list).amount_refunded == read_charge(as_array).amount_refunded == 300
    assert read_charge(as_list).refunds[0].status == "succeeded"  # before refunds could fail


@pytest.mark.parametrize("bad", [None, "", "US", "usdd", 840, "u$d"])
def test_a_charge_without_a_currency_is_refused(bad: object) -> None:
    with pytest.raises(UnreadableObjectError, match="currency"):
        read_charge(charge(currency=bad))


@pytest.mark.parametrize("bad", [None, "1000", 10.0, True, 10**16])
def test_an_amount_that_is_not_an_integer_is_refused(bad: object) -> None:
    with pytest.raises(UnreadableObjectError, match="amount"):
        read_charge(charge(amount=bad))


NEGATIVE_AMOUNTS: list[tuple[str, Any, str]] = [
    ("charge amount", lambda: read_charge(charge(amount=-1000)), "amount"),
    ("amount captured", lambda: read_charge(charge(amount_captured=-1)), "amount_captured"),
    ("amount refunded", lambda: read_charge(charge(amount_refunded=-500)), "amount_refunded"),
    ("refund", lambda: read_charge(charge(amount_refunded=0, refunds={"object": "list", "has_more": False, "data": [
        {"id": "re_1", "object": "refund", "amount": -500, "currency": "usd", "status": "succeeded", "created": T}]})),
     "amount"),
    ("payment intent", lambda: read_payment_intent({"id": "pi_1", "object": "payment_intent", "created": T,
                                                    "currency": "usd", "amount": 100, "amount_received": -100,
                                                    "status": "succeeded"}), "amount_received"),
    ("amount due", lambda: read_invoice(invoice(amount_due=-5000)), "amount_due"),
    ("unit amount", lambda: read_subscription(priced({"id": "price_1", "object": "price", "currency": "usd",
                                                      "unit_amount": -1000, "recurring": {"interval": "month", "interval_count": 1}})),
     "unit_amount"),
    ("unit amount decimal", lambda: read_subscription(priced({
        "id": "price_1", "object": "price", "currency": "usd", "unit_amount_decimal": "-0.5",
        "recurring": {"interval": "month", "interval_count": 1}})), "unit_amount_decimal"),
]


@pytest.mark.parametrize("name,read,field", NEGATIVE_AMOUNTS, ids=[n for n, _, _ in NEGATIVE_AMOUNTS])
def test_an_amount_stripe_never_makes_negative_is_refused_when_negative(name: str, read: Any, field: str) -> None:
    """A charge, refund, payment, amount due or price is never negative at Stripe (a refund is its own object): a
    negative one (a hostile tenant signs its own webhooks) is refused by name, not summed into revenue or MRR."""
    with pytest.raises(UnreadableObjectError, match=f"{field}.*must not be negative|{field}.*0 or more"):
        read()


def test_an_invoice_total_may_be_negative() -> None:
    """An invoice's total is below zero when credits exceed its lines: Stripe sends it so, and it reads."""
    assert read_invoice(invoice(total=-500, amount_due=0, amount_paid=0)).total == -500


# Subscriptions -----------------------------------------------------------------------------------

def plan(interval: str = "year", amount: int = 120_000, currency: str = "usd") -> dict[str, Any]:
    return {"id": "gold", "object": "plan", "amount": amount, "currency": currency, "interval": interval,
            "interval_count": 1}


def subscription(**fields: Any) -> dict[str, Any]:
    return {"id": "sub_1", "object": "subscription", "customer": "cus_1", "created": T, "status": "active", **fields}


def test_a_legacy_plan_subscription_has_its_plans_currency_and_interval() -> None:
    """The silent "" and 12x: currency sat on the plan, the interval at the top of the plan."""
    record = read_subscription(subscription(plan=plan(), quantity=1))
    assert record.currency == "usd" and record.items[0].interval == "year"
    items = read_subscription(subscription(items={"data": [{"id": "si", "plan": plan("month", 5000, "eur"), "quantity": 2}]}))
    assert items.currency == "eur" and items.items[0].period_amount == 10_000


def test_a_subscription_whose_items_disagree_on_currency_is_refused() -> None:
    two = {"data": [{"plan": plan(currency="usd"), "quantity": 1}, {"plan": plan(currency="eur"), "quantity": 1}]}
    with pytest.raises(UnreadableObjectError, match="items disagree"):
        read_subscription(subscription(items=two))


@pytest.mark.parametrize("broken", [
    {"recurring": {"interval_count": 1}},                      # no interval: never "month"
    {"recurring": {"interval": "fortnight", "interval_count": 1}},
    {"recurring": {"interval": "month", "interval_count": 0}},
    {},                                                         # neither recurring nor a plan's interval
], ids=["no-interval", "unknown-interval", "zero-count", "nothing"])
def test_an_interval_that_cannot_be_derived_is_refused(broken: dict[str, Any]) -> None:
    price = {"id": "price_1", "unit_amount": 1000, "currency": "usd", **broken}
    with pytest.raises(UnreadableObjectError, match="interval"):
        read_subscription(subscription(items={"data": [{"price": price, "quantity": 1}]}))


def test_a_price_not_expanded_or_without_an_amount_is_refused() -> None:
    with pytest.raises(UnreadableObjectError, match="not expanded"):
        read_subscription(subscription(items={"data": [{"price": "price_1", "quantity": 1}]}))
    price = {"id": "price_1", "currency": "usd", "recurring": {"interval": "month", "interval_count": 1}}
    with pytest.raises(UnreadableObjectError, match="unit_amount"):
        read_subscription(subscription(items={"data": [{"price": price, "quantity": 1}]}))


def test_sub_cent_and_tiered_prices() -> None:
    recurring = {"interval": "month", "interval_count": 1}
    decimal = {"id": "p", "currency": "usd", "unit_amount": None, "unit_amount_decimal": "0.5", "recurring": recurring}
    assert read_subscription(subscription(items={"data": [{"price": decimal, "quantity": 3}]})).items[0].period_amount == Fraction(3, 2)
    tiers = [{"up_to": 10, "unit_amount": 100, "flat_amount": 0}, {"up_to": None, "unit_amount": 50, "flat_amount": 0}]
    graduated = {"id": "p", "currency": "usd", "billing_scheme": "tiered", "tiers_mode": "graduated", "tiers": tiers,
                 "recurring": recurring}
    assert read_subscription(subscription(items={"data": [{"price": graduated, "quantity": 15}]})).items[0].period_amount == 1250
    volume = {**graduated, "tiers_mode": "volume"}
    assert read_subscription(subscription(items={"data": [{"price": volume, "quantity": 15}]})).items[0].period_amount == 750
    with pytest.raises(UnreadableObjectError, match="tiers"):
        read_subscription(subscription(items={"data": [{"price": {**graduated, "tiers": None}, "quantity": 1}]}))


def test_the_period_on_the_subscription_or_its_items() -> None:
    price = {"id": "p", "currency": "usd", "unit_amount": 1, "recurring": {"interval": "month", "interval_count": 1}}
    on_items = read_subscription(subscription(items={"data": [
        {"price": price, "quantity": 1, "current_period_start": T, "current_period_end": T + 100},
        {"price": price, "quantity": 1, "current_period_start": T + 10, "current_period_end": T + 200}]}))
    assert (int(on_items.current_period_start.timestamp()), int(on_items.current_period_end.timestamp())) == (T, T + 200)  # type: ignore[union-attr]


# Invoices and payment intents ------------------------------------------------------------------------

def invoice(**fields: Any) -> dict[str, Any]:
    return {"id": "in_1", "object": "invoice", "created": T, "currency": "usd", "total": 5000, "amount_due": 5000,
            "amount_paid": 5000, "amount_remaining": 0, "status": "paid", **fields}


def test_invoice_subscription_in_either_place_and_legacy_fields() -> None:
    assert read_invoice(invoice(subscription="sub_1")).subscription_id == "sub_1"
    basil = invoice(parent={"type": "subscription_details", "subscription_details": {"subscription": "sub_2"}})
    assert read_invoice(basil).subscription_id == "sub_2"
    legacy = drop(invoice(paid=True, date=T), "status", "amount_paid", "amount_remaining", "created")
    record = read_invoice(legacy)
    assert (record.status, record.amount_paid, record.amount_remaining) == ("paid", 5000, 0)
    forgiven = drop(invoice(paid=False, forgiven=True), "status", "amount_paid")
    assert (read_invoice(forgiven).status, read_invoice(forgiven).amount_paid) == ("uncollectible", 0)
    with pytest.raises(UnreadableObjectError, match="amount_paid"):
        read_invoice(drop(invoice(), "amount_paid"))


def test_payment_intent_amount_received_is_required_and_old_statuses_are_renamed() -> None:
    pi = {"id": "pi_1", "object": "payment_intent", "created": T, "currency": "usd", "amount": 1000,
          "amount_received": 1000, "status": "requires_source"}
    assert read_payment_intent(pi).status == "requires_payment_method"
    with pytest.raises(UnreadableObjectError, match="amount_received"):
        read_payment_intent(drop(pi, "amount_received"))


# The property: derived by its rule, or refused -------------------------------------------------------

maybe_int = st.one_of(st.none(), st.integers(-10, 10**9), st.floats(allow_nan=False), st.text(max_size=4),
                      st.booleans())
maybe_currency = st.one_of(st.none(), st.sampled_from(["usd", "EUR", "jpy", "", "us", "dollar"]), st.integers())
ABSENT = object()


def with_fields(base: dict[str, Any], **values: Any) -> dict[str, Any]:
    out = dict(base)
    for name, value in values.items():
        if value is ABSENT:
            out.pop(name, None)
        else:
            out[name] = value
    return out


@settings(max_examples=400)
@given(st.fixed_dictionaries({
    "amount": st.one_of(st.just(ABSENT), maybe_int), "amount_captured": st.one_of(st.just(ABSENT), maybe_int),
    "amount_refunded": st.one_of(st.just(ABSENT), maybe_int), "captured": st.one_of(st.just(ABSENT), st.booleans()),
    "currency": st.one_of(st.just(ABSENT), maybe_currency),
    "status": st.sampled_from(["succeeded", "failed", "pending", "paid", None]),
}))
def test_a_charges_money_is_its_own_or_derived_by_rule_never_defaulted(fields: dict[str, Any]) -> None:
    raw = with_fields(charge(), **fields)
    try:
        record = read_charge(raw)
    except UnreadableObjectError:
        return
    assert isinstance(record, Charge)
    assert record.amount == raw["amount"] and type(raw["amount"]) is int
    assert record.currency == raw["currency"].lower()
    if "amount_captured" in raw and raw["amount_captured"] is None:  # a cancelled authorisation before basil
        assert raw["captured"] is False and record.amount_captured == 0
    elif "amount_captured" in raw:
        assert record.amount_captured == raw["amount_captured"]
    else:  # the only rule: captured and succeeded → the amount, captured false or not succeeded → 0
        assert isinstance(raw["captured"], bool)
        assert record.amount_captured == (raw["amount"] if raw["captured"] and record.status == "succeeded" else 0)
    if "amount_refunded" in raw:  # money returned: none of a charge not captured (its refund released it); of one
        # captured in part, read without the event's version, unreadable above
        assert record.amount_refunded == (raw["amount_refunded"] if record.captured else 0)


@settings(max_examples=300)
@given(st.fixed_dictionaries({
    "currency": st.one_of(st.just(ABSENT), maybe_currency),
    "price_currency": st.one_of(st.just(ABSENT), maybe_currency),
    "interval": st.one_of(st.just(ABSENT), st.sampled_from(["month", "year", "week", "day", "quarter", None])),
    "count": st.one_of(st.just(ABSENT), maybe_int),
    "unit_amount": st.one_of(st.just(ABSENT), maybe_int),
    "quantity": st.one_of(st.just(ABSENT), maybe_int),
}))
def test_a_subscriptions_money_is_its_own_or_derived_by_rule_never_defaulted(fields: dict[str, Any]) -> None:
    recurring = with_fields({}, interval=fields["interval"], interval_count=fields["count"])
    price = with_fields({"id": "price_1"}, currency=fields["price_currency"], unit_amount=fields["unit_amount"],
                        recurring=recurring)
    item = with_fields({"id": "si_1", "price": price}, quantity=fields["quantity"])
    raw = with_fields(subscription(items={"data": [item]}), currency=fields["currency"])
    try:
        record = read_subscription(raw)
    except UnreadableObjectError:
        return
    assert isinstance(record, Subscription)
    given_currencies = {c.lower() for c in (raw.get("currency"), price.get("currency")) if isinstance(c, str)}
    assert record.currency in given_currencies
    [only] = record.items
    assert only.interval == recurring["interval"] and only.interval_count == recurring["interval_count"]
    assert only.period_amount == price["unit_amount"] * item["quantity"]


@settings(max_examples=300)
@given(st.fixed_dictionaries({
    "total": st.one_of(st.just(ABSENT), maybe_int), "amount_due": st.one_of(st.just(ABSENT), maybe_int),
    "amount_paid": st.one_of(st.just(ABSENT), maybe_int), "paid": st.one_of(st.just(ABSENT), st.booleans()),
    "currency": st.one_of(st.just(ABSENT), maybe_currency),
}))
def test_an_invoices_money_is_its_own_or_derived_by_rule_never_defaulted(fields: dict[str, Any]) -> None:
    raw = with_fields(invoice(), **fields)
    try:
        record = read_invoice(raw)
    except UnreadableObjectError:
        return
    assert isinstance(record, Invoice)
    assert (record.total, record.amount_due) == (raw["total"], raw["amount_due"])
    assert record.amount_paid == (raw["amount_paid"] if "amount_paid" in raw else (raw["amount_due"] if raw["paid"] else 0))


def test_a_multi_currency_price_is_billed_at_the_subscriptions_currency_option() -> None:
    price = {"id": "price_1", "currency": "usd", "unit_amount": 1000, "recurring": {"interval": "month", "interval_count": 1},
             "currency_options": {"usd": {"unit_amount": 1000}, "eur": {"unit_amount": 900, "unit_amount_decimal": "900"}}}
    raw = subscription(currency="eur", items={"data": [{"id": "si_1", "price": price, "quantity": 2}]})
    [item] = read_subscription(raw).items
    assert (item.currency, item.period_amount) == ("eur", Fraction(1800))  # not 2 × 1000 USD cents counted as euros

    without_options = {k: v for k, v in price.items() if k != "currency_options"}
    with pytest.raises(UnreadableObjectError, match="currency_options for eur are not included"):
        read_subscription(subscription(currency="eur", items={"data": [{"id": "si_1", "price": without_options,
                                                                         "quantity": 2}]}))


@pytest.mark.parametrize("tier", [{"up_to": "ten", "unit_amount": 5}, {"up_to": None, "unit_amount_decimal": "NaN"},
                                  {"up_to": None, "flat_amount_decimal": "Infinity"}, {"up_to": 0, "unit_amount": 1}])
def test_a_tier_stripe_would_never_send_is_refused(tier: dict[str, Any]) -> None:
    price = {"id": "price_t", "currency": "usd", "billing_scheme": "tiered", "tiers_mode": "graduated",
             "tiers": [tier], "recurring": {"interval": "month", "interval_count": 1}}
    with pytest.raises(UnreadableObjectError, match=r"tiers\[0\]"):
        read_subscription(subscription(items={"data": [{"id": "si_1", "price": price, "quantity": 3}]}))


# Untrusted numbers, quantity transforms, item discounts -----------------------------------------------

def priced(price: dict[str, Any], quantity: int = 1, **item: Any) -> dict[str, Any]:
    """A subscription with one item of `price`, shaped as Stripe's example subscription item."""
    listed = {**template("subscription_item"), "price": price, "quantity": quantity, **item}
    return subscription(currency=price.get("currency", "usd"), items={"data": [listed]})


@pytest.mark.parametrize("text", [
    "1e-1000000000",      # Fraction(Decimal(...)) would build 10**1_000_000_000 first: hours on the event loop
    "1E+1000000000", "1e-100000", "12e3", "0.0000000000001", "1" * 17, "1_000", " 5", "\u0661\u0662", "-" + "9" * 40,
])
def test_a_decimal_amount_not_in_stripes_form_is_refused_before_it_is_converted(text: str) -> None:
    """Stripe writes `*_decimal` amounts as plain digits with at most 12 decimal places; anything else is
    refused by its form, before it becomes a number (so a 30-byte exponent cannot freeze the process)."""
    price = {**template("price"), "unit_amount": None, "unit_amount_decimal": text}
    with pytest.raises(UnreadableObjectError, match="unit_amount_decimal"):
        read_subscription(priced(price))
    tier = {"up_to": None, "unit_amount": None, "unit_amount_decimal": text, "flat_amount": None}
    tiered = {**template("price"), "billing_scheme": "tiered", "tiers_mode": "volume", "tiers": [tier]}
    with pytest.raises(UnreadableObjectError, match=r"tiers\[0\]\.unit_amount_decimal"):
        read_subscription(priced(tiered))


def test_a_decimal_amount_with_twelve_places_reads_exactly() -> None:
    price = {**template("price"), "unit_amount": None, "unit_amount_decimal": "1234.000000000001"}
    assert read_subscription(priced(price, 3)).items[0].period_amount == Fraction(3_702_000_000_000_003, 10**12)


@pytest.mark.parametrize("rounding,billed", [("up", 3_000), ("down", 2_000)])
def test_transform_quantity_divides_the_quantity_and_rounds_before_the_unit_amount(rounding: str, billed: int) -> None:
    """The 10x: 25 seats sold in packs of 10 at $10 a pack were counted as 25 packs."""
    price = {**template("price"), "unit_amount": 1000, "unit_amount_decimal": "1000",
             "transform_quantity": {"divide_by": 10, "round": rounding}}
    [item] = read_subscription(priced(price, 25)).items
    assert (item.quantity, item.period_amount) == (25, Fraction(billed))
    plan = {**template("subscription_item")["plan"], "amount": 1000, "amount_decimal": "1000", "currency": "usd",
            "billing_scheme": "per_unit", "interval_count": 1, "transform_usage": {"divide_by": 10, "round": rounding}}
    legacy = subscription(items={"data": [{"id": "si_1", "plan": plan, "quantity": 25}]})
    assert read_subscription(legacy).items[0].period_amount == billed


@pytest.mark.parametrize("transform", [
    {"divide_by": 0, "round": "up"}, {"divide_by": 10, "round": "nearest"}, {"divide_by": "10", "round": "up"},
    {"divide_by": True, "round": "down"}, {"round": "up"}, {"divide_by": 10}, "10", [10, "up"],
], ids=["zero", "unknown-round", "text", "bool", "no-divide-by", "no-round", "string", "list"])
def test_a_transform_stripe_would_never_send_is_refused(transform: object) -> None:
    price = {**template("price"), "transform_quantity": transform}
    with pytest.raises(UnreadableObjectError, match="transform_quantity"):
        read_subscription(priced(price, 25))


def test_a_transform_with_tiers_is_refused() -> None:
    """Stripe refuses a price with both; which one it applies first is not defined."""
    tiers = [{"up_to": None, "unit_amount": 100, "flat_amount": None}]
    price = {**template("price"), "billing_scheme": "tiered", "tiers_mode": "volume", "tiers": tiers,
             "transform_quantity": {"divide_by": 10, "round": "up"}}
    with pytest.raises(UnreadableObjectError, match="transform_quantity"):
        read_subscription(priced(price, 25))


def item_discount(coupon: dict[str, Any] | None, clover: bool = False) -> dict[str, Any]:
    """An expanded subscription-item discount (Stripe's example discount) carrying `coupon`."""
    base = {**template("discount"), "id": "di_item", "subscription_item": "si_QXhVBoJ7NQdNXh"}
    if clover:
        return {**base, "source": {"type": "coupon", "coupon": coupon}}
    return {**{k: v for k, v in base.items() if k != "source"}, "coupon": coupon}


def test_an_items_discounts_are_its_own() -> None:
    coupon = {**template("coupon"), "duration": "forever", "percent_off": 50}
    for clover in (False, True):
        [item] = read_subscription(priced(template("price"), discounts=[item_discount(coupon, clover)])).items
        assert [(c.duration, c.percent_off) for c in item.coupons] == [("forever", Fraction(50))]
    [by_id] = read_subscription(priced(template("price"), discounts=["di_item"])).items
    assert (by_id.coupons, by_id.unresolved_discounts) == ((), ("di_item",))
    with pytest.raises(UnreadableObjectError, match=r"items.data\[0\].discounts"):
        read_subscription(priced(template("price"), discounts="di_item"))


def test_a_coupons_products_are_read_and_its_absence_is_told_from_every_product() -> None:
    """`applies_to` absent (Stripe includes it only when asked) is unknown; null, or no product listed (stripe-mock's
    answer for a coupon asked for it), is every product."""
    coupon = {**template("coupon"), "duration": "forever", "percent_off": 50}
    read = [read_subscription(priced(template("price"), discounts=[item_discount(c, True)])).items[0].coupons[0]
            for c in (coupon, coupon | {"applies_to": None}, coupon | {"applies_to": {"products": []}},
                      coupon | {"applies_to": {"products": ["prod_a"]}})]
    assert [(c.applies_to_known, c.products) for c in read] == [
        (False, None), (True, None), (True, None), (True, ("prod_a",))]
    [item] = read_subscription(priced(template("price"))).items
    assert item.product_id == template("price")["product"]


@pytest.mark.parametrize("applies_to", [{"products": "prod_a"}, {"products": [7]}, {"products": [""]}, {}, "prod_a"])
def test_a_coupons_products_stripe_would_never_send_are_refused(applies_to: object) -> None:
    coupon = {**template("coupon"), "duration": "forever", "percent_off": 50, "applies_to": applies_to}
    with pytest.raises(UnreadableObjectError, match="applies_to.products"):
        read_subscription(priced(template("price"), discounts=[item_discount(coupon)]))


def test_a_discount_whose_coupon_is_named_by_id_only_is_unresolved_even_when_listed_twice() -> None:
    """An item's discount expanded with its coupon still an id (a coupon Stripe no longer has): it was taken for
    read because the discount itself was an object, and its item counted at full price."""
    by_id = {**template("discount"), "id": "di_x", "source": {"type": "coupon", "coupon": "co_gone"}}
    [item] = read_subscription(priced(template("price"), discounts=[by_id])).items
    assert (item.coupons, item.unresolved_discounts) == ((), ("di_x",))
    embedded = {**template("discount"), "id": "di_y", "source": None,
                "coupon": {**template("coupon"), "duration": "forever", "percent_off": 50}}
    [item] = read_subscription(priced(template("price"), discounts=[embedded, "di_y"])).items
    assert item.unresolved_discounts == () and len(item.coupons) == 1
