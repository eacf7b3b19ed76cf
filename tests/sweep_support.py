"""Helpers of the bad-input sweep (tests/test_bad_input_sweep.py): the web process on loopback, its
tenants, request builders, Stripe-shaped events, and the "what changed" probes (tables, topics, audit).

The probes are deliberately blunt: every base table of the `public` and `projection` schemas is
counted and checksummed (`md5` of its rows as text, ordered), and the raw and dead-letter topics are
measured by their end offsets, so a row can say "nothing changed" without knowing where a change
could have happened.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import aiohttp
import asyncpg
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ingestor.connections.vault import generate_master_key
from plumbing.settings import (
    ControlSettings,
    KafkaSettings,
    PostgresSettings,
    ReaderSettings,
    ReceiverSettings,
    Settings,
    StripeSettings,
    VaultSettings,
)
from service.web import RECEIVER, STORE, store_webhook_activity
from stack import postgres
from stack.up import Platform
from stripe_sim import SimServer
from tests.helpers import wait_for

ADMIN_TOKEN = "admin-" + "s" * 30
RAW_PARTITIONS = 3
# counted_in_health: a signed event whose object cannot be read, acknowledged (Stripe would send it again for days)
# and counted in the tenant's health, not published.
Effect = Literal["nothing_changed", "published_redacted", "acknowledged_not_published", "counted_in_health"]
ACCEPTED_CHANGES = frozenset({"public.stripe_connections"})  # last_webhook_at / test-delivery verification


# Requests -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    """One HTTP request as the sweep sends it (headers as pairs: a name may repeat)."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    data: bytes | None = None
    chunked: bool = False  # send `data` with Transfer-Encoding: chunked (no Content-Length)
    skip_content_type: bool = False


@dataclass(frozen=True)
class Answer:
    """The status and body of one response; `json` is None when the body is not JSON."""

    status: int
    raw: bytes
    json: Any


@dataclass(frozen=True)
class Endpoint:
    """A connection's webhook endpoint: where to post and how to sign."""

    tenant_id: str
    connection_id: str
    path: str
    secret: str
    livemode: bool


def stripe_signature(body: bytes, secret: str, timestamp: int) -> str:
    """Returns one `v1` value the way Stripe computes it: HMAC-SHA256 of "<t>.<body>"."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


# Events ---------------------------------------------------------------------------------------------

CREATED = 1_700_000_000  # events carry a fixed time: the signature's t= is what the tolerance checks


def charge_event(event_id: str = "evt_1SweepChargeSucceeded", livemode: bool = False,
                 metadata: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A charge.succeeded event shaped like Stripe's (no card data in it)."""
    return {
        "id": event_id, "object": "event", "api_version": "2024-06-20", "created": CREATED,
        "livemode": livemode, "pending_webhooks": 1, "type": "charge.succeeded",
        "request": {"id": "req_sweep", "idempotency_key": None},
        "data": {"object": {
            "id": "ch_1SweepCharge", "object": "charge", "amount": 2500, "amount_captured": 2500, "captured": True,
            "amount_refunded": 0, "currency": "eur",
            "customer": "cus_Sweep", "created": CREATED, "livemode": livemode, "paid": True, "status": "succeeded",
            "description": "Order 1042", "metadata": metadata if metadata is not None else {"order": "1042"},
        }},
        **extra,
    }


def luhn_valid(digits: str) -> bool:
    """The Luhn check (the sweep's own copy: the product's must not grade itself)."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char) * (2 if i % 2 else 1)
        total += value - 9 if value > 9 else value
    return bool(digits) and total % 10 == 0


_DIGIT_CHAIN = re.compile(r"[0-9]+(?:[ -][0-9]+)*")


def pan_runs(text: str) -> list[str]:
    """Returns every Luhn-valid 13–19 digit run: consecutive digit groups joined by single spaces/dashes."""
    found = []
    for chain in _DIGIT_CHAIN.findall(text):
        groups = re.split(r"[ -]", chain)
        for start in range(len(groups)):
            for end in range(start + 1, len(groups) + 1):
                digits = "".join(groups[start:end])
                if 13 <= len(digits) <= 19 and luhn_valid(digits):
                    found.append(digits)
    return found


def strings_in(value: Any) -> list[str]:
    """Returns every string of a JSON value, dict keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [*strings_in(k), *strings_in(v)]]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    return []


