"""The webhook receiver on real HTTP, Kafka and Postgres: verified, per-tenant, durable before 2xx, redacted."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import string
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import asyncpg
import pytest
import stripe
from aiohttp.test_utils import TestServer
from yarl import URL

from ingestor.connections.store import PostgresConnectionStore
from ingestor.connections.tenant_store import PostgresTenantStore
from ingestor.connections.vault import MasterKeyring, generate_master_key
from ingestor.envelope.card_numbers import mask_pans
from plumbing.settings import HttpSettings, ReaderSettings, ReceiverSettings, Settings
from schemas import EnvelopeCodec, Source
from service.web import create_ingest_app
from stack.stripe_mock import openapi_fixtures
from stack.up import Platform
from tests.helpers import consume_all, topic_size, wait_for

pytestmark = pytest.mark.integration

PAN = "4242424242424242"


def charge_event(event_id: str = "evt_3MmlLrLkdIwHu7ix0b0ZVzXw", livemode: bool = False, **extra: Any) -> dict[str, Any]:
    """A charge.succeeded event shaped like Stripe's, with a card number typed into the description."""
    return {
        "id": event_id, "object": "event", "api_version": "2024-06-20", "created": int(time.time()) - 5,
        "livemode": livemode, "pending_webhooks": 1, "type": "charge.succeeded",
        "request": {"id": "req_8nY0P2BNbVL7cD", "idempotency_key": None},
        "data": {"object": {
            "id": "ch_3MmlLrLkdIwHu7ix0snN0B15", "object": "charge", "amount": 1099, "amount_captured": 1099,
            "amount_refunded": 0, "currency": "usd", "customer": "cus_NffrFeUfNV2Hib", "captured": True,
            "created": 1679090539, "description": f"order 1234 paid with {PAN}", "livemode": livemode,
            "metadata": {"note": f"card {PAN[:4]} {PAN[4:8]} {PAN[8:12]} {PAN[12:]}"}, "paid": True,
            "status": "succeeded",
            "payment_method_details": {"type": "card", "card": {
                "brand": "visa", "last4": "4242", "exp_month": 8, "exp_year": 2027, "funding": "credit",
                "country": "US", "fingerprint": "Xt5EWLLDS7FJjR1c", "network": "visa",
                "checks": {"cvc_check": "pass"}}},
        }},
        **extra,
    }


def sign(body: str, *secrets_: str, timestamp: int | None = None) -> str:
    """Signs like Stripe: one t= and one v1= per active secret."""
    ts = int(time.time()) if timestamp is None else timestamp
    parts = [stripe.WebhookSignature.generate_signature_header(body, s, ts).split(",")[1] for s in secrets_]
    return ",".join([f"t={ts}", *parts])


@dataclass
class Tenant:
    tenant_id: str
    connection_id: str
    url: str
    secret: str


@dataclass
class Receiver:
    settings: Settings
    server: TestServer
    store: PostgresConnectionStore
    http: aiohttp.ClientSession
    tenants: dict[str, Tenant]

    async def post(self, tenant: str | Tenant, body: str | bytes, signature: str | None = None,
                   content_type: str = "application/json; charset=utf-8") -> tuple[int, dict[str, Any], dict[str, str]]:
        url = tenant.url if isinstance(tenant, Tenant) else tenant
        headers = {"Content-Type": content_type}
        if signature is not None:
            headers["Stripe-Signature"] = signature
        async with self.http.post(url, data=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None), dict(resp.headers)

    async def published(self) -> int:
        return await topic_size(self.settings.kafka, self.settings.kafka.raw_topic)


METRICS_TOKEN = "metrics-token-for-tests"


@pytest.fixture
async def receiver(
    make_settings: Callable[..., Settings], create_topic: Callable[[str, int], Awaitable[None]], clean_database: str
) -> AsyncIterator[Receiver]:
    async with running_receiver(make_settings, create_topic, clean_database) as running:
        yield running


