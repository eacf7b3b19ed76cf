"""Freshness: from a webhook delivery received to its charge visible in the revenue tables (p50/p99),
against Kafka's own produce → consume latency on the same broker, measured in the same run; and the same load
spread over 1,000 tenants (each delivery to another tenant's webhook URL) against one tenant's, same run.

Run: `.venv/bin/python -m bench.freshness`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import aiohttp
import asyncpg
import stripe
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import bench_settings, platform
from bench.load import LoadResult
from bench.receiver_throughput import SECRET, free_port, start_receiver, wait_ready
from bench.results import BenchResult, Figure, Target, peak_rss_mib, write_result
from ingestor.connections.store import PostgresConnectionStore
from ingestor.connections.tenant_store import PostgresTenantStore
from ingestor.connections.vault import MasterKeyring, generate_master_key
from plumbing.kafka import consumer_config, ensure_topics, producer_config
from plumbing.settings import ReaderSettings, Settings
from stack import REPO_ROOT
from stack.progress import say

DELIVERIES, RATE = 1000, 40.0  # one delivery per tenant in the spread run
SPREAD_TENANTS = 1000


async def connect_tenants(pool: asyncpg.Pool, master: str, count: int) -> list[tuple[str, str]]:
    """Creates `count` tenants, each with a test-mode connection and its signing secret; returns (tenant, token)."""
    store = PostgresConnectionStore(pool, MasterKeyring.from_setting(master))
    tenants = PostgresTenantStore(pool, MasterKeyring.from_setting(master), ReaderSettings())
    out = []
    for i in range(count):
        tenant_id, _ = await tenants.create_tenant(f"freshness {i}")
        connection_id, token = await store.create_connection(tenant_id, livemode=False)
        await store.add_webhook_secret(connection_id, SECRET, datetime.now(timezone.utc))
        out.append((tenant_id, token))
    return out


async def deliveries_seen(http: aiohttp.ClientSession, pool: asyncpg.Pool, urls: list[str], run: str) -> list[float]:
    """Sends DELIVERIES signed charge deliveries at RATE, the i-th to urls[i % len(urls)]; returns, per delivery,
    the milliseconds until its charge was visible in the revenue tables."""
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    seen: set[str] = set()

    async def deliver(i: int) -> None:
        charge_id = f"ch_{run}{i:06d}"
        now = int(time.time())
        event = {"id": f"evt_{run}{i:06d}", "object": "event", "api_version": "2025-03-31.basil", "created": now,
                 "livemode": False, "type": "charge.succeeded", "data": {"object": {
                     "id": charge_id, "object": "charge", "amount": 1000 + i, "amount_captured": 1000 + i,
                     "amount_refunded": 0, "captured": True, "currency": "usd", "status": "succeeded",
                     "created": now, "customer": "cus_fresh"}}}
        body = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(body, SECRET, now)
        sent_at[charge_id] = time.perf_counter()
        async with http.post(urls[i % len(urls)], data=body, headers={"Content-Type": "application/json",
                                                                       "Stripe-Signature": header}) as resp:
            if resp.status != 200:
                raise SystemExit(f"delivery {i} answered {resp.status}")

    async def watch() -> None:
        pending: set[str] = set()
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline and (pending or len(latencies) < DELIVERIES):
            pending = set(sent_at) - seen
            if pending:
                rows = await pool.fetch("SELECT id FROM projection.charges WHERE id = ANY($1)", list(pending))
                now = time.perf_counter()
                for r in rows:
                    seen.add(r["id"])
                    latencies.append((now - sent_at[r["id"]]) * 1000)
            await asyncio.sleep(0.01)  # polling the tables for visibility

    watcher = asyncio.create_task(watch())
    say(f"{run}: sending {DELIVERIES} signed deliveries at {RATE:.0f}/s to {len(urls)} tenant(s), watching the tables…")
    start = time.perf_counter()
    senders = []
    for i in range(DELIVERIES):
        await asyncio.sleep(max(0.0, start + i / RATE - time.perf_counter()))  # pacing the offered load
        senders.append(asyncio.create_task(deliver(i)))
    await asyncio.gather(*senders)
    await watcher
    return latencies


async def main() -> None:
    settings = await bench_settings(platform())
    await ensure_topics(settings.kafka)
    master = generate_master_key("fresh")
    pool = await asyncpg.create_pool(settings.postgres.dsn.get_secret_value(), min_size=1, max_size=3)
    say(f"connecting {SPREAD_TENANTS:,} tenants…")
    tenants = await connect_tenants(pool, master, SPREAD_TENANTS)
    port = free_port()
    receiver = start_receiver(settings, master, port)
    env = {"INGESTOR_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
           "INGESTOR_KAFKA__RAW_TOPIC": settings.kafka.raw_topic, "INGESTOR_KAFKA__DEAD_LETTER_TOPIC": settings.kafka.dead_letter_topic,
           "INGESTOR_KAFKA__PROJECTOR_GROUP": settings.kafka.projector_group,
           "INGESTOR_POSTGRES__DSN": settings.postgres.dsn.get_secret_value(), "INGESTOR_PROJECTOR__METRICS_PORT": "0",
           "INGESTOR_LOG__LEVEL": "WARNING", "PATH": "/usr/bin:/bin"}
    projector = subprocess.Popen([sys.executable, "-m", "service", "projector"], cwd=REPO_ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rss: dict[str, float] = {}
    try:
        await wait_ready(f"http://127.0.0.1:{port}/readyz")
        urls = [f"http://127.0.0.1:{port}/webhooks/stripe/{token}" for _, token in tenants]
        async with aiohttp.ClientSession() as http:
            # the spread run between two one-tenant runs, so warm-up and drift do not favour either side
            one = await deliveries_seen(http, pool, urls[:1], "fresh")
            spread = await deliveries_seen(http, pool, urls, "spread")
            one += await deliveries_seen(http, pool, urls[:1], "again")
        rss = {"receiver (web process)": peak_rss_mib(receiver.pid), "projector": peak_rss_mib(projector.pid)}
    finally:
        for proc in (receiver, projector):
            proc.terminate()
            proc.wait(timeout=30)
    say("measuring Kafka's own produce → consume latency…")
    baseline = await kafka_baseline(settings)
    await pool.close()
    fresh = LoadResult(RATE, 2 * DELIVERIES, len(one), 0.0, one)
    wide = LoadResult(RATE, DELIVERIES, len(spread), 0.0, spread)
    write_result(BenchResult(
        name="freshness",
        figures=[
            Figure("webhook received → visible in revenue tables, p50", fresh.percentile(50), "ms",
                   "Kafka produce→consume p50", baseline.percentile(50)),
            Figure("webhook received → visible in revenue tables, p99", fresh.percentile(99), "ms",
                   "Kafka produce→consume p99", baseline.percentile(99)),
            Figure(f"the same load spread over {SPREAD_TENANTS:,} tenants: visible p99", wide.percentile(99), "ms",
                   "one tenant's p99 (same run, before and after)", fresh.percentile(99), Target(ratio_at_most=1.2),
                   notes=f"p50 {wide.percentile(50):.1f} ms against {fresh.percentile(50):.1f} ms; every delivery to "
                         "another tenant's URL, so each is a webhook-target lookup the receiver's cache has not seen"),
        ],
        peak_rss_mib=rss,
        notes=f"{DELIVERIES} signed charge.succeeded deliveries at {RATE:.0f}/s per run (one tenant, then one to each of "
              f"{SPREAD_TENANTS:,} tenants, then one tenant again); visibility polled every 10 ms (adds up to 10 ms); "
              f"{len(one)} of {2 * DELIVERIES} and {len(spread)} of {DELIVERIES} seen.",
    ))


async def kafka_baseline(settings: Settings) -> LoadResult:
    """Produce (acks=all) → consume latency of one small record at a time, on a fresh topic."""

    topic = f"bench.latency.{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    result = LoadResult(None, 0, 0, 0.0, [])
    producer = AIOKafkaProducer(**producer_config(settings.kafka, "latency"))
    consumer = AIOKafkaConsumer(topic, **consumer_config(settings.kafka, f"latency-{topic}", "latency"))
    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up")
        while not any((await consumer.getmany(timeout_ms=1000)).values()):
            pass
        for _ in range(300):
            sent = time.perf_counter()
            await producer.send_and_wait(topic, b"x")
            while not any((await consumer.getmany(timeout_ms=1000)).values()):
                pass
            result.latencies_ms.append((time.perf_counter() - sent) * 1000)
            result.ok += 1
    finally:
        await consumer.stop()
        await producer.stop()
    return result


if __name__ == "__main__":
    asyncio.run(main())