def masked(pan: str) -> str:
    """The documented masked form of a card number: stars for all digits but the last four, separators kept."""
    digits = sum(c.isdigit() for c in pan)
    out, seen = [], 0
    for c in pan:
        if c.isdigit():
            seen += 1
            out.append(c if seen > digits - 4 else "*")
        else:
            out.append(c)
    return "".join(out)


# Card numbers: 16-digit Visa plain/spaced/dashed, 15-digit Amex grouped 4-6-5, 13- and 19-digit.
PANS = ("4242424242424242", "4000 0566 5566 5556", "5555-5555-5555-4444", "3782 822463 10005", "4222222222222",
        "6011000990139424", "4000000000000000006")
# Digit runs with no Luhn-valid 13-19 digit window that does not start with 0 (the module's rule): left alone.
NOT_PANS = ("10000000000000000000", "4291417776317066", "+1 415 555 0100", "123456789012")


def error_of(answer: Any) -> tuple[str | None, str]:
    """Returns (code, message) of an answer: the error's, or a key test's verdict on the key."""
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return answer["error"]["code"], answer["error"]["message"]
    if isinstance(answer, dict) and answer.get("outcome") in ("refused", "key_invalid"):
        return answer["key"]["code"], answer["summary"]
    if isinstance(answer, dict) and isinstance(answer.get("unreadable"), str):
        return "unreadable_object", answer["unreadable"]
    return None, ""


def submitted_secrets(call: Call) -> list[str]:
    """Returns the "key" and "secret" strings of a control API body (what must never come back)."""
    try:
        body = orjson.loads(call.data or b"")
    except orjson.JSONDecodeError:
        return []
    if not call.path.startswith("/api/") or not isinstance(body, dict):
        return []
    return [v for k, v in body.items() if k in ("key", "secret") and isinstance(v, str)]


def assert_not_echoed(secret: str, text: str, where: str) -> None:
    """The submitted secret, or its body after a known prefix, must not appear in `text` in any spelling."""
    stripped = secret.strip()
    body = re.sub(r"^((sk|rk|pk)_(live|test|prod)_|whsec_)", "", stripped)
    for needle in {stripped, body}:
        if len(needle) >= 8:
            spellings = {needle, orjson.dumps(needle).decode()[1:-1]}
            assert not any(s in text for s in spellings), f"the submitted secret came back in {where}"


def assert_no_card_numbers(payload: str) -> None:
    """No Luhn-valid 13–19 digit run and no planted card number may survive anywhere in the payload."""
    flat = re.sub(r"(?<=[0-9])[ -](?=[0-9])", "", payload)
    for pan in PANS:
        assert re.sub(r"[ -]", "", pan) not in flat, f"card number {pan} survived"
    for text in strings_in(orjson.loads(payload)):
        assert not pan_runs(text), f"a card number survived in {text[:80]!r}"


# The probes -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class State:
    """Row count and checksum of every table, the topics' end offsets and the audit log's high mark."""

    tables: dict[str, tuple[int, str]]
    offsets: dict[TopicPartition, int]
    audit_mark: int

    def changed_tables(self, after: State) -> set[str]:
        """Returns the tables whose count or checksum differs in `after`."""
        return {name for name, value in self.tables.items() if after.tables.get(name) != value}

    def new_records(self, after: State) -> dict[str, int]:
        """Returns, per topic, how many records were appended between the two states."""
        out: dict[str, int] = {}
        for tp, end in after.offsets.items():
            out[tp.topic] = out.get(tp.topic, 0) + end - self.offsets[tp]
        return out


