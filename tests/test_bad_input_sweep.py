"""The bad-input sweep (issue 10, invariants 4–7): one table of hostile requests against the real web process.

Each row is a request builder with the answer it must get (status, error code, a fragment of the
message) and its effect on the world: `nothing_changed` (no table of public/projection, no topic;
refused keys may add only the audit entries the row names, without the key), `published_redacted`
(exactly one record on the raw topic, for the right tenant, with no card number left in it and every
other field as sent) or `acknowledged_not_published` (2xx, no record). The web app is
`service.web.build_web_app` on loopback with real Kafka, Postgres and the Stripe simulator.

Decisions the rows document: a signed `Content-Encoding: gzip` body is refused with 415 (Stripe never
compresses, and nothing unauthenticated is decoded); with two Stripe-Signature headers the first one is
checked; a UTF-8 BOM is malformed JSON; JSON nested deeper than Stripe ever nests is not an event.
"""

from __future__ import annotations

import gzip
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestServer

from schemas import EnvelopeCodec, Source
from service.web import build_web_app
from stack.up import Platform
from stripe_sim import SimServer
from tests.conftest import TEST_DATABASE
from tests.sweep_support import (
    ACCEPTED_CHANGES,
    ADMIN_TOKEN,
    NOT_PANS,
    PANS,
    Call,
    Effect,
    Endpoint,
    Sweep,
    TopicWatch,
    add_tenants,
    assert_no_card_numbers,
    assert_not_echoed,
    charge_event,
    create_topics,
    error_of,
    masked,
    now_utc,
    stripe_signature,
    submitted_secrets,
    sweep_settings,
    table_snapshot_query,
)

pytestmark = pytest.mark.integration

Builder = Callable[[Sweep], Call]
Signer = Callable[[Sweep, bytes, Endpoint], tuple[str, ...]]
JSON = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Row:
    """One case: the request, the answer it must get and what it may change."""

    id: str
    build: Builder
    status: int
    code: str | None
    message: str = ""
    effect: Effect = "nothing_changed"
    audit: tuple[str, ...] = ()          # audit entries a refused attempt leaves (never with the key)
    expected: Callable[[], dict[str, Any]] | None = None  # published payload, when it is not the sent event


# Request builders -----------------------------------------------------------------------------------

def signed(by: str | None = None, age_s: int = 0, decoys: int = 0, over: bytes | None = None) -> Signer:
    """Signs like Stripe (t=…,v1=…) with the endpoint's secret or `by`'s, `decoys` wrong v1 first."""
    def sign(s: Sweep, body: bytes, ep: Endpoint) -> tuple[str, ...]:
        t = int(time.time()) - age_s
        secret = s.endpoints[by].secret if by else ep.secret
        v1 = [f"v1={'0' * 64}"] * decoys + [f"v1={stripe_signature(over or body, secret, t)}"]
        return (",".join([f"t={t}", *v1]),)
    return sign


def header(*values: str) -> Signer:
    """Sends these literal Stripe-Signature headers (none if empty); "{t}" becomes the current time."""
    return lambda s, body, ep: tuple(v.replace("{t}", str(int(time.time()))) for v in values)


def valid_then(extra: str) -> Signer:
    """Two Stripe-Signature headers: a valid one, then `extra`."""
    return lambda s, body, ep: (*signed()(s, body, ep), extra)


def delivery(event: dict[str, Any] | bytes | Callable[[], dict[str, Any] | bytes] = charge_event, *, to: str = "test",
             sign: Signer = signed(), content_type: str | None = JSON, headers: tuple[tuple[str, str], ...] = (),
             path: str | None = None, chunked: bool = False) -> Builder:
    """A POST to a webhook endpoint (`to`) with a body, its signature headers and a content type."""
    def build(s: Sweep) -> Call:
        made = event() if callable(event) else event
        body = made if isinstance(made, bytes) else orjson.dumps(made)
        ep = s.endpoints[to]
        hs = [("Stripe-Signature", v) for v in sign(s, body, ep)] + list(headers)
        hs += [("Content-Type", content_type)] if content_type else []
        return Call("POST", path or ep.path, tuple(hs), body, chunked, skip_content_type=content_type is None)
    return build