@contextlib.asynccontextmanager
async def running_receiver(
    make_settings: Callable[..., Settings], create_topic: Callable[[str, int], Awaitable[None]], clean_database: str,
    **receiver_settings: Any,
) -> AsyncIterator[Receiver]:
    """The web app on a test server, three tenants connected (a, b in test mode, live), `receiver_settings` applied."""
    base = make_settings(send_timeout_s=3.0)
    settings = base.model_copy(update={
        "receiver": ReceiverSettings(publish_timeout_s=2.0, retry_after_s=7, target_cache_ttl_s=0,
                                     body_read_timeout_s=1.0, **receiver_settings),
        "http": HttpSettings(metrics_token=METRICS_TOKEN)})  # type: ignore[arg-type]
    await create_topic(settings.kafka.raw_topic, 3)
    keyring = MasterKeyring.from_setting(generate_master_key("k1"))
    app = create_ingest_app(settings, keyring)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    pool = await asyncpg.create_pool(clean_database, min_size=1, max_size=2)
    store = PostgresConnectionStore(pool, keyring)
    tenants = {}
    now = datetime.now(timezone.utc)
    for name, livemode in (("a", False), ("b", False), ("live", True)):
        tenant_id, _ = await PostgresTenantStore(pool, keyring, ReaderSettings()).create_tenant(f"Tenant {name}")
        connection_id, token = await store.create_connection(tenant_id, livemode)
        secret = f"whsec_{name}{'x' * 30}"
        await store.add_webhook_secret(connection_id, secret, now)
        tenants[name] = Tenant(tenant_id, connection_id, str(server.make_url(f"/webhooks/stripe/{token}")), secret)
    async with aiohttp.ClientSession() as http:
        yield Receiver(settings, server, store, http, tenants)
    await server.close()
    await pool.close()


async def test_a_signed_delivery_lands_on_the_topic_redacted(receiver: Receiver) -> None:
    tenant = receiver.tenants["a"]
    body = json.dumps(charge_event())
    status, answer, _ = await receiver.post(tenant, body, sign(body, tenant.secret))
    assert (status, answer) == (200, {"received": True, "published": True})

    [(key, value)] = await consume_all(receiver.settings.kafka, receiver.settings.kafka.raw_topic, 1)
    envelope = EnvelopeCodec().decode(value)
    assert key == f"{tenant.tenant_id}:ch_3MmlLrLkdIwHu7ix0snN0B15".encode()
    assert (envelope.tenant_id, envelope.event_id, envelope.source) == (tenant.tenant_id, "evt_3MmlLrLkdIwHu7ix0b0ZVzXw", Source.WEBHOOK)
    assert (envelope.object_type, envelope.event_type, envelope.api_version) == ("charge", "charge.succeeded", "2024-06-20")
    assert PAN not in envelope.payload and PAN[-8:] not in envelope.payload.replace(" ", "")
    charge = json.loads(envelope.payload)["data"]["object"]
    assert charge["description"] == "order 1234 paid with ************4242"
    assert charge["payment_method_details"]["card"] == {
        "brand": "visa", "last4": "4242", "exp_month": 8, "exp_year": 2027, "funding": "credit", "country": "US"}
    assert charge["amount"] == 1099 and charge["currency"] == "usd"


async def test_during_a_secret_roll_both_secrets_are_accepted_then_the_old_one_expires(receiver: Receiver) -> None:
    tenant = receiver.tenants["a"]
    new_secret = "whsec_rolled" + "y" * 28
    await receiver.store.add_webhook_secret(tenant.connection_id, new_secret, datetime.now(timezone.utc))
    body = json.dumps(charge_event("evt_roll"))
    # Stripe signs with both secrets while rolling; each alone must verify too.
    for signature in (sign(body, tenant.secret, new_secret), sign(body, new_secret), sign(body, tenant.secret)):
        status, answer, _ = await receiver.post(tenant, body, signature)
        assert (status, answer) == (200, {"received": True, "published": True})
    # A roll with no grace period: the previous secrets stop working at once.
    newest = "whsec_newest" + "z" * 28
    await receiver.store.add_webhook_secret(tenant.connection_id, newest, datetime.now(timezone.utc), grace=timedelta(0))
    status, answer, _ = await receiver.post(tenant, body, sign(body, new_secret))
    assert (status, answer["error"]["code"]) == (400, "invalid_signature")
    status, _, _ = await receiver.post(tenant, body, sign(body, newest))
    assert status == 200
    assert await receiver.published() == 4