async def table_snapshot_query(pg: asyncpg.Connection) -> str:
    """Builds one query that counts and checksums every base table of public/projection but the audit log
    and the request budgets (a key Test of a bad key is still requests made to Stripe, counted there)."""
    rows = await pg.fetch(
        """SELECT table_schema || '.' || table_name AS name FROM information_schema.tables
            WHERE table_schema IN ('public', 'projection') AND table_type = 'BASE TABLE'
              AND table_name NOT IN ('audit_log', 'stripe_request_budgets') ORDER BY 1""")
    return " UNION ALL ".join(
        f"SELECT '{r['name']}' AS name, count(*) AS n, "
        f"md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) AS sum FROM {r['name']} x"
        for r in rows)


class TopicWatch:
    """One long-lived consumer that measures the sweep's topics and reads what was appended."""

    def __init__(self, kafka: KafkaSettings):
        self._consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False,
                                          isolation_level="read_committed")
        self.partitions = [TopicPartition(kafka.raw_topic, p) for p in range(RAW_PARTITIONS)] + [
            TopicPartition(kafka.dead_letter_topic, 0)]

    async def start(self) -> None:
        """Connects to the broker."""
        await self._consumer.start()

    async def stop(self) -> None:
        """Disconnects."""
        await self._consumer.stop()

    async def ends(self) -> dict[TopicPartition, int]:
        """Returns the end offset of every partition."""
        return dict(await self._consumer.end_offsets(self.partitions))

    async def values_since(self, before: dict[TopicPartition, int], topic: str, timeout_s: float = 10.0) -> list[bytes]:
        """Returns the record values appended to `topic` after the offsets in `before`."""
        ends = await self.ends()
        partitions = [tp for tp in self.partitions if tp.topic == topic]
        wanted = sum(ends[tp] - before[tp] for tp in partitions)
        # Assigned only while reading: a fetch in flight would hold up the next end-offsets request.
        self._consumer.assign(partitions)
        for tp in partitions:
            self._consumer.seek(tp, before[tp])
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(values) < wanted and time.monotonic() < deadline:
                batch = await self._consumer.getmany(timeout_ms=200)
                values += [r.value for records in batch.values() for r in records]
        finally:
            self._consumer.unsubscribe()
        return values


# The web process and its tenants --------------------------------------------------------------------

@dataclass
class Sweep:
    """The real web app on loopback, with two tenants, their connections and the probes."""

    settings: Settings
    app: web.Application
    server: TestServer
    http: aiohttp.ClientSession
    pg: asyncpg.Connection
    topics: TopicWatch
    sim: SimServer
    account: str
    snapshot_sql: str = ""
    tenant: str = ""          # "Acme": test and live connections, both with a signing secret
    token: str = ""
    other_tenant: str = ""    # "Other": a test connection with its own signing secret
    other_token: str = ""
    endpoints: dict[str, Endpoint] = field(default_factory=dict)

    async def send(self, call: Call) -> Answer:
        """Sends one request; returns the answer."""
        data: Any = call.data
        if call.chunked and call.data is not None:
            data = _chunks(call.data)
        skip = ["Content-Type"] if call.skip_content_type else []
        async with self.http.request(call.method, self.server.make_url(call.path), data=data,
                                     headers=list(call.headers), skip_auto_headers=skip) as resp:
            raw = await resp.read()
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        return Answer(resp.status, raw, parsed)

    async def api(self, method: str, path: str, body: Any, token: str | None = ADMIN_TOKEN) -> Any:
        """Calls the control API during set-up; fails unless the answer is 2xx."""
        headers = (("Authorization", f"Bearer {token}"),) if token else ()
        answer = await self.send(Call(method, path, headers, orjson.dumps(body)))
        assert answer.status < 300, answer.raw
        return answer.json

    async def state(self) -> State:
        """Returns the current state of every table, topic and the audit log."""
        tables = {r["name"]: (r["n"], r["sum"]) for r in await self.pg.fetch(self.snapshot_sql)}
        mark = await self.pg.fetchval("SELECT coalesce(max(audit_id), 0) FROM audit_log")
        return State(tables, await self.topics.ends(), mark)

    async def audit_since(self, mark: int) -> list[tuple[str, str]]:
        """Returns (action, detail as text) of the audit entries written after `mark`."""
        rows = await self.pg.fetch("SELECT action, detail::text AS d FROM audit_log WHERE audit_id > $1 ORDER BY 1",
                                   mark)
        return [(r["action"], r["d"]) for r in rows]

    async def flush_activity(self) -> None:
        """Stores now what the receiver noted of deliveries (it does so once a second in the background)."""
        await store_webhook_activity(self.app[RECEIVER], self.app[STORE])

    async def settle(self, since: datetime) -> None:
        """Waits until the receiver's record of accepted deliveries since `since` is in Postgres.

        The web process stores `last_webhook_at` once a second in the background; storing it now
        (and waiting for a flush already under way) keeps that write out of the next row's window.
        """
        receiver = self.app[RECEIVER]
        await store_webhook_activity(receiver, self.app[STORE])

        async def stored() -> bool:
            latest = await self.pg.fetchval("SELECT max(last_webhook_at) FROM stripe_connections")
            return latest is not None and latest >= since and not receiver.last_delivery_at

        await wait_for(stored, 10, "the webhook activity to be stored")


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 64 * 1024):
        yield data[start:start + 64 * 1024]


