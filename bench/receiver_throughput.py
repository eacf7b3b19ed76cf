"""Webhook receiver under load: signed deliveries at rising rates against a running receiver process
on the real broker (durable before 2xx), against a no-op aiohttp handler measured in the same run.

Run: `.venv/bin/python -m bench.receiver_throughput`.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone

import aiohttp
import asyncpg
import stripe

from bench.common import UNBOUNDED_SHARE_ENV, bench_settings, platform
from bench.load import LoadResult, closed_loop, open_loop
from bench.results import BenchResult, Figure, Target, peak_rss_mib, write_result
from ingestor.connections.store import PostgresConnectionStore
from ingestor.connections.tenant_store import PostgresTenantStore
from ingestor.connections.vault import MasterKeyring, generate_master_key
from plumbing.kafka import ensure_topics
from plumbing.settings import ReaderSettings, Settings
from stack import REPO_ROOT
from stack.progress import say
from stripe_sim.objects import template

SECRET = "whsec_" + "b" * 32
STEP_SECONDS = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The mix of a subscription business's webhook traffic, one event type per resource we read; Stripe's
# own example objects (stripe_sim/data/fixtures.json, from fixtures3.json) give the shapes.
MIXED_EVENT_TYPES = (
    ("customer", "customer.updated"),
    ("charge", "charge.succeeded"),
    ("invoice", "invoice.paid"),
    ("payment_intent", "payment_intent.succeeded"),
    ("subscription", "customer.subscription.updated"),
)
CARD_NUMBER_TEXT = "order 4242 4242 4242 4242"  # a card number typed into a description: masked before Kafka


def signed_delivery(event: dict[str, object], now: int, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    """Returns one delivery as Stripe sends it: the JSON body and its headers, signed with `secret` at `now`."""
    body = json.dumps(event, indent=2).encode()  # Stripe's bodies are pretty-printed
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, now)
    return body, {"Content-Type": "application/json", "Stripe-Signature": header}


def stripe_event(number: int, event_type: str, obj: dict[str, object], now: int) -> dict[str, object]:
    """Returns event `number` about `obj` (given a unique id), in the shape of a Stripe event."""
    prefix = str(obj.get("id", "obj_")).split("_")[0]
    return {"id": f"evt_bench{number:08d}", "object": "event", "api_version": "2025-03-31.basil",
            "created": now, "livemode": False, "pending_webhooks": 1, "type": event_type,
            "request": {"id": f"req_{number}", "idempotency_key": None},
            "data": {"object": {**obj, "id": f"{prefix}_bench{number:08d}", "livemode": False}}}


def mixed_deliveries(count: int) -> list[tuple[bytes, dict[str, str]]]:
    """Distinct signed deliveries cycling through the five resources (1–5 KB each); every charge
    has a card object and a card number in its description (a fifth of all deliveries)."""
    now = int(time.time())
    out = []
    for number in range(count):
        resource, event_type = MIXED_EVENT_TYPES[number % len(MIXED_EVENT_TYPES)]
        obj = dict(template(resource))
        if resource == "charge":
            obj["description"] = CARD_NUMBER_TEXT
        out.append(signed_delivery(stripe_event(number, event_type, obj, now), now))
    return out


def worst_case_deliveries(count: int) -> list[tuple[bytes, dict[str, str]]]:
    """Distinct signed charge.succeeded deliveries, each with a card object to reduce and a card number
    to mask: the most work per delivery for the receiver."""
    charge = template("charge")
    now = int(time.time())
    return [signed_delivery(stripe_event(n, "charge.succeeded", {**charge, "description": CARD_NUMBER_TEXT}, now), now)
            for n in range(count)]


async def wait_ready(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)  # polling a readiness condition with a deadline
    raise SystemExit(f"{url} not ready after {timeout_s}s")


def start_receiver(settings: Settings, master: str, port: int,
                   share_env: dict[str, str] = UNBOUNDED_SHARE_ENV) -> subprocess.Popen[bytes]:
    """Starts a web process on `port`; each connection's share of its work lifted unless `share_env` says otherwise."""
    env = dict(os.environ,
               INGESTOR_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
               INGESTOR_KAFKA__RAW_TOPIC=settings.kafka.raw_topic,
               INGESTOR_KAFKA__DEAD_LETTER_TOPIC=settings.kafka.dead_letter_topic,
               INGESTOR_POSTGRES__DSN=settings.postgres.dsn.get_secret_value(),
               INGESTOR_VAULT__MASTER_KEYS=master, INGESTOR_HTTP__PORT=str(port),
               INGESTOR_LOG__LEVEL="WARNING", INGESTOR_RECEIVER__TARGET_CACHE_TTL_S="30", **share_env)
    return subprocess.Popen([sys.executable, "-m", "service", "web"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def describe(name: str, r: LoadResult) -> None:
    offered = f"offered {r.offered_per_s:,.0f}/s" if r.offered_per_s else "closed loop"
    say(f"{name}: {offered} → {r.achieved_per_s:,.0f} acked/s, p50 {r.percentile(50):.1f} ms, "
        f"p99 {r.percentile(99):.1f} ms ({r.ok}/{r.sent} ok)")


def cpu_seconds(pid: int) -> float:
    """Returns the CPU time (user + system) process `pid` has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def saturate(name: str, url: str, signed: list[tuple[bytes, dict[str, str]]], pid: int) -> tuple[LoadResult, float]:
    """Runs the closed loop against `url`; returns its result and the server's CPU µs per answered request."""
    before = cpu_seconds(pid)
    result = await closed_loop(url, signed, 64, STEP_SECONDS)
    cpu_us = (cpu_seconds(pid) - before) / max(1, result.ok) * 1e6
    describe(name, result)
    say(f"{name}: server CPU {cpu_us:,.0f} µs per request")
    return result, cpu_us


async def connected_tenant(settings: Settings, master: str) -> str:
    """Creates a tenant with a test-mode connection signed with SECRET; returns its webhook URL token."""
    pool = await asyncpg.create_pool(settings.postgres.dsn.get_secret_value())
    try:
        store = PostgresConnectionStore(pool, MasterKeyring.from_setting(master))
        tenant_id, _ = await PostgresTenantStore(pool, MasterKeyring.from_setting(master), ReaderSettings()).create_tenant("bench")
        connection_id, token = await store.create_connection(tenant_id, livemode=False)
        await store.add_webhook_secret(connection_id, SECRET, datetime.now(timezone.utc))
    finally:
        await pool.close()
    return token


async def main() -> None:
    settings = await bench_settings(platform())
    await ensure_topics(settings.kafka)
    master = generate_master_key("bench")
    token = await connected_tenant(settings, master)
    mixed, worst = mixed_deliveries(5000), worst_case_deliveries(2000)

    receiver_port, noop_port, floor_port = free_port(), free_port(), free_port()
    receiver = start_receiver(settings, master, receiver_port)
    noop = subprocess.Popen([sys.executable, "-m", "bench.noop_server", str(noop_port)], cwd=REPO_ROOT)
    floor = subprocess.Popen([sys.executable, "-m", "bench.library_floor_server", str(floor_port),
                              settings.kafka.bootstrap_servers, settings.kafka.raw_topic], cwd=REPO_ROOT,
                             env=dict(os.environ, BENCH_WEBHOOK_SECRET=SECRET))
    rss: dict[str, float] = {}
    try:
        await wait_ready(f"http://127.0.0.1:{receiver_port}/readyz")
        await wait_ready(f"http://127.0.0.1:{noop_port}/healthz")
        await wait_ready(f"http://127.0.0.1:{floor_port}/healthz")
        target = f"http://127.0.0.1:{receiver_port}/webhooks/stripe/{token}"
        baseline = f"http://127.0.0.1:{noop_port}/webhooks/stripe/x"
        library_floor = f"http://127.0.0.1:{floor_port}/webhooks/stripe/x"
        for url in (target, baseline, library_floor):  # warm-up: connections, caches, producer batches
            await closed_loop(url, mixed, 16, 2.0)
        steps = {}
        for rate in (250, 500, 1000, 2000):
            steps[rate] = await open_loop(target, mixed, rate, STEP_SECONDS)
            describe("receiver", steps[rate])
        receiver_max, receiver_cpu = await saturate("receiver max (mixed)", target, mixed, receiver.pid)
        worst_max, worst_cpu = await saturate("receiver max (worst case)", target, worst, receiver.pid)
        noop_1000 = await open_loop(baseline, mixed, 1000, STEP_SECONDS)
        describe("no-op", noop_1000)
        noop_max, noop_cpu = await saturate("no-op max", baseline, mixed, noop.pid)
        floor_max, floor_cpu = await saturate("library floor max", library_floor, mixed, floor.pid)
        for name, proc in (("receiver", receiver), ("no-op handler", noop), ("library floor", floor)):
            rss[name] = peak_rss_mib(proc.pid)
    finally:
        for proc in (receiver, noop, floor):
            proc.terminate()
            proc.wait(timeout=30)

    noop_name = "no-op aiohttp handler (same runtime)"
    write_result(BenchResult(
        name="receiver_throughput",
        figures=[
            Figure("sustained acked events/s (64 in flight, mixed deliveries)", receiver_max.achieved_per_s,
                   "events/s", noop_name, noop_max.achieved_per_s,
                   Target(at_least=3000, ratio_at_least=0.5)),
            Figure("sustained acked events/s (64 in flight, worst case: charges with a card number)",
                   worst_max.achieved_per_s, "events/s", noop_name, noop_max.achieved_per_s, Target(at_least=3000)),
            Figure("receiver CPU per delivery (mixed)", receiver_cpu, "µs", "no-op CPU per request", noop_cpu,
                   notes="server process CPU time ÷ answered requests; independent of the load generator's speed"),
            Figure("receiver CPU per delivery (worst case)", worst_cpu, "µs", "no-op CPU per request", noop_cpu),
            Figure("library floor: acked events/s (64 in flight, mixed)", floor_max.achieved_per_s, "events/s",
                   noop_name, noop_max.achieved_per_s,
                   notes="aiohttp + stripe signature + orjson + fastavro + aiokafka acks=all, nothing of ours: "
                         "the best ratio a receiver on these libraries can reach here"),
            Figure("library floor CPU per delivery (mixed)", floor_cpu, "µs", "no-op CPU per request", noop_cpu),
            Figure("receiver vs library floor (mixed)", receiver_max.achieved_per_s, "events/s",
                   "library floor", floor_max.achieved_per_s,
                   notes="what our own code (lookup, checks, redaction, metrics, bounds) leaves of the floor"),
            Figure("ack latency p50 at 1,000 events/s", steps[1000].percentile(50), "ms",
                   "no-op p50 at 1,000/s", noop_1000.percentile(50)),
            Figure("ack latency p99 at 1,000 events/s", steps[1000].percentile(99), "ms",
                   "no-op p99 at 1,000/s", noop_1000.percentile(99), Target(at_most=50)),
            *[Figure(f"acked/s when offered {rate}/s", r.achieved_per_s, "events/s", notes=
                     f"p50 {r.percentile(50):.1f} ms, p99 {r.percentile(99):.1f} ms") for rate, r in steps.items()],
        ],
        peak_rss_mib=rss,
        notes="Load generator (aiohttp client, 64 connections) runs in the benchmark process on the same 2-core "
              "machine as the receiver, Kafka and Postgres; each 2xx means acks=all from the broker. Mixed "
              "deliveries cycle customer.updated, charge.succeeded, invoice.paid, payment_intent.succeeded and "
              "customer.subscription.updated (Stripe's example objects, pretty-printed bodies of 1.2–4.2 KB); "
              "every charge has a card object to reduce and a card number in its description (masked before "
              "Kafka). The worst case sends only such charges (4.0 KB). The no-op handler runs on the same "
              "runtime (uvloop, GC tuning); at full speed it is limited by the load generator, which then uses "
              "a whole core.",
    ))


if __name__ == "__main__":
    asyncio.run(main())