BAD_SIGNATURES: list[tuple[str, Callable[[str, str], str | None], str]] = [
    ("missing", lambda body, secret: None, "missing_signature"),
    ("empty", lambda body, secret: "", "missing_signature"),
    ("garbage", lambda body, secret: "nonsense", "malformed_signature"),
    ("no v1", lambda body, secret: f"t={int(time.time())},v0=abc", "missing_signature"),
    ("wrong secret", lambda body, secret: sign(body, "whsec_" + "w" * 32), "invalid_signature"),
    ("other body", lambda body, secret: sign(body + " ", secret), "invalid_signature"),
    ("stale", lambda body, secret: sign(body, secret, timestamp=int(time.time()) - 301), "timestamp_too_old"),
    ("future", lambda body, secret: sign(body, secret, timestamp=int(time.time()) + 600), "timestamp_in_future"),
]


@pytest.mark.parametrize("case,make_signature,code", BAD_SIGNATURES, ids=[c[0] for c in BAD_SIGNATURES])
async def test_bad_signatures_are_refused_and_nothing_is_published(
    receiver: Receiver, case: str, make_signature: Callable[[str, str], str | None], code: str
) -> None:
    tenant = receiver.tenants["a"]
    body = json.dumps(charge_event())
    status, answer, _ = await receiver.post(tenant, body, make_signature(body, tenant.secret))
    assert status == 400
    assert answer["error"]["code"] == code
    assert answer["error"]["message"]
    assert await receiver.published() == 0


async def test_a_payload_signed_for_tenant_a_sent_to_tenant_b_is_refused(receiver: Receiver) -> None:
    a, b = receiver.tenants["a"], receiver.tenants["b"]
    body = json.dumps(charge_event())
    status, answer, _ = await receiver.post(b, body, sign(body, a.secret))
    assert (status, answer["error"]["code"]) == (400, "invalid_signature")
    assert await receiver.published() == 0


async def test_unknown_and_disconnected_endpoints_are_404(receiver: Receiver) -> None:
    tenant = receiver.tenants["a"]
    body = json.dumps(charge_event())
    unknown = str(receiver.server.make_url("/webhooks/stripe/not-a-real-token"))
    status, answer, _ = await receiver.post(unknown, body, sign(body, tenant.secret))
    assert (status, answer["error"]["code"]) == (404, "unknown_endpoint")

    b = receiver.tenants["b"]
    await receiver.store.set_connection_status(b.connection_id, "disconnected", "tenant disconnected")
    status, answer, _ = await receiver.post(b, body, sign(body, b.secret))
    assert (status, answer["error"]["code"]) == (404, "unknown_endpoint")
    assert await receiver.published() == 0


@pytest.mark.parametrize(
    "body,code",
    [("{not json", "malformed_json"), ("[1, 2]", "not_an_event"), ('{"id": "evt_1", "object": "charge"}', "not_an_event"),
     ("\"just a string\"", "not_an_event")],
    ids=["malformed", "array", "not-an-event", "string"],
)
async def test_signed_bodies_that_are_not_stripe_events_are_400(receiver: Receiver, body: str, code: str) -> None:
    tenant = receiver.tenants["a"]
    status, answer, _ = await receiver.post(tenant, body, sign(body, tenant.secret))
    assert (status, answer["error"]["code"]) == (400, code)
    assert await receiver.published() == 0


async def test_oversize_body_is_413(receiver: Receiver) -> None:
    tenant = receiver.tenants["a"]
    event = charge_event()
    event["data"]["object"]["metadata"] = {"blob": "x" * (1024 * 1024)}
    body = json.dumps(event)
    status, answer, _ = await receiver.post(tenant, body, sign(body, tenant.secret))
    assert (status, answer["error"]["code"]) == (413, "body_too_large")
    assert await receiver.published() == 0



