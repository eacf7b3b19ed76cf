"""The whole product as separate processes (web, worker, projector) against an in-process Stripe
simulator, with the faults the suite injects and the checks it makes afterwards."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from plumbing.kafka import topic_end_offsets
from plumbing.settings import Settings
from stack.processes import Services, log_file
from stripe_sim import SimServer
from stripe_sim.billing import Book
from stripe_sim.generator import GeneratorConfig, generate
from stripe_sim.render import render_event
from tests.helpers import POLL_INTERVAL_S
from tests.projections.support import daily_figures, mrr_figures, subscriber_figures

READ_OBJECTS = {"customer", "charge", "subscription", "invoice", "payment_intent"}
ADMIN = "adm_fault_suite_0123456789"


def service_env(settings: Settings, master_keys: str, port: int, sim_url: str) -> dict[str, str]:
    """The environment every product process of the suite gets (its settings)."""
    return {
        "INGESTOR_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INGESTOR_KAFKA__RAW_TOPIC": settings.kafka.raw_topic,
        "INGESTOR_KAFKA__DEAD_LETTER_TOPIC": settings.kafka.dead_letter_topic,
        "INGESTOR_KAFKA__PROJECTOR_GROUP": settings.kafka.projector_group,
        "INGESTOR_KAFKA__SESSION_TIMEOUT_MS": "3000",
        "INGESTOR_KAFKA__SEND_TIMEOUT_S": "5",
        "INGESTOR_POSTGRES__DSN": settings.postgres.dsn.get_secret_value(),
        "INGESTOR_VAULT__MASTER_KEYS": master_keys,
        "INGESTOR_CONTROL__ADMIN_TOKEN": ADMIN,
        "INGESTOR_STRIPE__API_BASE": sim_url,
        "INGESTOR_STRIPE__TEST_REQUESTS_PER_SECOND": "200",
        "INGESTOR_STRIPE__TEST_LIMIT_PER_SECOND": "1000",  # the simulator's limits are raised to 1,000 too
        "INGESTOR_STRIPE__ENDPOINT_REQUESTS_PER_SECOND": "200",
        "INGESTOR_STRIPE__ENDPOINT_LIMIT_PER_SECOND": "1000",
        "INGESTOR_STRIPE__RETRY_ATTEMPTS": "30",
        "INGESTOR_STRIPE__RETRY_INITIAL_WAIT_S": "0.1",
        "INGESTOR_STRIPE__RETRY_MAX_WAIT_S": "1",
        "INGESTOR_HTTP__PORT": str(port),
        "INGESTOR_HTTP__PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "INGESTOR_RECEIVER__PUBLISH_TIMEOUT_S": "3",
        "INGESTOR_RECEIVER__RETRY_AFTER_S": "1",
        "INGESTOR_RECEIVER__TARGET_CACHE_TTL_S": "0",
        "INGESTOR_POLLER__INTERVAL_S": "2",
        "INGESTOR_POLLER__UNVERIFIED_INTERVAL_S": "2",
        "INGESTOR_IMPORTER__SCAN_INTERVAL_S": "0.5",
        "INGESTOR_IMPORTER__SLICE_LEASE_S": "2",  # a killed worker's slices are taken over within 2 s
        "INGESTOR_PROJECTOR__METRICS_PORT": "0",
        "INGESTOR_LOG__LEVEL": "WARNING",
    }


@dataclass
class Tenant:
    """One tenant connected to one simulated account."""

    tenant_id: str
    token: str
    account_id: str
    key: str
    endpoint_id: str = ""


@dataclass
class Product:
    """The product's processes, how to reach them, and what the suite checks."""

    settings: Settings
    env: dict[str, str]
    port: int
    sim: SimServer
    pool: asyncpg.Pool
    http: aiohttp.ClientSession
    services: Services = field(default_factory=Services)
    names: dict[str, list[str]] = field(default_factory=lambda: {
        "web": ["-m", "service", "web"], "worker": ["-m", "service", "worker"], "projector": ["-m", "service", "projector"]})

    def restart_worker(self, *args: str) -> None:
        """Replaces the worker process by one started with `args` (e.g. --no-poll); the suite's restarts keep them."""
        self.names["worker"] = ["-m", "service", "worker", *args]
        self.kill("worker")
        self.start("worker")

    async def applied_event_ids(self, tenant: Tenant) -> set[str]:
        """Returns the ids of the tenant's events the projector applied."""
        return {r["event_id"] for r in await self.pool.fetch(
            "SELECT event_id FROM projection.processed_events WHERE tenant_id = $1", tenant.tenant_id)}

    def acknowledged_deliveries(self, tenant: Tenant) -> set[str]:
        """Returns the event ids of the deliveries to the tenant's endpoint that were answered 2xx and are
        about the five resources we read (others are acknowledged and ignored, by design)."""
        store = self.sim.state.accounts[tenant.account_id].store(False)
        ours = {e["id"] for e in store.all("event") if render_event(e)["data"]["object"]["object"] in READ_OBJECTS}
        return {d.event_id for d in self.sim.deliveries() if d.endpoint_id == tenant.endpoint_id
                and d.event_id in ours and any(a.status is not None and 200 <= a.status < 300 for a in d.attempts)}

    def start(self, *names: str) -> None:
        for name in names or tuple(self.names):
            self.services.start(f"fault-{name}", self.names[name], self.env)

    def kill(self, name: str) -> None:
        """SIGKILLs one process (no cleanup, no flush) and forgets it."""
        for i, (label, proc) in enumerate(self.services.started):
            if label == f"fault-{name}":
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                del self.services.started[i]
                return
        raise KeyError(name)

    async def api(self, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> Any:
        async with self.http.request(method, f"http://127.0.0.1:{self.port}{path}", json=body,
                                     headers={"Authorization": f"Bearer {token}"}) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 300:
                raise AssertionError(f"{method} {path} → {resp.status} {data}")
            return data

    async def wait(self, what: str, check: Any, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.services.check_alive()
            try:
                result = await check()
            except (aiohttp.ClientError, OSError, AssertionError):
                result = None
            if result:
                return result
            await asyncio.sleep(POLL_INTERVAL_S * 4)
        raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")

    async def ready(self) -> None:
        async def up() -> bool:
            async with self.http.get(f"http://127.0.0.1:{self.port}/readyz") as resp:
                return resp.status == 200
        await self.wait("the web process", up, 60)

    async def connect(self, customers: int, seed: int, webhook: bool = True) -> Tenant:
        """A new account with its 12-month history, connected through the control API, its webhook set up (unless
        `webhook` is False: then only the poller and the import read it) and every event of the history delivered
        to it (a Dashboard resend), then the import started. Generated after the connection, the history's last 30
        days were backdated behind the first poll, which had read past them: no poll would list them, which Stripe's
        own events (made as they happen) never are."""
        account = self.sim.create_account(customers=0, seed=seed)
        self.sim.set_rate_limit(account.id, 1000)
        book = Book(self.sim.state, self.sim.state.accounts[account.id], False)
        generate(book, GeneratorConfig(customers, 12, ("usd", "eur", "jpy"), False), self.sim.clock.now())
        created = await self.api("POST", "/api/tenants", ADMIN, {"name": f"Fault Co {seed}"})
        tenant = Tenant(created["tenant_id"], created["api_token"], account.id, self.sim.create_restricted_key(account.id))
        t = f"/api/tenants/{tenant.tenant_id}"
        connected = await self.api("POST", f"{t}/connections", tenant.token, {"key": tenant.key})
        if webhook:
            url = connected["connection"]["webhook"]["url"]
            tenant.endpoint_id, secret = self.sim.add_webhook_endpoint(account.id, url)
            await self.api("PUT", f"{t}/connections/test/webhook-secret", tenant.token, {"secret": secret})
            self.sim.resend_events(tenant.endpoint_id)
        await self.api("POST", f"{t}/connections/test/import", tenant.token, {})
        return tenant

    async def import_progress(self, tenant: Tenant) -> Any:
        return await self.api("GET", f"/api/tenants/{tenant.tenant_id}/connections/test/import", tenant.token)

    async def import_done(self, tenant: Tenant) -> bool:
        return bool((await self.import_progress(tenant))["state"] == "done")

    async def why_no_progress(self, tenant: Tenant) -> str:
        """The tenant's import progress, and the tasks each process logs on SIGUSR1 (where each waits)."""
        try:
            progress = await self.import_progress(tenant)
        except (aiohttp.ClientError, OSError, AssertionError) as exc:
            progress = repr(exc)
        lines = [f"import progress: {progress}"]
        for label, proc in self.services.started:
            if proc.poll() is None:
                log = log_file(label)
                start = log.stat().st_size
                proc.send_signal(signal.SIGUSR1)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and b'"tasks logged"' not in log.read_bytes()[start:]:
                    await asyncio.sleep(POLL_INTERVAL_S)
                logged = log.read_bytes()[start:].decode(errors="replace").splitlines()
                lines += [f"{label}: {line}" for line in logged if '"task waiting"' in line or '"tasks logged"' in line]
        return "\n".join(lines)

    async def wait_or_explain(self, what: str, check: Any, timeout_s: float, tenant: Tenant) -> None:
        """`wait`, its failure holding what the import says of itself and where each process's tasks wait."""
        try:
            await self.wait(what, check, timeout_s)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{await self.why_no_progress(tenant)}") from None

    async def idle(self, tenant: Tenant, timeout_s: float = 240, polled: bool = True) -> float:
        """Waits until webhooks, the import, the poller (unless not `polled`) and the projector are all done; returns
        how long it took. The poller is done once a cycle that began after the last delivery ended: an event the
        receiver left to it (the key refused for its fill-in) is listed by then."""
        started = time.monotonic()
        await self.sim.wait_deliveries_idle(timeout_s)
        deliveries_done = datetime.fromtimestamp(math.ceil(time.time()), tz=timezone.utc)  # a cycle's start is whole
        await self.wait_or_explain("the import", lambda: self.import_done(tenant), timeout_s, tenant)
        if polled:
            async def polled_since() -> bool:  # every connection of the tenant
                return bool(await self.pool.fetchval(
                    "SELECT bool_and(last_poll_at IS NOT NULL AND last_poll_at >= $2) FROM stripe_connections "
                    "WHERE tenant_id = $1", tenant.tenant_id, deliveries_done))
            await self.wait_or_explain("a poll begun after the last delivery", polled_since, timeout_s, tenant)

        async def projected() -> bool:
            end = sum((await topic_end_offsets(self.settings.kafka, self.settings.kafka.raw_topic)).values())
            done = await self.pool.fetchval(
                "SELECT coalesce(sum(next_offset), 0) FROM projection.consumer_positions WHERE consumer_group = $1",
                self.settings.kafka.projector_group)
            return bool(done >= end)
        await self.wait_or_explain("the projector", projected, timeout_s, tenant)
        return time.monotonic() - started

    async def check(self, tenant: Tenant) -> dict[str, Any]:
        """Compares the tenant's tables with the simulator's ground truth; counts lost events."""
        store = self.sim.state.accounts[tenant.account_id].store(False)
        expected = {e["id"] for e in store.all("event") if render_event(e)["data"]["object"]["object"] in READ_OBJECTS}
        applied = {r["event_id"] for r in await self.pool.fetch(
            "SELECT event_id FROM projection.processed_events WHERE tenant_id = $1", tenant.tenant_id)}
        truth = self.sim.ground_truth(tenant.account_id)
        async with self.pool.acquire() as conn:
            daily, failed = await daily_figures(conn, tenant.tenant_id)
            mrr = await mrr_figures(conn, tenant.tenant_id)
            subscribers = await subscriber_figures(conn, tenant.tenant_id)
        expected_mrr = {m: {c: v for c, v in cur.items() if v > 0} for m, cur in truth["mrr"].items()}
        mismatched = {
            "daily": _diff(daily, truth["daily"]),
            "failed": _diff(failed, truth["failed"]),
            "mrr": _diff(mrr, {m: v for m, v in expected_mrr.items() if v}),
            "subscribers": _diff({m: subscribers.get(m) for m in truth["subscribers"]}, truth["subscribers"]),
        }
        over = sum(1 for kind in ("daily",) for day, per in daily.items() for cur, v in per.items()
                   if v["gross"] > truth["daily"].get(day, {}).get(cur, {}).get("gross", 0))
        return {"events": len(expected), "lost": len(expected - applied), "double_applied": over,
                "mismatched": {k: v for k, v in mismatched.items() if v}, "lost_ids": sorted(expected - applied)}

    def what_became_of(self, event_ids: list[str]) -> str:
        """For a failure message: each lost event's type, when it was made, and the answers its deliveries got."""
        events = {e["id"]: e for account in self.sim.state.accounts.values() for e in account.store(False).all("event")}
        lines = []
        for event_id in event_ids[:10]:
            event = events.get(event_id, {})
            answers = [f"{a.status}:{a.error}" for d in self.sim.deliveries() if d.event_id == event_id
                       for a in d.attempts]
            lines.append(f"{event_id} {event.get('type')} created {event.get('created')}: deliveries {answers}")
        return "\n".join(lines)


def _diff(ours: dict[str, Any], truth: dict[str, Any]) -> list[str]:
    keys = set(ours) | set(truth)
    return sorted(k for k in keys if ours.get(k) != truth.get(k))[:5]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def running_product(settings: Settings, dsn: str, seed: int, delivery_timeout_s: float,
                          env: dict[str, str] | None = None) -> AsyncIterator[Product]:
    """The product's processes (web, worker, projector) against a simulator of `seed` that redelivers like Stripe
    (duplicates, shuffled, retries for about a minute), with `env` over the suite's settings."""
    port = free_port()
    async with SimServer(seed=seed) as sim:
        sim.set_delivery(duplicates=0.3, shuffle=True, backoff=(0.2, 0.5, 1, 2, 4, 6, 8, 8, 8, 8, 8, 8),
                         timeout=delivery_timeout_s)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        async with aiohttp.ClientSession() as http:
            product = Product(settings, service_env(settings, master_keys(), port, sim.base_url) | (env or {}), port,
                              sim, pool, http)
            product.start()
            try:
                await product.ready()
                yield product
            finally:
                product.services.stop()
                await pool.close()


def master_keys() -> str:
    from ingestor.connections.vault import generate_master_key

    return generate_master_key("fault")


def scale() -> tuple[int, float]:
    """(customers per account, Kafka outage seconds): small for CI, full with FAULT_SUITE_FULL=1."""
    if os.environ.get("FAULT_SUITE_FULL") == "1":
        return 60, 30.0
    return 12, 8.0


def repo_log(name: str) -> Path:
    from stack.processes import log_file

    return log_file(f"fault-{name}")