def api(method: str, path: str, body: Any = None, *, raw: bytes | None = None, token: str | None = "own",
        headers: tuple[tuple[str, str], ...] = ()) -> Builder:
    """A control API call; `path` may use {t} (Acme) and {o} (Other); token: own/other/admin/None/literal."""
    def build(s: Sweep) -> Call:
        bearer = {"own": s.token, "other": s.other_token, "admin": ADMIN_TOKEN}.get(token or "", token)
        hs = ((("Authorization", f"Bearer {bearer}"),) if bearer else ()) + headers
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        return Call(method, path.format(t=s.tenant, o=s.other_tenant), hs, data)
    return build


# Events ---------------------------------------------------------------------------------------------

def event_with(**changes: Any) -> Callable[[], dict[str, Any]]:
    """The charge event with top-level fields replaced (None removes the field)."""
    def make() -> dict[str, Any]:
        event = charge_event()
        for name, value in changes.items():
            event.pop(name) if value is None else event.__setitem__(name, value)
        return event
    return make


def with_object(**changes: Any) -> Callable[[], dict[str, Any]]:
    """The charge event with fields of data.object replaced (None removes the field)."""
    def make() -> dict[str, Any]:
        event = charge_event()
        for name, value in changes.items():
            obj = event["data"]["object"]
            obj.pop(name) if value is None else obj.__setitem__(name, value)
        return event
    return make


def nested(depth: int) -> Callable[[], bytes]:
    """The charge event with metadata nested `depth` levels deep (valid JSON, built as text)."""
    def make() -> bytes:
        deep = b'{"n":' * depth + b'"bottom"' + b"}" * depth
        return orjson.dumps(charge_event(metadata={"deep": "DEEP"})).replace(b'"DEEP"', deep)
    return make


def object_with(**fields: Any) -> Callable[[], dict[str, Any]]:
    """The sweep's charge event with some of its object's fields replaced, under an event id of its own (Stripe's
    event ids name one content each: what is counted in health is counted once per event id)."""
    def make() -> dict[str, Any]:
        event = charge_event()
        event["data"]["object"].update(fields)
        event["id"] += "_" + hashlib.sha256(repr(sorted(fields.items())).encode()).hexdigest()[:8]
        return event
    return make


def carded_charge(sent: bool) -> dict[str, Any]:
    """A charge with a card number in every free-text field; `sent=False` gives what must be stored."""
    def p(i: int) -> str:
        pan = PANS[i % len(PANS)]
        return pan if sent else masked(pan)

    card = {"brand": "visa", "last4": "4242", "exp_month": 8, "exp_year": 2030, "funding": "credit", "country": "US"}
    if sent:
        card |= {"number": PANS[0], "cvc": "123", "fingerprint": "Xt5EWLLDS7FJjR1c", "name": f"J Doe {PANS[1]}"}
    address = {"line1": f"{p(2)} Main St", "line2": p(3), "city": "Paris", "postal_code": "75001", "country": "FR"}
    return charge_event(
        "evt_1SweepCardEverywhere",
        metadata={"note": f"card {p(0)}", f"k{p(1)}": "in a key", "ref": NOT_PANS[0], "phone": NOT_PANS[2]},
        data={"object": {
            "id": "ch_1SweepCarded", "object": "charge", "amount": 990, "amount_captured": 0, "captured": False,
            "amount_refunded": 0, "currency": "usd", "created": 1_700_000_000,
            "livemode": False, "status": "failed", "description": f"paid with {p(4)} (not {NOT_PANS[1]})",
            "statement_descriptor": p(5), "statement_descriptor_suffix": p(6), "receipt_email": f"{p(0)}@example.com",
            "receipt_number": NOT_PANS[3], "failure_message": f"Your card {p(1)} was declined",
            "billing_details": {"name": f"{p(2)} Doe", "email": None, "phone": p(3), "address": address},
            "shipping": {"name": p(4), "carrier": p(5), "tracking_number": p(6), "address": address},
            "outcome": {"seller_message": f"declined {p(0)}", "type": "issuer_declined"},
            "payment_method_details": {"type": "card", "card": card},
            "refunds": {"object": "list", "data": [{"id": "re_1", "object": "refund", "amount": 0, "created": 1_700_000_000,
                                                   "status": "failed", "reason": p(1)}]},
            "metadata": {"order": p(2), "list": "x"},
        }},
    )