async def test_a_tenant_flooding_its_own_url_gets_429_past_its_share_and_the_others_are_served(
    make_settings: Callable[..., Settings], create_topic: Callable[[str, int], Awaitable[None]], clean_database: str
) -> None:
    """A tenant signs its own webhooks, so it can send deliveries without end; each connection has its own share of
    the receiver's work (here 7 units, hardly refilled: 1 a delivery, 1 per 4 KiB of body, 1 per 256 objects and
    arrays). Every delivery to the URL pays, signed or not (its reading and signature check are work too); past the
    share, 429 and nothing published, before the body is even read once the bucket is empty; other tenants' shares
    are untouched; the connection shows when it went over."""
    async with running_receiver(make_settings, create_topic, clean_database, share_units_per_s=0.001,
                                share_burst_units=7, share_bytes_per_unit=4096, share_containers_per_unit=256,
                                max_body_bytes=8192, max_body_containers=1024) as receiver:
        a, b, live = receiver.tenants["a"], receiver.tenants["b"], receiver.tenants["live"]

        def small(tenant: Tenant, n: int, secret: str | None = None) -> tuple[str, str]:
            body = json.dumps(charge_event(f"evt_{tenant.tenant_id[-6:]}_{n}", livemode=tenant is live))
            assert 500 < len(body) <= 1400 and body.count("{") + body.count("[") < 20  # 1.2-1.4 units: 5 fit in 7
            return body, sign(body, secret or tenant.secret)

        forged = [(await receiver.post(a, *small(a, n, "whsec_" + "f" * 32)))[0] for n in range(5)]
        assert forged == [400] * 5  # a stranger holding a's URL spends a's share, nobody else's
        status, answer, headers = await receiver.post(a, *small(a, 5))
        assert (status, answer["error"]["code"], headers["Retry-After"]) == (429, "over_share", "7")
        assert [(await receiver.post(b, *small(b, n)))[0] for n in range(5)] == [200] * 5  # b's share is its own
        assert (await receiver.post(b, *small(b, 5)))[0] == 429

        # With a's bucket empty, a delivery is refused on its headers and the connection closed: the body it
        # announces is neither waited for (that would end in 408 after the fixture's 1 s) nor read and discarded.
        assert await answer_to_headers_alone(a.url, content_length=2000) == (b"429", True)

        # Objects and arrays cost too: this body (a thousand empty arrays) takes 6 of live's 7 units.
        padded = json.dumps(charge_event("evt_live_padded", livemode=True, lines=[[] for _ in range(1000)]))
        assert len(padded) < 5200
        assert (await receiver.post(live, padded, sign(padded, live.secret)))[0] == 200
        assert (await receiver.post(live, *small(live, 0)))[0] == 429

        records = await consume_all(receiver.settings.kafka, receiver.settings.kafka.raw_topic, 6)
        tenants = [EnvelopeCodec().decode(value).tenant_id for _, value in records]
        assert sorted(tenants) == sorted([b.tenant_id] * 5 + [live.tenant_id])
        assert await receiver.published() == 6

        async def shown() -> bool:
            found = await receiver.store.find_connection(a.tenant_id, livemode=False)
            return found is not None and found.webhook_over_share_at is not None
        await wait_for(shown, what="a's connection to show it went over its share")


async def answer_to_headers_alone(url_text: str, content_length: int) -> tuple[bytes, bool]:
    """Sends a delivery's headers and one byte of its body; returns the answer's status and whether the receiver
    closed the connection within 0.9 s (instead of reading the rest, which never comes)."""
    url = URL(url_text)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(f"POST {url.path} HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {content_length}\r\n\r\n{{".encode())
    await writer.drain()
    try:
        status = (await asyncio.wait_for(reader.readline(), 0.9)).split(b" ")[1]
        with contextlib.suppress(ConnectionError):
            while await asyncio.wait_for(reader.read(65536), 0.9):
                pass
        return status, True
    except TimeoutError:
        return b"", False
    finally:
        writer.close()


