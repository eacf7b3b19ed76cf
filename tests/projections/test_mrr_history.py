"""A subscription's MRR history from its update events: the state each event shows, and the state before it
(`previous_attributes`) when that one can be derived — never a guessed one, never the event lost for it."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from projections.handlers.writes import STATE_COLUMNS, writes_for
from projections.projector.store import PostgresProjectionStore
from schemas import Envelope, Source
from stripe_sim.objects import template
from tests.projections.support import bind_tenant

BASIL = "2025-03-31.basil"
START = int(datetime(2025, 4, 10, tzinfo=timezone.utc).timestamp())
UPDATED = int(datetime(2025, 5, 12, tzinfo=timezone.utc).timestamp())
MRR = STATE_COLUMNS["subscriptions"].index("mrr")


def subscription(**fields: Any) -> dict[str, Any]:
    """An active $100/month basil subscription (Stripe's example subscription and item), periods on the item."""
    price = {**template("price"), "unit_amount": 10_000, "unit_amount_decimal": "10000"}
    item = {**template("subscription_item"), "price": price, "quantity": 1, "discounts": [],
            "current_period_start": UPDATED - 2 * 86_400, "current_period_end": UPDATED + 28 * 86_400}
    return {**template("subscription"), "id": "sub_hist", "customer": "cus_hist", "status": "active",
            "created": START, "start_date": START, "trial_end": None, "trial_start": None, "cancel_at": None,
            "cancel_at_period_end": False, "canceled_at": None, "ended_at": None, "discounts": [],
            "items": {"object": "list", "data": [item], "has_more": False}, **fields}


def half_off_forever() -> dict[str, Any]:
    """The discount as the write path fills it in (basil: the coupon embedded in the discount)."""
    coupon = {**template("coupon"), "id": "HALF", "duration": "forever", "percent_off": 50,
              "applies_to": None}
    return {**{k: v for k, v in template("discount").items() if k != "source"}, "id": "di_old",
            "subscription": "sub_hist", "coupon": coupon}


def event(event_id: str, event_type: str, created: int, obj: dict[str, Any], tenant: str = "t",
          previous: dict[str, Any] | None = None) -> Envelope:
    data: dict[str, Any] = {"object": obj} | ({"previous_attributes": previous} if previous is not None else {})
    payload = {"id": event_id, "object": "event", "type": event_type, "created": created, "livemode": False,
               "api_version": BASIL, "data": data}
    return Envelope(tenant, event_id, event_type, "subscription", obj["id"],
                    datetime.fromtimestamp(created, timezone.utc), datetime.now(timezone.utc), Source.WEBHOOK, False,
                    BASIL, None, json.dumps(payload))


def removal(tenant: str = "t") -> Envelope:
    """Basil: the discount removed; `previous_attributes` names it by id, as Stripe sends it."""
    return event("evt_removed", "customer.subscription.updated", UPDATED, subscription(), tenant,
                 previous={"discounts": ["di_old"]})


def test_removing_a_discount_writes_the_new_state_and_no_guessed_state_before() -> None:
    """The lost update: the state before (a discount known by id) was underivable and failed the whole event."""
    writes = writes_for(removal())
    assert writes.states[0].values[MRR] == 10_000
    assert [(v.state_event_id, v.mrr) for v in writes.versions] == [("evt_removed", Decimal(10_000))]


def test_a_state_before_that_can_be_derived_is_still_written() -> None:
    two_seats = {"object": "list", "data": [{**subscription()["items"]["data"][0], "quantity": 2}], "has_more": False}
    writes = writes_for(event("evt_seats", "customer.subscription.updated", UPDATED, subscription(),
                              previous={"items": two_seats}))
    assert [(v.state_event_id, v.mrr) for v in writes.versions] == [("evt_seats", Decimal(10_000)),
                                                                        ("evt_seats:before", Decimal(20_000))]


def test_a_hostile_amount_in_previous_attributes_is_refused_at_once_and_the_update_still_counts() -> None:
    item = {**subscription()["items"]["data"][0]}
    item["price"] = {**item["price"], "unit_amount": None, "unit_amount_decimal": "1e-1000000000"}
    writes = writes_for(event("evt_evil", "customer.subscription.updated", UPDATED, subscription(),
                              previous={"items": {"object": "list", "data": [item]}}))
    assert [(v.state_event_id, v.mrr) for v in writes.versions] == [("evt_evil", Decimal(10_000))]


@pytest.mark.integration
async def test_a_removed_discount_shows_as_expansion_and_the_full_mrr(pool: asyncpg.Pool) -> None:
    tenant = f"hist_{uuid.uuid4().hex[:8]}"
    store = PostgresProjectionStore(pool, "history-test")
    created = event("evt_created", "customer.subscription.created", START,
                    subscription(discounts=[half_off_forever()]), tenant)
    for envelope in (created, removal(tenant)):
        await store.apply([(tenant, envelope.event_id, writes_for(envelope))], {})
    async with pool.acquire() as conn:
        await bind_tenant(conn, tenant)
        mrr = await conn.fetchval("SELECT mrr FROM projection.subscriptions WHERE tenant_id = $1", tenant)
        months = {r["month"]: r for r in await conn.fetch(
            "SELECT * FROM projection.mrr_movements WHERE tenant_id = $1 AND currency = 'usd'", tenant)}
    assert mrr == 10_000
    april, may = months[date(2025, 4, 1)], months[date(2025, 5, 1)]
    assert (april["new_mrr"], april["closing_mrr"]) == (5_000, 5_000)
    assert (may["opening_mrr"], may["expansion_mrr"], may["closing_mrr"]) == (5_000, 5_000, 10_000)
    assert Decimal(months[max(months)]["closing_mrr"]) == 10_000