def carded_invoice(sent: bool) -> dict[str, Any]:
    """An invoice with card numbers in its free-text fields and a customer card source with the full number."""
    def p(i: int) -> str:
        pan = PANS[i % len(PANS)]
        return pan if sent else masked(pan)

    source = {"id": "card_1Sweep", "object": "card", "brand": "amex", "last4": "0005", "exp_month": 1, "exp_year": 2031}
    if sent:
        source |= {"number": PANS[3], "name": p(3), "address_line1": p(4), "dynamic_last4": None}
    return charge_event("evt_1SweepCardInvoice", type="invoice.payment_failed", data={"object": {
        "id": "in_1Sweep", "object": "invoice", "amount_due": 4200, "total": 4200, "amount_paid": 0,
        "created": 1_700_000_000, "currency": "usd", "status": "open",
        "customer": "cus_Sweep", "customer_name": f"Jane {p(0)}", "customer_email": f"{p(1)}@example.com",
        "customer_phone": p(2), "customer_address": {"line1": p(3), "city": "Lyon"}, "description": p(4),
        "footer": f"Pay with {p(5)}", "custom_fields": [{"name": p(6), "value": p(0)}],
        "lines": {"object": "list", "data": [{"id": "il_1", "object": "line_item", "description": f"Plan {p(1)}"}]},
        "default_source": source, "metadata": {"card": p(2)},
    }})


def unread_resource() -> dict[str, Any]:
    """A payout event: signed and valid, about a resource we do not read."""
    event = charge_event("evt_1SweepPayout", type="payout.paid")
    event["data"]["object"] = {"id": "po_1Sweep", "object": "payout", "amount": 1100, "currency": "eur"}
    return event


def bom() -> bytes:
    return b"\xef\xbb\xbf" + orjson.dumps(charge_event())


def gzipped(s: Sweep) -> Call:
    """A gzip-compressed body, signed over the decompressed JSON (what a compressing proxy would do)."""
    plain = orjson.dumps(charge_event())
    return delivery(gzip.compress(plain), sign=signed(over=plain), headers=(("Content-Encoding", "gzip"),))(s)


KB, MB = 1024, 1024 * 1024
# ~880 KB that compresses badly and has no digits (a digit run could be a card number by chance).
RANDOMISH = "".join(f"{i * 2654435761 % 4294967296:08x}" for i in range(110_000)).translate(
    str.maketrans("0123456789", "ghijklmnop"))
SQL = "'; DROP TABLE tenants; --"
RK_BODY = "aB3dE5fG7hJ9kL1mN3pQ5rS7"  # 24 letters and digits, the shape of a real key body


# Keys of every wrong shape: (id, key, key code, message fragment). Each goes to key-tests (200, refused,
# audited as key.tested) and to connections (422 key_refused, audited as key.refused).
BAD_KEYS: list[tuple[str, str, str, str]] = [
    ("sk-live", "sk_live_" + RK_BODY, "secret_key_refused", 'click "Create restricted key"'),
    ("sk-test", "sk_test_" + RK_BODY, "secret_key_refused", "it starts with rk_test_"),
    ("pk-live", "pk_live_" + RK_BODY, "publishable_key_refused", "publishable key"),
    ("whsec-in-key-field", "whsec_" + RK_BODY, "webhook_secret_in_key_field", "Webhook signing secret"),
    ("empty", "", "malformed_key", "No key was entered"),
    ("whitespace", " \t\n ", "malformed_key", "No key was entered"),
    ("unicode", "rk_live_ключ" + RK_BODY, "malformed_key", "incomplete"),
    ("10kb", "rk_live_" + "A" * (10 * KB), "malformed_key", "incomplete"),
    ("sql-in-rk", "rk_live_" + RK_BODY + SQL, "malformed_key", "letters and digits only"),
    ("sql-alone", SQL, "malformed_key", "not a Stripe API key"),
    ("newline-inside", "rk_test_" + RK_BODY[:12] + "\n" + RK_BODY[12:], "malformed_key", "incomplete"),
    ("rk-wrong-charset", "rk_test_" + "ab-cd_ef+gh/ij=kl.mnopqrst", "malformed_key", "incomplete"),
    ("rk-truncated", "rk_live_" + RK_BODY[:10], "malformed_key", "incomplete"),
    ("rk-unknown-mode", "rk_prod_" + RK_BODY, "malformed_key", "incomplete"),
    ("masked-copy", "rk_live_…" + RK_BODY[-4:], "malformed_key", "incomplete"),
    ("nul-byte", "rk_test_" + RK_BODY + "\x00", "malformed_key", "incomplete"),
    ("with-bearer", "Bearer rk_live_" + RK_BODY, "malformed_key", "not a Stripe API key"),
]