async def test_a_delivery_refused_on_its_headers_is_answered_and_closed_without_reading_its_body(
    receiver: Receiver
) -> None:
    """aiohttp reads and discards an unread body for up to 10 s to keep the connection: whoever announces a gigabyte
    to any URL would have it read. Refused on its headers, a delivery's connection is closed after the answer."""
    tenant = receiver.tenants["a"]
    assert await answer_to_headers_alone(tenant.url, content_length=10**9) == (b"413", True)
    unknown = tenant.url.rsplit("/", 1)[0] + "/whk_unknown"
    assert await answer_to_headers_alone(unknown, content_length=10**9) == (b"413", True)


async def test_a_body_of_more_objects_and_arrays_than_an_event_is_413_before_parsing(receiver: Receiver) -> None:
    """Parsing, the shape check and masking walk every object and array: a signed megabyte of `[],` took half a
    second of the loop every tenant shares. Brackets are counted first (in strings too: a bound, not a parse)."""
    tenant = receiver.tenants["a"]
    body = json.dumps(charge_event("evt_brackets", lines=[[] for _ in range(20_000)]))
    status, answer, _ = await receiver.post(tenant, body, sign(body, tenant.secret))
    assert (status, answer["error"]["code"]) == (413, "too_many_containers")
    within = json.dumps(charge_event("evt_brackets_within", lines=[[] for _ in range(10_000)]))
    assert (await receiver.post(tenant, within, sign(within, tenant.secret)))[0] == 200
    # Brackets in strings (a tenant keeping JSON text in metadata) are not objects or arrays: past the bound the
    # count leaves them out.
    metadata = {f"k{i}": "[{" * 240 for i in range(50)}  # 24,000 brackets in strings, Stripe's 50 keys of 500
    in_strings = json.dumps(charge_event("evt_brackets_in_strings", metadata=metadata))
    assert (await receiver.post(tenant, in_strings, sign(in_strings, tenant.secret)))[0] == 200
    assert await receiver.published() == 2


def with_metadata_text(metadata_json: str) -> str:
    """A charge event's JSON whose metadata is `metadata_json`, written as given (e.g. numbers as 1e15)."""
    event = charge_event()
    event["data"]["object"]["metadata"] = "METADATA"
    return json.dumps(event).replace('"METADATA"', metadata_json)


@pytest.mark.parametrize("metadata", [
    "[" + ",".join(["1e15"] * 40_000) + "]",  # 3 digits in the body, 17 in each number's text: masked one by one
    json.dumps({"cards": [PAN] * 8_000}),
    json.dumps({"run": "\uff14\uff12" * 60_000}, ensure_ascii=False),  # full-width digits count too
], ids=["exponent-numbers", "card-numbers", "full-width-digits"])
async def test_a_body_with_more_digits_than_a_stripe_event_is_413_and_nothing_is_published(
    receiver: Receiver, metadata: str
) -> None:
    # Masking card numbers costs CPU for every digit a tenant sends: the receiver refuses a body holding far more
    # digits than any Stripe event before that work holds up other tenants' deliveries.
    tenant = receiver.tenants["a"]
    body = with_metadata_text(metadata)
    status, answer, _ = await receiver.post(tenant, body, sign(body, tenant.secret))
    assert (status, answer.get("error", {}).get("code")) == (413, "too_many_digits")
    assert str(receiver.settings.receiver.max_body_digits) in answer["error"]["message"]
    assert await receiver.published() == 0