def sweep_settings(platform: Platform, dsn: str, database: str, sim: SimServer) -> Settings:
    """Settings for the web process: fresh topics, the test database, the simulator, an admin token."""
    suffix = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(bootstrap_servers=platform.kafka.bootstrap_servers, raw_topic=f"test.raw.sweep.{suffix}",
                          dead_letter_topic=f"test.dlq.sweep.{suffix}", send_timeout_s=5.0)
    return Settings(
        kafka=kafka, postgres=PostgresSettings(dsn=dsn),  # type: ignore[arg-type]
        reader=ReaderSettings(dsn=postgres.reader_dsn(platform.cluster, database)),  # type: ignore[arg-type]
        receiver=ReceiverSettings(target_cache_ttl_s=0),
        vault=VaultSettings(master_keys=generate_master_key("k1")),  # type: ignore[arg-type]
        control=ControlSettings(admin_token=ADMIN_TOKEN),  # type: ignore[arg-type]
        stripe=StripeSettings(api_base=sim.base_url, retry_attempts=2, retry_initial_wait_s=0.05,
                              retry_max_wait_s=0.2),
    )


async def create_topics(kafka: KafkaSettings) -> None:
    """Creates the raw and dead-letter topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(kafka.raw_topic, RAW_PARTITIONS, 1), NewTopic(kafka.dead_letter_topic, 1, 1)])
    finally:
        await admin.close()


async def add_tenants(sweep: Sweep) -> None:
    """Creates "Acme" (test + live connections) and "Other" (test), each connection with a signing secret."""
    sim, account = sweep.sim, sweep.account
    for name, modes in (("Acme", ("test", "live")), ("Other", ("test",))):
        created = await sweep.api("POST", "/api/tenants", {"name": name})
        tenant, token = created["tenant_id"], created["api_token"]
        for mode in modes:
            key = sim.create_restricted_key(account, livemode=mode == "live")
            await sweep.api("POST", f"/api/tenants/{tenant}/connections", {"key": key}, token)
            secret = f"whsec_{name}{mode}" + uuid.uuid4().hex
            view = (await sweep.api("PUT", f"/api/tenants/{tenant}/connections/{mode}/webhook-secret",
                                    {"secret": secret}, token))["connection"]
            path = "/webhooks/stripe/" + view["webhook"]["url"].rsplit("/", 1)[1]
            label = mode if name == "Acme" else "other"
            sweep.endpoints[label] = Endpoint(tenant, view["connection_id"], path, secret, mode == "live")
        if name == "Acme":
            sweep.tenant, sweep.token = tenant, token
        else:
            sweep.other_tenant, sweep.other_token = tenant, token


def now_utc() -> datetime:
    """The wall clock, as the receiver reads it."""
    return datetime.now(timezone.utc)