BAD_SECRETS: list[tuple[str, str, str, str]] = [
    ("not-a-secret", "not-a-secret", "malformed_webhook_secret", "It starts with whsec_"),
    ("rk-key", "rk_live_" + RK_BODY, "api_key_in_webhook_secret_field", "This is an API key"),
    ("sk-key", "sk_test_" + RK_BODY, "api_key_in_webhook_secret_field", "This is an API key"),
    ("empty", "", "malformed_webhook_secret", "It starts with whsec_"),
    ("short", "whsec_abc", "malformed_webhook_secret", "copy the whole value"),
    ("10kb", "whsec_" + "b" * (10 * KB), "malformed_webhook_secret", "copy the whole value"),
    ("newline", "whsec_" + RK_BODY[:12] + "\n" + RK_BODY[12:], "malformed_webhook_secret", "whsec_"),
    ("unicode", "whsec_" + "ü" * 24, "malformed_webhook_secret", "whsec_"),
    ("sql", "whsec_" + RK_BODY + SQL, "malformed_webhook_secret", "whsec_"),
]

KEY_TESTS, CONNECT = "/api/tenants/{t}/key-tests", "/api/tenants/{t}/connections"
SECRET, IMPORT = "/api/tenants/{t}/connections/test/webhook-secret", "/api/tenants/{t}/connections/test/import"
MONTHS = '"months" must be a whole number from 1 to 120'