async def test_a_long_digit_run_within_the_bound_is_masked_and_published(receiver: Receiver) -> None:
    tenant = receiver.tenants["a"]
    run = "-".join([PAN] * (receiver.settings.receiver.max_body_digits // 32))
    body = with_metadata_text(json.dumps({"run": run}))
    status, answer, _ = await receiver.post(tenant, body, sign(body, tenant.secret))
    assert (status, answer) == (200, {"received": True, "published": True})
    [(_, value)] = await consume_all(receiver.settings.kafka, receiver.settings.kafka.raw_topic, 1)
    payload = EnvelopeCodec().decode(value).payload
    assert PAN not in payload
    assert json.loads(payload)["data"]["object"]["metadata"]["run"] == mask_pans(run)


async def test_wrong_content_type_is_415(receiver: Receiver) -> None:
    tenant = receiver.tenants["a"]
    body = json.dumps(charge_event())
    status, answer, _ = await receiver.post(tenant, body, sign(body, tenant.secret), content_type="text/plain")
    assert (status, answer["error"]["code"]) == (415, "unsupported_content_type")
    assert await receiver.published() == 0


async def test_test_mode_event_to_a_live_connection_is_refused_and_the_reverse(receiver: Receiver) -> None:
    live, test = receiver.tenants["live"], receiver.tenants["a"]
    body = json.dumps(charge_event(livemode=False))
    status, answer, _ = await receiver.post(live, body, sign(body, live.secret))
    assert (status, answer["error"]["code"]) == (400, "livemode_mismatch")
    body = json.dumps(charge_event(livemode=True))
    status, answer, _ = await receiver.post(test, body, sign(body, test.secret))
    assert (status, answer["error"]["code"]) == (400, "livemode_mismatch")
    assert await receiver.published() == 0


async def test_events_of_unread_resources_are_acknowledged_not_published(receiver: Receiver) -> None:
    tenant = receiver.tenants["a"]
    event = charge_event("evt_payout")
    event["type"] = "payout.paid"
    event["data"]["object"] = {"id": "po_1OaFDbEcg9tTZuTgNYmX0PKB", "object": "payout", "amount": 1100}
    body = json.dumps(event)
    status, answer, _ = await receiver.post(tenant, body, sign(body, tenant.secret))
    assert (status, answer) == (200, {"received": True, "published": False})
    assert await receiver.published() == 0


@pytest.mark.parametrize("event_type, object_name, changed", [
    ("balance.available", "balance", {}),  # a busy account's every day
    ("cash_balance.funds_available", "cash_balance", {}),
    ("tax.settings.updated", "tax.settings", {}),
    # As versions before discounts had ids render a subscription's (a customer's own is read: keyed by its customer).
    ("customer.discount.created", "discount", {"subscription": "sub_1"}),
], ids=["balance", "cash_balance", "tax_settings", "old_subscription_discount"])
async def test_events_about_objects_without_an_id_are_acknowledged_not_refused(
        receiver: Receiver, event_type: str, object_name: str, changed: dict[str, Any]) -> None:
    """An endpoint listening to every event type gets events whose object Stripe renders without an id (Stripe's
    own examples of them, the `fixtures3.json` of stripe-mock's module). They were refused (400 `not_an_event`): Stripe retries a refused
    delivery for three days, then disables the endpoint, and the tenant's revenue events stop coming with them."""
    tenant = receiver.tenants["a"]
    obj = {**json.loads(openapi_fixtures().read_text())["resources"][object_name], **changed}
    obj.pop("id", None)
    event = charge_event(f"evt_noid_{object_name.replace('.', '_')}")
    event["type"], event["data"] = event_type, {"object": obj}
    body = json.dumps(event)
    status, answer, _ = await receiver.post(tenant, body, sign(body, tenant.secret))
    assert (status, answer) == (200, {"received": True, "published": False})
    assert await receiver.published() == 0


async def test_an_event_whose_money_cannot_be_read_is_counted_in_its_tenants_health_and_acknowledged(
        receiver: Receiver, pg: asyncpg.Connection) -> None:
    """Refused with a 400, Stripe delivered it again for three days and then disabled the endpoint (every revenue
    event of the tenant with it), and health showed nothing. Now: not published, counted once in the sender's
    health by its event id and why, never in another tenant's, and answered 200."""
    tenant, other = receiver.tenants["a"], receiver.tenants["b"]
    event = charge_event("evt_no_currency")
    event["data"]["object"]["currency"] = PAN  # quoted by the reader as it could not read it: never kept
    body = json.dumps(event)
    for _ in range(2):  # delivered again: counted once
        status, answer, _ = await receiver.post(tenant, body, sign(body, tenant.secret))
        assert status == 200 and answer["published"] is False and "currency" in answer["unreadable"], answer
        assert PAN not in answer["unreadable"] and mask_pans(PAN) in answer["unreadable"]
    assert await receiver.published() == 0
    rows = await pg.fetch("SELECT tenant_id, topic, event_id, reason, message FROM public.dead_lettered_events "
                          "WHERE tenant_id = ANY($1::text[])", [tenant.tenant_id, other.tenant_id])
    assert [(r["tenant_id"], r["topic"], r["event_id"], r["reason"]) for r in rows] == [
        (tenant.tenant_id, "stripe-webhook", "evt_no_currency", "unreadable_object")]
    assert "currency" in rows[0]["message"] and PAN not in rows[0]["message"]


async def test_what_an_unreadable_event_leaves_in_health_is_short_and_storable(
        receiver: Receiver, pg: asyncpg.Connection) -> None:
    """The reader names every currency of items that disagree (7,000 of them here: 35 KB of message) and quotes ids
    as sent (a NUL byte, which Postgres's text refuses: a 500 before)."""
    tenant = receiver.tenants["a"]
    event = charge_event("evt_long")
    event["type"], event["data"]["object"] = "customer.subscription.created", {
        "id": "sub_a\u0000b", "object": "subscription", "customer": "cus_1", "status": "active", "created": 1,
        "items": {"object": "list", "has_more": False, "data": [
            {"id": f"si_{code}", "object": "subscription_item", "quantity": 1, "plan": {
                "id": f"plan_{code}", "object": "plan", "amount": 1, "currency": code, "interval": "month",
                "interval_count": 1, "usage_type": "licensed", "billing_scheme": "per_unit"}}
            for code in ("".join(letters) for letters in itertools.islice(
                itertools.product(string.ascii_lowercase, repeat=3), 3_000))]}}
    body = json.dumps(event)
    status, answer, _ = await receiver.post(tenant, body, sign(body, tenant.secret))
    assert status == 200 and 0 < len(answer["unreadable"]) <= 500, (status, answer)
    message = await pg.fetchval("SELECT message FROM public.dead_lettered_events WHERE event_id = 'evt_long'")
    assert message is not None and len(message) <= 500


async def test_a_dashboard_test_webhook_verifies_the_connection_and_is_not_revenue(receiver: Receiver, pg: asyncpg.Connection) -> None:
    tenant = receiver.tenants["a"]
    body = json.dumps(charge_event("evt_00000000000000"))
    status, answer, _ = await receiver.post(tenant, body, sign(body, tenant.secret))
    assert (status, answer) == (200, {"received": True, "test": True})
    row = await pg.fetchrow(
        "SELECT status, webhook_verified_at FROM stripe_connections WHERE connection_id = $1", tenant.connection_id)
    assert row["status"] == "connected" and row["webhook_verified_at"] is not None
    assert await receiver.published() == 0
    # Many more within the minute (a tenant signs its own; each within its share) write no row.
    row_version = await pg.fetchval("SELECT xmin::text FROM stripe_connections WHERE connection_id = $1",
                                    tenant.connection_id)
    for _ in range(3):
        assert (await receiver.post(tenant, body, sign(body, tenant.secret)))[0] == 200
    assert await pg.fetchval("SELECT xmin::text FROM stripe_connections WHERE connection_id = $1",
                             tenant.connection_id) == row_version
    # Disconnected and set up again, the connection is verified by its next test webhook at once.
    await pg.execute("UPDATE stripe_connections SET webhook_verified_at = NULL, status = 'webhook_unverified' "
                     "WHERE connection_id = $1", tenant.connection_id)
    assert (await receiver.post(tenant, body, sign(body, tenant.secret)))[0] == 200
    assert await pg.fetchval("SELECT status FROM stripe_connections WHERE connection_id = $1",
                             tenant.connection_id) == "connected"


async def test_duplicate_deliveries_are_published_again_for_the_projector_to_dedupe(receiver: Receiver) -> None:
    tenant = receiver.tenants["a"]
    body = json.dumps(charge_event())
    for _ in range(3):
        status, _, _ = await receiver.post(tenant, body, sign(body, tenant.secret))
        assert status == 200
    assert await receiver.published() == 3


async def test_kafka_down_gives_503_within_the_bound_and_the_retry_lands(receiver: Receiver, platform: Platform) -> None:
    tenant = receiver.tenants["a"]
    body = json.dumps(charge_event())
    await asyncio.to_thread(platform.kafka.stop)
    try:
        started = time.monotonic()
        status, answer, headers = await receiver.post(tenant, body, sign(body, tenant.secret))
        elapsed = time.monotonic() - started
        assert (status, answer["error"]["code"]) == (503, "temporarily_unavailable")
        assert headers["Retry-After"] == "7"
        assert elapsed < receiver.settings.receiver.publish_timeout_s + 1.0
    finally:
        await asyncio.to_thread(platform.kafka.start)
    # Stripe retries the same delivery (for days): once the broker leads its partitions again, it lands.
    async def lands() -> bool:
        status, answer, _ = await receiver.post(tenant, body, sign(body, tenant.secret))
        assert status in (200, 503), (status, answer)
        return (status, answer) == (200, {"received": True, "published": True})
    await wait_for(lands, 60, "a retried delivery to be acknowledged")
    records = await consume_all(receiver.settings.kafka, receiver.settings.kafka.raw_topic, 1, timeout_s=30)
    assert {EnvelopeCodec().decode(v).event_id for _, v in records} == {"evt_3MmlLrLkdIwHu7ix0b0ZVzXw"}


async def test_health_readiness_and_metrics(receiver: Receiver) -> None:
    tenant = receiver.tenants["a"]
    body = json.dumps(charge_event())
    await receiver.post(tenant, body, sign(body, tenant.secret))
    await receiver.post(tenant, body, None)
    async with receiver.http.get(receiver.server.make_url("/healthz")) as resp:
        assert resp.status == 200
    async with receiver.http.get(receiver.server.make_url("/readyz")) as resp:
        assert resp.status == 200
        assert (await resp.json())["checks"] == {"postgres": "ok", "kafka": "ok"}
    async with receiver.http.get(receiver.server.make_url("/metrics")) as resp:
        assert resp.status == 404 and resp.content_type == "application/json"  # not without the token
    async with receiver.http.get(receiver.server.make_url("/metrics"),
                                 headers={"Authorization": "Bearer not-the-token"}) as resp:
        assert resp.status == 404
    async with receiver.http.get(receiver.server.make_url("/metrics"),
                                 headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as resp:
        text = await resp.text()
    assert 'webhook_requests_total{outcome="published"} 1.0' in text
    assert 'webhook_requests_total{outcome="bad_signature"} 1.0' in text
    assert "webhook_publish_seconds_bucket" in text


async def test_a_body_dripped_slowly_is_cut_off_with_a_408(receiver: Receiver) -> None:
    """A hostile client sending one byte every few seconds does not hold a connection for minutes."""
    tenant = receiver.tenants["a"]

    async def drip() -> AsyncIterator[bytes]:
        yield b"{"
        await asyncio.sleep(30)  # the drip itself: the receiver must not wait for it
        yield b"}"
    started = time.monotonic()
    async with receiver.http.post(tenant.url, data=drip(),
                                  headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 408 and (await resp.json())["error"]["code"] == "body_too_slow"
    assert time.monotonic() - started < receiver.settings.receiver.body_read_timeout_s + 2


async def test_what_aiohttp_answers_itself_is_json_too(receiver: Receiver) -> None:
    for method, path in (("GET", "/no/such/route"), ("GET", "/webhooks/stripe/x"), ("DELETE", "/healthz")):
        async with receiver.http.request(method, receiver.server.make_url(path)) as resp:
            assert resp.status in (404, 405) and resp.content_type == "application/json", (method, path)
            assert (await resp.json())["error"]["code"] in ("not_found", "method_not_allowed")
