"""The canonical model on objects drawn from Stripe's own JSON Schemas (the OpenAPI spec stripe-mock
ships, 2026-08-26.dahlia), not from shapes we wrote: every money, currency and interval in a record is the
object's own or derived by the documented rule — or the object is refused with UnreadableObjectError.
Never a default, never another exception (which would crash the receiver or dead-letter for the wrong
reason)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestor.envelope.build import envelope_for_event, is_read_resource
from projections.handlers.writes import writes_for
from schemas import Source
from schemas.stripe_objects import (
    CHARGE_STATUSES,
    Charge,
    Invoice,
    PaymentIntent,
    Subscription,
    UnreadableObjectError,
    read_customer,
    read_object,
)
from tests.stripe_mock.openapi_shapes import objects

pytestmark = pytest.mark.integration  # the spec comes with stripe-mock, built by Go on first use
DRAWS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _read(raw: dict[str, Any]) -> Any:
    try:
        return read_object(raw)
    except UnreadableObjectError as exc:
        assert exc.field and exc.kind, exc  # says what it could not read
        return None


def _currencies(*values: Any) -> set[str]:
    return {v.lower() for v in values if isinstance(v, str)}


@DRAWS
@given(objects("charge"))
def test_a_charge_from_stripes_schema_is_derived_by_rule_or_refused(raw: dict[str, Any]) -> None:
    record = _read(raw)
    if record is None:
        return
    assert isinstance(record, Charge)
    assert record.amount == raw["amount"] and record.currency == raw["currency"].lower()
    assert record.status in CHARGE_STATUSES
    if "amount_captured" in raw and raw["amount_captured"] is None:  # a cancelled authorisation before basil
        assert raw["captured"] is False and record.amount_captured == 0
    elif "amount_captured" in raw:
        assert record.amount_captured == raw["amount_captured"]
    else:
        assert record.amount_captured == (raw["amount"] if raw["captured"] and record.status == "succeeded" else 0)
    # Money returned: none of a charge not captured (a refund of it released the authorisation); one captured in
    # part and refunded, read without its event's API version, is refused above.
    assert record.amount_refunded == (raw["amount_refunded"] if record.captured else 0)
    for refund in record.refunds:
        assert refund.currency == record.currency  # a refund in another currency is refused, not mixed in


def _price_fields(raw: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The currencies and intervals written anywhere a subscription's items can take them from."""
    currencies, intervals = _currencies(raw.get("currency")), set()
    items = raw.get("items") if isinstance(raw.get("items"), dict) else {}
    for item in items.get("data") or []:
        for price in (item.get("price"), item.get("plan")):
            if isinstance(price, dict):
                currencies |= _currencies(price.get("currency"))
                recurring = price.get("recurring") if isinstance(price.get("recurring"), dict) else price
                intervals.add(recurring.get("interval"))
    return currencies, intervals


@DRAWS
@given(objects("subscription"))
def test_a_subscription_from_stripes_schema_is_derived_by_rule_or_refused(raw: dict[str, Any]) -> None:
    record = _read(raw)
    if record is None:
        return
    assert isinstance(record, Subscription)
    currencies, intervals = _price_fields(raw)
    assert record.currency in currencies
    raw_items = raw["items"]["data"] if isinstance(raw.get("items"), dict) else [raw]
    for item, raw_item in zip(record.items, raw_items, strict=True):
        assert item.currency == record.currency and item.interval in intervals and item.interval_count >= 1
        price = raw_item["price"] if isinstance(raw_item.get("price"), dict) else raw_item["plan"]
        if _currencies(price.get("currency")) - {record.currency} and not item.metered:
            # billed in another currency than the price's own: that currency's option gave the amount
            assert isinstance(price["currency_options"].get(record.currency), dict)


@DRAWS
@given(objects("invoice"))
def test_an_invoice_from_stripes_schema_is_derived_by_rule_or_refused(raw: dict[str, Any]) -> None:
    record = _read(raw)
    if record is None:
        return
    assert isinstance(record, Invoice)
    assert (record.total, record.amount_due) == (raw["total"], raw["amount_due"])
    assert record.amount_paid == raw["amount_paid"] and record.currency == raw["currency"].lower()
    assert record.amount_remaining == raw["amount_remaining"]


@DRAWS
@given(objects("payment_intent"))
def test_a_payment_intent_from_stripes_schema_is_derived_by_rule_or_refused(raw: dict[str, Any]) -> None:
    record = _read(raw)
    if record is None:
        return
    assert isinstance(record, PaymentIntent)
    assert record.amount == raw["amount"] and record.amount_received == raw["amount_received"]
    assert record.currency == raw["currency"].lower()


@DRAWS
@given(objects("customer"))
def test_a_customer_from_stripes_schema_is_read_or_refused(raw: dict[str, Any]) -> None:
    try:
        record = read_customer(raw)
    except UnreadableObjectError:
        return
    assert record.currency is None or record.currency == raw["currency"].lower()


@DRAWS
@given(objects("discount"), st.sampled_from(["created", "updated", "deleted"]))
def test_a_discount_event_from_stripes_schema_is_the_customers_discount_or_not_read(raw: dict[str, Any],
                                                                                       change: str) -> None:
    """A `customer.discount.*` event whose object is any discount Stripe's schema allows: read as its customer's
    own discount only when it names a customer and nothing else it would apply to, and then written as one
    customer state (the coupon, unreadable as such, or none once deleted), never another exception."""
    event = {"id": "evt_1", "object": "event", "type": f"customer.discount.{change}", "created": 1_781_500_000,
             "livemode": False, "api_version": "2026-08-26.dahlia", "data": {"object": raw}}
    own = isinstance(raw.get("customer"), str) and raw["customer"] != "" and all(raw.get(name) is None for name in (
        "subscription", "subscription_item", "invoice", "invoice_item", "checkout_session"))
    assert is_read_resource(event) is own
    if not own:
        return
    writes = writes_for(envelope_for_event(event, "t", Source.WEBHOOK, datetime.now(timezone.utc)))
    assert not writes.states and [row.customer_id for row in writes.customer_discounts] == [raw["customer"]]
    assert (writes.customer_discounts[0].coupon is None) is (change == "deleted" or raw.get("source") is None
                                                             and raw.get("coupon") is None)