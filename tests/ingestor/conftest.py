"""Fixtures for the connection lifecycle, poller and importer tests: a Stripe simulator and the web app."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestServer

from ingestor.connections.store import PostgresConnectionStore
from ingestor.connections.vault import MasterKeyring, generate_master_key
from ingestor.sources.checkpoints import PostgresCheckpoints
from ingestor.stripe_api.readers import StripeReaders
from plumbing.logs import configure_logging
from plumbing.settings import ControlSettings, ImporterSettings, LogSettings, ReceiverSettings, Settings, StripeSettings
from schemas import Envelope, EnvelopeCodec
from service.web import create_ingest_app
from service.worker import Worker, open_worker
from stripe_sim import SimServer
from tests.helpers import consume_all, month_of
from tests.projections.support import mrr_figures, project_until_idle

ADMIN_TOKEN = "admin-" + "t" * 30


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[SimServer]:
    """A Stripe simulator on a free port, on real time (imports compute windows from the wall clock)."""
    async with SimServer(seed=5) as server:
        yield server


@pytest.fixture
def log_stream() -> Any:
    """Captures every log line (structlog and stdlib) of the test, through the secret-masking formatter."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(LogSettings(level="INFO", json_lines=True), stream)
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)


def ingest_settings(base: Settings, sim: SimServer, **stripe: Any) -> Settings:
    """Settings aimed at the simulator with quick retries (tests raise the simulator's rate limit)."""
    stripe_settings = StripeSettings(api_base=sim.base_url, retry_attempts=stripe.pop("retry_attempts", 8),
                                     retry_initial_wait_s=0.05, retry_max_wait_s=0.3, **stripe)
    return base.model_copy(update={
        "control": ControlSettings(admin_token=ADMIN_TOKEN),  # type: ignore[arg-type]
        "stripe": stripe_settings,
        "receiver": ReceiverSettings(target_cache_ttl_s=0),
        "importer": ImporterSettings(slice_lease_s=2.0),  # a killed importer's slices are taken over within 2 s
    })


@dataclass
class ControlClient:
    """The web app on a real port, with a JSON client that remembers every answer (for leak checks)."""

    settings: Settings
    server: TestServer
    http: aiohttp.ClientSession
    pool: asyncpg.Pool
    store: PostgresConnectionStore
    checkpoints: PostgresCheckpoints
    keyring: MasterKeyring
    readers: StripeReaders
    master_keys: str
    answers: list[bytes] = field(default_factory=list)

    async def call(self, method: str, path: str, token: str | None = ADMIN_TOKEN,
                   body: Any = None) -> tuple[int, Any]:
        """Sends one request; returns (status, parsed JSON)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = orjson.dumps(body) if body is not None else None
        async with self.http.request(method, self.server.make_url(path), data=data, headers=headers) as resp:
            raw = await resp.read()
            self.answers.append(raw)
            return resp.status, orjson.loads(raw) if raw else None

    async def tenant(self, name: str = "Acme") -> tuple[str, str]:
        """Creates a tenant; returns (tenant_id, tenant token)."""
        status, body = await self.call("POST", "/api/tenants", body={"name": name})
        assert status == 201, body
        return body["tenant_id"], body["api_token"]

    def url_path(self, webhook_url: str) -> str:
        """Returns the path of a webhook URL (the app's public base URL is not the test server's)."""
        return "/webhooks/stripe/" + webhook_url.rsplit("/", 1)[1]


@pytest.fixture
async def control(
    make_settings: Callable[..., Settings], create_topic: Callable[[str, int], Awaitable[None]],
    clean_database: str, sim: SimServer,
) -> AsyncIterator[ControlClient]:
    """The web process (receiver + control API) against the simulator, Kafka and Postgres."""
    settings = ingest_settings(make_settings(send_timeout_s=5.0), sim)
    await create_topic(settings.kafka.raw_topic, 3)
    master_keys = generate_master_key("k1")
    keyring = MasterKeyring.from_setting(master_keys)
    pool = await asyncpg.create_pool(clean_database, min_size=1, max_size=4)
    readers = StripeReaders(settings.stripe, pool=pool)  # budgets shared through Postgres, as in production
    server = TestServer(create_ingest_app(settings, keyring, readers=readers), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        yield ControlClient(settings, server, http, pool, PostgresConnectionStore(pool, keyring),
                            PostgresCheckpoints(pool), keyring, readers, master_keys)
    await server.close()
    await pool.close()


@pytest.fixture
async def worker(control: ControlClient) -> AsyncIterator[Worker]:
    """The poller and importer, sharing the web app's Stripe budgets (as in one process)."""
    async with open_worker(control.settings, control.keyring, control.readers) as w:
        yield w


async def connect(control: ControlClient, sim: SimServer, account: str, name: str = "Acme",
                  permissions: Any = None) -> tuple[str, str, str, str]:
    """Creates a tenant and connects a fresh restricted key; returns (tenant, token, connection id, key)."""
    tenant, token = await control.tenant(name)
    key = sim.create_restricted_key(account) if permissions is None else sim.create_restricted_key(account, permissions=permissions)
    status, body = await control.call("POST", f"/api/tenants/{tenant}/connections", token, {"key": key})
    assert status == 201, body
    return tenant, token, body["connection"]["connection_id"], key


async def published_envelopes(settings: Settings, minimum: int = 0, timeout_s: float = 30.0) -> list[Envelope]:
    """Reads the test's raw topic from the beginning (at least `minimum` records) and decodes it."""
    records = await consume_all(settings.kafka, settings.kafka.raw_topic, minimum, timeout_s)
    codec = EnvelopeCodec()
    return [codec.decode(value) for _, value in records]


def sim_objects(sim: SimServer, account: str) -> dict[str, set[str]]:
    """Returns the ids the simulator's list endpoints serve, per object type (deleted customers excluded)."""
    store = sim.state.accounts[account].store(False)
    out = {}
    for kind in ("customer", "charge", "subscription", "invoice", "payment_intent"):
        out[kind] = {o["id"] for o in store.all(kind) if not (kind == "customer" and o.get("deleted"))}
    return out


async def projected_mrr_is_the_ground_truth(control: ControlClient, sim: SimServer, account: str, tenant: str,
                                            expected: dict[str, float]) -> None:
    """Projects what was published: nothing refused, and this month's MRR per currency is the simulator's, which is
    `expected` (what the test is about)."""
    await project_until_idle(control.settings, control.pool)
    truth = sim.ground_truth(account)
    this_month = month_of(truth["as_of"])
    assert truth["mrr"][this_month] == expected
    async with control.pool.acquire() as conn:
        refused = await conn.fetch("SELECT reason, message FROM public.dead_lettered_events WHERE tenant_id = $1",
                                   tenant)
        mrr = await mrr_figures(conn, tenant)
    assert [dict(r) for r in refused] == []
    assert mrr.get(this_month) == truth["mrr"][this_month]
