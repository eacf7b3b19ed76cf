"""Against Stripe's own mock server (stripe-mock v0.203.0: Stripe's OpenAPI spec and fixtures of
2026-08-26.dahlia), not our simulator: the key Test's verdicts, the importer's requests (stripe-mock
refuses any parameter Stripe's spec does not have) and every object it returns, through the canonical
model and the projection into Postgres."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone

import asyncpg
import orjson
import pytest

from ingestor.connections.key_formats import classify_key
from ingestor.connections.key_test import test_key as run_key_test
from ingestor.connections.store import PostgresConnectionStore
from ingestor.connections.tenant_store import PostgresTenantStore
from ingestor.connections.vault import MasterKeyring, generate_master_key
from ingestor.envelope.coupons import coupons_laid_in
from ingestor.envelope.discounts import Unexpanded
from ingestor.envelope.snapshots import snapshot_envelope
from ingestor.stripe_api.catalog import IMPORTED, TESTED
from ingestor.stripe_api.discounts import _coupons_on_customer, _tiers_of_prices, fetch_expanded
from ingestor.stripe_api.readers import StripeReaders
from plumbing.settings import Settings, StripeSettings
from projections.handlers.writes import writes_for
from projections.projector.store import PostgresProjectionStore
from schemas.stripe_objects import (
    Charge,
    Invoice,
    PaymentIntent,
    Subscription,
    read_customer,
    read_object,
    read_subscription,
)
from service.worker import open_worker
from stack import STATE_DIR, stripe_mock
from tests.ingestor.conftest import published_envelopes

pytestmark = pytest.mark.integration
KEY = "rk_test_51StripeMockKeyForTheTests0001"  # stripe-mock accepts any rk_test_ key


@pytest.fixture(scope="module")
def mock() -> Iterator[stripe_mock.StripeMock]:
    server = stripe_mock.start(STATE_DIR / "logs" / "stripe-mock.log")
    yield server
    server.stop()


@pytest.fixture
async def pool(clean_database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(clean_database, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def readers(mock: stripe_mock.StripeMock) -> StripeReaders:
    return StripeReaders(StripeSettings(api_base=mock.base_url, retry_attempts=1))


async def test_the_key_test_reads_every_resource_and_says_green(readers: StripeReaders) -> None:
    reader = readers.reader(KEY, "key:mock", livemode=False, quick=True)
    try:
        result = await run_key_test(classify_key(KEY), reader)
    finally:
        await reader.close()
    assert {v.resource: v.verdict for v in result.verdicts} == {r.name: "ok" for r in TESTED}
    assert result.to_json()["outcome"] == "green"


async def test_every_object_stripe_returns_reads_through_the_canonical_model_and_projects(
    readers: StripeReaders, pool: asyncpg.Pool,
) -> None:
    reader = readers.reader(KEY, "key:mock", livemode=False)
    store = PostgresProjectionStore(pool, "stripe-mock-test")
    asked_at = datetime.now(timezone.utc)
    read = {}
    try:
        for resource in IMPORTED:
            # The importer's own request: stripe-mock answers 400 to any parameter Stripe's spec lacks.
            page = await reader.list_raw_page(resource.name, {"limit": 100, "created": {"gte": 0}, **resource.list_params})
            assert page.objects, resource.name
            for obj in page.objects:
                record = read_object(obj)
                read[obj["object"]] = (obj, record)
                envelope = snapshot_envelope(obj, "tenant_stripe_mock", False, "2026-08-26.dahlia", asked_at)
                await store.apply([(envelope.tenant_id, envelope.event_id, writes_for(envelope))], {})
    finally:
        await reader.close()
    charge_raw, charge = read["charge"]
    assert isinstance(charge, Charge)
    assert (charge.amount, charge.amount_captured, charge.currency) == (charge_raw["amount"], charge_raw["amount_captured"],
                                                                       charge_raw["currency"])
    invoice_raw, invoice = read["invoice"]
    assert isinstance(invoice, Invoice)
    assert (invoice.total, invoice.amount_paid, invoice.currency) == (invoice_raw["total"], invoice_raw["amount_paid"],
                                                                      invoice_raw["currency"])
    assert invoice.subscription_id == invoice_raw["parent"]["subscription_details"]["subscription"]  # dahlia's place
    _, subscription = read["subscription"]
    assert isinstance(subscription, Subscription) and subscription.items
    assert all(item.interval in ("day", "week", "month", "year") for item in subscription.items)
    pi_raw, payment_intent = read["payment_intent"]
    assert isinstance(payment_intent, PaymentIntent) and payment_intent.amount_received == pi_raw["amount_received"]
    for table in ("customers", "charges", "subscriptions", "invoices", "payment_intents"):
        assert await pool.fetchval(f"SELECT count(*) FROM projection.{table} WHERE tenant_id = 'tenant_stripe_mock'") >= 1


@pytest.fixture
async def mock_settings(make_settings: object, mock: stripe_mock.StripeMock, create_topic: object) -> AsyncIterator[Settings]:
    settings: Settings = make_settings()  # type: ignore[operator]
    settings = settings.model_copy(update={"stripe": StripeSettings(api_base=mock.base_url, retry_attempts=1)})
    await create_topic(settings.kafka.raw_topic, 1)  # type: ignore[operator]
    yield settings


async def test_the_importer_pages_through_stripe_mock_to_the_end(mock_settings: Settings, pool: asyncpg.Pool) -> None:
    keyring = MasterKeyring.from_setting(generate_master_key("mock"))
    tenants = PostgresTenantStore(pool, keyring, mock_settings.reader)
    tenant_id, _ = await tenants.create_tenant("Stripe-mock Co")
    connections = PostgresConnectionStore(pool, keyring)
    connection_id, _ = await connections.create_connection(tenant_id, False)
    await connections.store_key(connection_id, KEY, "rk_test_…mock", datetime.now(timezone.utc))
    async with open_worker(mock_settings, keyring) as worker:
        now = int(time.time())
        await worker.checkpoints.start_import(connection_id, [r.name for r in IMPORTED], now - 365 * 86400, now, "test")
        outcome = await worker.importer.run_connection(connection_id)
    assert outcome.state == "done", outcome
    envelopes = await published_envelopes(mock_settings, len(IMPORTED))
    # stripe-mock ignores `created` filters, so every time slice gets the one example object of its resource.
    ids_by_type: dict[str, set[str]] = {}
    for envelope in envelopes:
        ids_by_type.setdefault(envelope.object_type, set()).add(envelope.object_id)
    assert sorted(ids_by_type) == sorted(r.object_type for r in IMPORTED)
    assert all(len(ids) == 1 for ids in ids_by_type.values()), ids_by_type
    for envelope in envelopes:
        assert writes_for(envelope).states, orjson.loads(envelope.payload)["data"]["object"]["object"]


async def test_the_write_paths_fill_in_requests_are_stripes_and_its_coupon_products_read(readers: StripeReaders) -> None:
    """The retrieve of a subscription with its discounts, coupons and tiers expanded, and of a coupon with its
    products (`expand[]=applies_to`), as stripe-mock validates them against Stripe's spec; the products come only
    when asked, and a coupon listing none reduces every product."""
    reader = readers.reader(KEY, "key:mock", livemode=False, quick=True)
    try:
        coupon_id = (await reader.list_raw_page("coupons", {"limit": 1})).objects[0]["id"]
        plain = await reader.retrieve_raw("coupons", coupon_id, {})
        found = await fetch_expanded(reader, "sub_mock", Unexpanded(("di_mock",), ("price_mock",), (coupon_id,)))
    finally:
        await reader.close()
    assert "applies_to" not in plain
    assert list(found.coupons) == [coupon_id] and found.coupons[coupon_id]["applies_to"] == {"products": []}
    coupon = {**plain, "duration": "forever", "applies_to": found.coupons[coupon_id]["applies_to"]}
    sub = read_subscription({"id": "sub_mock", "object": "subscription", "customer": "cus_mock", "status": "active",
                             "created": 1, "currency": "usd", "discounts": [{"id": "di_mock", "coupon": coupon}],
                             "items": {"data": [{"price": {"id": "price_mock", "product": "prod_mock",
                                                           "currency": "usd", "unit_amount": 1000,
                                                           "recurring": {"interval": "month", "interval_count": 1}},
                                                 "quantity": 1}]}})
    assert [(c.applies_to_known, c.products) for c in sub.coupons] == [(True, None)]


async def test_a_customers_discount_is_filled_in_with_requests_stripe_takes(readers: StripeReaders) -> None:
    """A customer's discount reduces its subscriptions without their own: its coupon (by id since clover) is asked
    with its products, and one deleted since is read from the customer (`expand[]=discount.source.coupon.applies_to`,
    four levels): stripe-mock validates both requests against Stripe's spec."""
    reader = readers.reader(KEY, "key:mock", livemode=False, quick=True)
    try:
        listed = (await reader.list_raw_page("customers", {"limit": 1})).objects[0]
        coupon_id = (await reader.list_raw_page("coupons", {"limit": 1})).objects[0]["id"]
        found = await fetch_expanded(reader, listed["id"], Unexpanded(coupons=(coupon_id,)), object_type="customer")
        from_customer = await _coupons_on_customer(reader, listed["id"], [coupon_id])
    finally:
        await reader.close()
    assert "discount" in listed  # every customer says whether it has one
    assert found.coupons[coupon_id]["applies_to"] == {"products": []} and not found.discounts
    assert from_customer[coupon_id]["applies_to"] == {"products": []}
    laid_in = coupons_laid_in({**listed, "discount": {"id": "di_mock", "source": {"coupon": coupon_id}}}, found.coupons)
    assert read_customer(laid_in).coupons[0].applies_to_known


async def test_a_price_the_subscription_has_left_is_asked_for_its_tiers_as_stripe_takes_it(
        readers: StripeReaders) -> None:
    """An event of a subscription's time on a tiered price it has left since: the price is asked for alone with its
    tiers (`GET /v1/prices/{id}?expand[]=tiers`). stripe-mock serves the path but does not check what is expanded,
    so Stripe's spec is asked whether a price's `tiers` expand; a price that answers without tiers (stripe-mock's
    is per unit) gives none, never a guessed amount."""
    spec = orjson.loads(stripe_mock.openapi_spec().read_bytes())
    assert "tiers" in spec["components"]["schemas"]["price"]["x-expandableFields"]
    reader = readers.reader(KEY, "key:mock", livemode=False, quick=True)
    try:
        price = await reader.retrieve_raw("prices", "price_left", {"expand": ["tiers"]})
        refused: dict[str, str] = {}
        found = await _tiers_of_prices(reader, ["price_left"], refused.__setitem__)
    finally:
        await reader.close()
    assert price["object"] == "price" and price["id"] == "price_left"
    assert found == ({"price_left": price["tiers"]} if price.get("tiers") else {})
    assert refused == {}  # answered: not taken for refused (asked again when an event names it)
