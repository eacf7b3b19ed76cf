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

from bench.common import bench_settings, platform
from bench.load import LoadResult, closed_loop, open_loop
from bench.results import BenchResult, Figure, write_result
from ingestor.connection_store import PostgresConnectionStore
from ingestor.vault import MasterKeyring, generate_master_key
from plumbing.kafka import ensure_topics
from plumbing.settings import Settings
from stack import REPO_ROOT
from stack.progress import say

SECRET = "whsec_" + "b" * 32
STEP_SECONDS = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deliveries(count: int) -> list[tuple[bytes, dict[str, str]]]:
    """Distinct signed charge.succeeded deliveries (~3.7 KB each), signed now (valid for 5 minutes)."""
    fixture = json.loads((REPO_ROOT / "stripe_sim" / "data" / "fixtures.json").read_text()) if (
        REPO_ROOT / "stripe_sim" / "data" / "fixtures.json").exists() else {}
    charge = fixture.get("charge") or {"object": "charge", "amount": 2000, "currency": "usd", "status": "succeeded"}
    out = []
    now = int(time.time())
    for i in range(count):
        event = {"id": f"evt_bench{i:08d}", "object": "event", "api_version": "2025-03-31.basil", "created": now,
                 "livemode": False, "pending_webhooks": 1, "type": "charge.succeeded",
                 "request": {"id": f"req_{i}", "idempotency_key": None},
                 "data": {"object": {**charge, "id": f"ch_bench{i:08d}", "livemode": False,
                                     "description": "order 4242 4242 4242 4242"}}}
        body = json.dumps(event).encode()
        header = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET, now)
        out.append((body, {"Content-Type": "application/json", "Stripe-Signature": header}))
    return out


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


def start_receiver(settings: Settings, master: str, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ,
               INGESTOR_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
               INGESTOR_KAFKA__RAW_TOPIC=settings.kafka.raw_topic,
               INGESTOR_KAFKA__DEAD_LETTER_TOPIC=settings.kafka.dead_letter_topic,
               INGESTOR_POSTGRES__DSN=settings.postgres.dsn.get_secret_value(),
               INGESTOR_VAULT__MASTER_KEYS=master, INGESTOR_HTTP__PORT=str(port),
               INGESTOR_LOG__LEVEL="WARNING", INGESTOR_RECEIVER__TARGET_CACHE_TTL_S="30")
    return subprocess.Popen([sys.executable, "-m", "stack.cli", "web"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def describe(name: str, r: LoadResult) -> None:
    offered = f"offered {r.offered_per_s:,.0f}/s" if r.offered_per_s else "closed loop"
    say(f"{name}: {offered} → {r.achieved_per_s:,.0f} acked/s, p50 {r.percentile(50):.1f} ms, "
        f"p99 {r.percentile(99):.1f} ms ({r.ok}/{r.sent} ok)")


async def main() -> None:
    settings = await bench_settings(platform())
    await ensure_topics(settings.kafka)
    master = generate_master_key("bench")
    pool = await asyncpg.create_pool(settings.postgres.dsn.get_secret_value())
    store = PostgresConnectionStore(pool, MasterKeyring.from_setting(master))
    tenant_id, _ = await store.create_tenant("bench")
    connection_id, token = await store.create_connection(tenant_id, livemode=False)
    await store.add_webhook_secret(connection_id, SECRET, datetime.now(timezone.utc))
    await pool.close()
    signed = deliveries(5000)

    receiver_port, noop_port = free_port(), free_port()
    receiver = start_receiver(settings, master, receiver_port)
    noop = subprocess.Popen([sys.executable, "-m", "bench.noop_server", str(noop_port)], cwd=REPO_ROOT)
    rss: dict[str, float] = {}
    try:
        await wait_ready(f"http://127.0.0.1:{receiver_port}/readyz")
        await wait_ready(f"http://127.0.0.1:{noop_port}/healthz")
        target = f"http://127.0.0.1:{receiver_port}/webhooks/stripe/{token}"
        baseline = f"http://127.0.0.1:{noop_port}/webhooks/stripe/x"
        await closed_loop(target, signed, 16, 2.0)  # warm-up: connections, caches, producer batches
        steps = {}
        for rate in (250, 500, 1000, 2000):
            steps[rate] = await open_loop(target, signed, rate, STEP_SECONDS)
            describe("receiver", steps[rate])
        receiver_max = await closed_loop(target, signed, 64, STEP_SECONDS)
        describe("receiver max", receiver_max)
        noop_1000 = await open_loop(baseline, signed, 1000, STEP_SECONDS)
        describe("no-op", noop_1000)
        noop_max = await closed_loop(baseline, signed, 64, STEP_SECONDS)
        describe("no-op max", noop_max)
        for name, proc in (("receiver", receiver), ("no-op handler", noop)):
            with open(f"/proc/{proc.pid}/status") as status:
                rss[name] = next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM"))
    finally:
        for proc in (receiver, noop):
            proc.terminate()
            proc.wait(timeout=30)

    write_result(BenchResult(
        name="receiver_throughput",
        figures=[
            Figure("sustained acked events/s (64 in flight)", receiver_max.achieved_per_s, "events/s",
                   "no-op aiohttp handler", noop_max.achieved_per_s, ">= 3,000 events/s and >= 0.5 of the no-op baseline"),
            Figure("ack latency p50 at 1,000 events/s", steps[1000].percentile(50), "ms",
                   "no-op p50 at 1,000/s", noop_1000.percentile(50)),
            Figure("ack latency p99 at 1,000 events/s", steps[1000].percentile(99), "ms",
                   "no-op p99 at 1,000/s", noop_1000.percentile(99), "< 50 ms"),
            *[Figure(f"acked/s when offered {rate}/s", r.achieved_per_s, "events/s", notes=
                     f"p50 {r.percentile(50):.1f} ms, p99 {r.percentile(99):.1f} ms") for rate, r in steps.items()],
        ],
        peak_rss_mib=rss,
        notes="Load generator (aiohttp client) runs in the benchmark process on the same 2-core machine as the "
              "receiver, Kafka and Postgres; each 2xx means acks=all from the broker. Bodies ~3.5 KB, signed "
              "with the stripe library, card numbers in the description redacted before Kafka.",
    ))


if __name__ == "__main__":
    asyncio.run(main())