ROWS: list[Row] = [
    # -- the receiver: authentication --------------------------------------------------------------
    Row("sig-missing", delivery(sign=header()), 400, "missing_signature", "header is missing"),
    Row("sig-empty", delivery(sign=header("")), 400, "missing_signature", "header is missing"),
    Row("sig-garbage", delivery(sign=header("nonsense")), 400, "malformed_signature", "no valid t="),
    Row("sig-no-v1", delivery(sign=header("t={t},v0=abc")), 400, "missing_signature", "no v1"),
    Row("sig-t-not-a-number", delivery(sign=header("t=1e9,v1=" + "0" * 64)), 400, "malformed_signature", "t="),
    Row("sig-non-ascii", delivery(sign=header("t={t},v1=é" + "0" * 63)), 400, "malformed_signature",
        "malformed"),
    Row("sig-wrong-secret", delivery(sign=header("t={t},v1=" + "ab" * 32)), 400,
        "invalid_signature", "no signature matches"),
    Row("sig-of-another-tenant", delivery(sign=signed(by="other")), 400, "invalid_signature", "no signature matches"),
    Row("sig-of-own-live-connection", delivery(sign=signed(by="live")), 400, "invalid_signature", "matches"),
    Row("replay-beyond-tolerance", delivery(sign=signed(age_s=301)), 400, "timestamp_too_old", "replayed"),
    Row("replay-a-day-old", delivery(sign=signed(age_s=86_400)), 400, "timestamp_too_old", "300s old"),
    Row("timestamp-far-future", delivery(sign=signed(age_s=-10 * 365 * 86_400)), 400, "timestamp_in_future",
        "in the future"),
    Row("twenty-v1-all-wrong", delivery(sign=header("t={t}," + ",".join(["v1=" + "1" * 64] * 20))),
        400, "invalid_signature", "no signature matches"),
    Row("twenty-v1-last-valid", delivery(sign=signed(decoys=19)), 200, None, effect="published_redacted"),
    Row("duplicate-sig-headers-bad-first", delivery(sign=lambda s, b, e: ("t=1,v1=00", *signed()(s, b, e))), 400,
        "invalid_signature", "no signature matches"),
    Row("duplicate-sig-headers-valid-first", delivery(sign=valid_then("t=1,v1=00")), 200, None,
        effect="published_redacted"),
    Row("unknown-token", delivery(path="/webhooks/stripe/wh_" + "x" * 40), 404, "unknown_endpoint", "no active"),
    Row("unknown-token-2kb", delivery(path="/webhooks/stripe/" + "y" * 2048), 404, "unknown_endpoint", "no active"),
    Row("unknown-token-non-ascii-sig", delivery(path="/webhooks/stripe/nope", sign=header("t=1,v1=ü")), 404,
        "unknown_endpoint", "no active"),
    # -- the receiver: the body ---------------------------------------------------------------------
    Row("content-type-text", delivery(content_type="text/plain"), 415, "unsupported_content_type", "application/json"),
    Row("content-type-form", delivery(content_type="application/x-www-form-urlencoded"), 415,
        "unsupported_content_type", "application/json"),
    Row("content-type-missing", delivery(content_type=None), 415, "unsupported_content_type", "application/json"),
    Row("content-encoding-gzip", gzipped, 415, "unsupported_content_encoding", "uncompressed"),
    Row("oversize-body", delivery(charge_event(metadata={"blob": "x" * MB})), 413, "body_too_large", "larger than"),
    Row("oversize-chunked-no-length", delivery(charge_event(metadata={"blob": "x" * MB}), chunked=True), 413,
        "body_too_large", "larger than"),
    Row("multi-megabyte-metadata", delivery(charge_event(metadata={"a": "m" * 3 * MB})), 413, "body_too_large",
        "1048576"),
    Row("malformed-json", delivery(b'{"id": "evt_1", '), 400, "malformed_json", "not valid JSON"),
    Row("empty-body", delivery(b""), 400, "malformed_json", "not valid JSON"),
    Row("not-utf8", delivery(b'{"id": "\xff\xfe"}'), 400, "malformed_json", "not UTF-8"),
    Row("utf8-bom", delivery(bom), 400, "malformed_json", "byte order mark"),
    Row("nan", delivery(b'{"created": NaN}'), 400, "malformed_json", "not valid JSON"),
    Row("nested-10000-levels", delivery(b"[" * 10_000 + b"]" * 10_000), 400, "malformed_json", "depth"),
    Row("nested-300-levels-in-metadata", delivery(nested(300)), 400, "not_an_event", "nested"),
    Row("nested-1000-levels-in-metadata", delivery(nested(1000)), 400, "not_an_event", "nested"),
    Row("json-null", delivery(b"null"), 400, "not_an_event", "expected a JSON object"),
    Row("json-array", delivery(b"[]"), 400, "not_an_event", "expected a JSON object"),
    Row("object-without-id", delivery(with_object(id=None)), 400, "not_an_event", '"data.object.id"'),
    Row("object-id-not-a-string", delivery(with_object(id=42)), 400, "not_an_event", '"data.object.id"'),
    Row("object-id-700kb", delivery(with_object(id="ch_" + "z" * 700 * KB)), 400, "not_an_event", '"data.object.id"'),
    Row("type-600kb", delivery(event_with(type="charge." + "u" * 600 * KB)), 400, "not_an_event", '"type"'),
    Row("no-data", delivery(event_with(data=None)), 400, "not_an_event", '"data.object"'),
    Row("created-as-string", delivery(event_with(created="1700000000")), 400, "not_an_event", '"created"'),
    Row("created-year-3000000", delivery(event_with(created=99_999_999_999_999)), 400, "not_an_event", '"created"'),
    Row("created-negative", delivery(event_with(created=-99_999_999_999)), 400, "not_an_event", '"created"'),
    Row("api-version-not-a-string", delivery(event_with(api_version={"v": 1})), 400, "not_an_event",
        '"api_version"'),
    Row("account-not-a-string", delivery(event_with(account=12)), 400, "not_an_event", '"account"'),
    Row("livemode-as-string", delivery(event_with(livemode="false")), 400, "not_an_event", '"livemode"'),
    # Signed, valid events whose money cannot be derived: kept out of Kafka, never stored as 0 or "", counted in the
    # tenant's health and acknowledged (refused, Stripe delivered them again for days, then disabled the endpoint).
    Row("charge-currency-null", delivery(object_with(currency=None)), 200, "unreadable_object", "currency",
        effect="counted_in_health"),
    Row("charge-amount-as-text", delivery(object_with(amount="2500")), 200, "unreadable_object", "amount",
        effect="counted_in_health"),
    Row("charge-amount-as-float", delivery(object_with(amount=25.0)), 200, "unreadable_object", "amount",
        effect="counted_in_health"),
    Row("charge-status-unknown", delivery(object_with(status="maybe")), 200, "unreadable_object", "status",
        effect="counted_in_health"),
    Row("charge-amount-beyond-any", delivery(object_with(amount=10**17)), 200, "unreadable_object", "amount",
        effect="counted_in_health"),
    Row("charge-amount-negative", delivery(object_with(amount=-2500)), 200, "unreadable_object", "amount",
        effect="counted_in_health"),
    Row("test-event-to-live-connection", delivery(to="live"), 400, "livemode_mismatch", "test-mode event"),
    Row("dashboard-test-event-to-live-connection", delivery(event_with(id="evt_00000000000000"), to="live"), 400,
        "livemode_mismatch", "live-mode connection"),
    Row("live-event-to-test-connection", delivery(event_with(livemode=True)), 400, "livemode_mismatch",
        "live-mode event"),
    # -- the receiver: acceptable events -------------------------------------------------------------
    Row("unread-resource", delivery(unread_resource), 200, None, effect="acknowledged_not_published"),
    Row("sql-looking-metadata", delivery(charge_event(metadata={"q": SQL, "r": "1 OR 1=1", "s": "$1; SELECT pg_sleep(9)"})),
        200, None, effect="published_redacted"),
    Row("metadata-880kb", delivery(charge_event(metadata={"blob": RANDOMISH})), 200, None,
        effect="published_redacted"),
    Row("card-number-in-every-free-text-field", delivery(lambda: carded_charge(sent=True)), 200, None,
        effect="published_redacted", expected=lambda: carded_charge(sent=False)),
    Row("card-number-in-every-invoice-text-field", delivery(lambda: carded_invoice(sent=True)), 200, None,
        effect="published_redacted", expected=lambda: carded_invoice(sent=False)),
    # -- the control API: keys of every wrong shape ----------------------------------------------------
    *[Row(f"key-test-{name}", api("POST", KEY_TESTS, {"key": key}), 200, code, words, audit=("key.tested",))
      for name, key, code, words in BAD_KEYS],
    *[Row(f"connect-{name}", api("POST", CONNECT, {"key": key}), 422, "key_refused", words, audit=("key.refused",))
      for name, key, code, words in BAD_KEYS],
    Row("rotate-with-sk-live", api("PUT", "/api/tenants/{t}/connections/live/key", {"key": BAD_KEYS[0][1]}), 422,
        "key_refused", "secret key", audit=("key.refused",)),
    Row("rotate-live-with-test-key", api("PUT", "/api/tenants/{t}/connections/live/key", {"key": "rk_test_" + RK_BODY}),
        422, "mode_mismatch", "rk_live_"),
    Row("connect-unknown-key", api("POST", CONNECT, {"key": "rk_test_" + RK_BODY * 2}), 422, "key_test_failed",
        "Stripe refused the key", audit=("key.refused",)),
    Row("connect-green-key-for-unknown-tenant", lambda s: api(
        "POST", "/api/tenants/ten_nope/connections", {"key": s.sim.create_restricted_key(s.account)}, token="admin")(s),
        404, "not_found", "no such tenant"),
    Row("key-test-for-unknown-tenant", api("POST", "/api/tenants/ten_nope/key-tests", {"key": "sk_live_" + RK_BODY},
                                           token="admin"), 404, "not_found", "no such tenant"),
    Row("key-not-a-string", api("POST", CONNECT, {"key": 12345}), 400, "invalid_request", '"key" is required'),
    Row("key-null", api("POST", KEY_TESTS, {"key": None}), 400, "invalid_request", '"key" is required'),
    Row("key-missing", api("POST", KEY_TESTS, {"keys": "rk_test_" + RK_BODY}), 400, "invalid_request", '"key"'),
    # -- the control API: bodies, tokens, paths ----------------------------------------------------
    Row("body-malformed-json", api("POST", CONNECT, raw=b'{"key": "rk_test_'), 400, "invalid_request", "not valid JSON"),
    Row("body-not-utf8", api("POST", KEY_TESTS, raw=b'{"key": "\xff"}'), 400, "invalid_request", "not valid JSON"),
    Row("body-array", api("POST", CONNECT, ["rk_test_" + RK_BODY]), 400, "invalid_request", "JSON object"),
    Row("body-null", api("POST", KEY_TESTS, raw=b"null"), 400, "invalid_request", "JSON object"),
    Row("body-nested-10000", api("POST", KEY_TESTS, raw=b"[" * 10_000 + b"]" * 10_000), 400, "invalid_request",
        "not valid JSON"),
    Row("token-missing", api("POST", KEY_TESTS, {"key": "sk_live_" + RK_BODY}, token=None), 401, "unauthorized",
        "Bearer"),
    Row("token-made-up", api("POST", CONNECT, {"key": "sk_live_" + RK_BODY}, token="tt_made_up"), 401,
        "unauthorized", "Bearer"),
    Row("token-basic-scheme", api("POST", CONNECT, {"key": "x"}, token=None,
                                  headers=(("Authorization", f"Basic {ADMIN_TOKEN}"),)), 401, "unauthorized", "Bearer"),
    Row("token-of-other-tenant", api("POST", CONNECT, {"key": "rk_test_" + RK_BODY}, token="other"), 404,
        "not_found", "no such tenant"),
    Row("tenant-token-creates-tenant", api("POST", "/api/tenants", {"name": "Mallory"}), 403, "forbidden", "operators"),
    Row("tenant-name-not-a-string", api("POST", "/api/tenants", {"name": ["x"]}, token="admin"), 400,
        "invalid_request", '"name"'),
    Row("disconnect-purge-maybe", api("DELETE", "/api/tenants/{t}/connections/test?purge=maybe"), 400,
        "invalid_request", '"purge" is true or false'),
    Row("disconnect-unknown-mode", api("DELETE", "/api/tenants/{t}/connections/prod"), 404, "not_found", '"test" or "live"'),
    # -- the control API: webhook secrets and imports -------------------------------------------------
    *[Row(f"webhook-secret-{name}", api("PUT", SECRET, {"secret": secret}), 422, code, words)
      for name, secret, code, words in BAD_SECRETS],
    Row("webhook-secret-not-a-string", api("PUT", SECRET, {"secret": 42}), 400, "invalid_request", '"secret"'),
    Row("webhook-secret-unknown-mode", api("PUT", "/api/tenants/{t}/connections/prod/webhook-secret",
                                           {"secret": "whsec_" + RK_BODY}), 404, "not_found", '"test" or "live"'),
    Row("webhook-secret-other-tenant", api("PUT", SECRET.replace("{t}", "{o}"), {"secret": "whsec_" + RK_BODY}), 404,
        "not_found", "no such tenant"),
    *[Row(f"import-months-{name}", api("POST", IMPORT, {"months": months}), 400, "invalid_request", MONTHS)
      for name, months in (("0", 0), ("121", 121), ("string", "12"), ("bool", True), ("float", 2.5), ("list", [12]),
                           ("negative", -1))],
    Row("import-months-huge", api("POST", IMPORT, raw=b'{"months": 1' + b"0" * 40 + b"}"), 400, "invalid_request",
        MONTHS),
    Row("import-unknown-mode", api("POST", "/api/tenants/{t}/connections/sandbox/import", {"months": 12}), 404,
        "not_found", '"test" or "live"'),
    Row("import-other-tenant", api("POST", IMPORT.replace("{t}", "{o}"), {"months": 12}), 404, "not_found",
        "no such tenant"),
]


@pytest.fixture(scope="module")
async def sweep(platform: Platform, clean_database: str) -> AsyncIterator[Sweep]:
    """The web process with its tenants, the simulator and the probes, shared by every row."""
    async with SimServer(seed=10) as sim:
        account = sim.create_account(customers=2).id
        sim.set_rate_limit(account, 1000)
        settings = sweep_settings(platform, clean_database, TEST_DATABASE, sim)
        await create_topics(settings.kafka)
        app = build_web_app(settings)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        topics = TopicWatch(settings.kafka)
        await topics.start()
        pg = await asyncpg.connect(clean_database)
        try:
            async with aiohttp.ClientSession() as http:
                sweep = Sweep(settings, app, server, http, pg, topics, sim, account)
                await add_tenants(sweep)
                sweep.snapshot_sql = await table_snapshot_query(pg)
                yield sweep
        finally:
            await pg.close()
            await topics.stop()
            await server.close()


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
async def test_bad_input(sweep: Sweep, row: Row) -> None:
    before = await sweep.state()
    stripe_calls = sweep.sim.request_counts(sweep.account)
    call = row.build(sweep)
    sent_at = now_utc()
    answer = await sweep.send(call)

    assert answer.status == row.status, answer.raw[:300]
    assert answer.json is not None, f"not a JSON answer: {answer.raw[:300]!r}"
    code, message = error_of(answer.json)
    assert code == row.code, answer.json
    assert row.message in message, message
    if "error" in answer.json and call.path.startswith("/api/"):
        assert answer.json["error"]["docs"] == f"docs/operating.md#{code}"
    for secret in submitted_secrets(call):
        assert_not_echoed(secret, answer.raw.decode(), "the answer")

    if row.effect != "nothing_changed":
        await sweep.settle(sent_at)
    else:
        await sweep.flush_activity()  # what the receiver noted of this call is in the tables before they are compared
    after = await sweep.state()
    new_records = before.new_records(after)
    assert new_records[sweep.settings.kafka.dead_letter_topic] == 0
    changed = before.changed_tables(after)
    if row.effect == "nothing_changed":
        assert changed == set(), f"tables changed: {changed}"
        assert new_records[sweep.settings.kafka.raw_topic] == 0
    elif row.effect == "counted_in_health":
        assert "public.dead_lettered_events" in changed <= {*ACCEPTED_CHANGES, "public.dead_lettered_events"}, changed
        assert new_records[sweep.settings.kafka.raw_topic] == 0
        assert set(answer.json) == {"received", "published", "unreadable"} and answer.json["published"] is False
        sent = orjson.loads(call.data or b"")
        row_kept = await sweep.pg.fetchrow("SELECT tenant_id, topic, reason, message FROM public.dead_lettered_events "
                                           "WHERE event_id = $1", sent["id"])
        assert (row_kept["tenant_id"], row_kept["topic"], row_kept["reason"]) == (
            sweep.endpoints["test"].tenant_id, "stripe-webhook", "unreadable_object")
        assert row.message in row_kept["message"]
        again = await sweep.send(row.build(sweep))  # Stripe's retry, or a duplicate delivery: counted once
        await sweep.settle(sent_at)
        assert again.status == 200 and after.changed_tables(await sweep.state()) <= ACCEPTED_CHANGES
    else:
        assert changed <= ACCEPTED_CHANGES, f"tables changed: {changed}"
        expected_records = 1 if row.effect == "published_redacted" else 0
        assert new_records[sweep.settings.kafka.raw_topic] == expected_records
        assert answer.json == {"received": True, "published": expected_records == 1}

    audit = await sweep.audit_since(before.audit_mark)
    assert [action for action, _ in audit] == list(row.audit)
    for _, detail in audit:
        for secret in submitted_secrets(call):
            assert_not_echoed(secret, detail, "the audit log")
    assert sweep.sim.request_counts(sweep.account) == stripe_calls, "a bad input reached Stripe"

    if row.effect == "published_redacted":
        await check_published(sweep, row, call, before.offsets)


async def check_published(sweep: Sweep, row: Row, call: Call, offsets: Any) -> None:
    """The one new record is the sent event for Acme's tenant, card numbers masked and nothing else changed."""
    [value] = await sweep.topics.values_since(offsets, sweep.settings.kafka.raw_topic)
    envelope = EnvelopeCodec().decode(value)
    sent = orjson.loads(call.data or b"")
    assert (envelope.tenant_id, envelope.source, envelope.event_id) == (
        sweep.endpoints["test"].tenant_id, Source.WEBHOOK, sent["id"])
    assert_no_card_numbers(envelope.payload)
    assert orjson.loads(envelope.payload) == (row.expected() if row.expected else sent)
