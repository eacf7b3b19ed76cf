"""Projector throughput: events/s from a pre-filled topic into Postgres with exactly-once on,
against inserting the same number of rows with COPY in the same run (the baseline).

Run: `.venv/bin/python -m bench.projector_throughput [--events 50000] [--database ingestor_bench]`
(the database is dropped and re-migrated: give each concurrent user their own).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from bench.common import BENCH_DATABASE, bench_settings, platform
from bench.results import BenchResult, Figure, Target, own_peak_rss_mib, write_result
from plumbing.kafka import KafkaPublisher
from plumbing.runtime import tune_gc
from plumbing.settings import Settings
from projections.projector.consumer import RevenueProjector
from projections.projector.metrics import ProjectorMetrics
from schemas import Envelope, EnvelopeCodec, envelope_key
from stack.progress import say
from stripe_sim import OLD_VERSION, SimServer
from tests.projections.support import history_envelopes


async def make_events(count: int) -> list[Envelope]:
    """Distinct events from simulated accounts (about 26 per customer-year)."""
    envelopes: list[Envelope] = []
    async with SimServer(seed=4242) as sim:
        while len(envelopes) < count:
            account = sim.create_account(api_version=OLD_VERSION, customers=500, months=12)
            envelopes += history_envelopes(sim, account.id, f"bench_{account.id[-6:]}")
            say(f"generated {len(envelopes):,} events")
    return envelopes[:count]


async def fill_topic(settings: Settings, envelopes: list[Envelope]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    await admin.create_topics([NewTopic(settings.kafka.raw_topic, 6, 1), NewTopic(settings.kafka.dead_letter_topic, 1, 1)])
    await admin.close()
    codec = EnvelopeCodec()
    async with KafkaPublisher(settings.kafka) as publisher:
        for start in range(0, len(envelopes), 2000):
            chunk = envelopes[start:start + 2000]
            await publisher.publish_many(settings.kafka.raw_topic,
                                         [(envelope_key(e.tenant_id, e.object_id), codec.encode(e)) for e in chunk])
            say(f"topic filled with {start + len(chunk):,} events")


async def measure_projector(settings: Settings, pool: asyncpg.Pool, total: int) -> float:
    async with KafkaPublisher(settings.kafka) as dead_letters:
        projector = RevenueProjector(settings.kafka, pool, dead_letters, ProjectorMetrics(CollectorRegistry()))
        await projector.start()
        done = 0
        started = time.perf_counter()

        def progress(n: int) -> None:
            nonlocal done
            done += n
            if done % 10_000 < n:
                say(f"projector: {done:,}/{total:,} events")

        await projector.run_until_idle(600, on_progress=progress)
        elapsed = time.perf_counter() - started
        await projector.stop()
    if projector.applied_events != total:
        raise SystemExit(f"projector applied {projector.applied_events} of {total} events")
    return total / elapsed


async def measure_copy(pool: asyncpg.Pool, envelopes: list[Envelope]) -> float:
    """COPY of the same rows (tenant, event id, object, payload as jsonb) into a plain table."""
    async with pool.acquire() as conn:
        await conn.execute("DROP TABLE IF EXISTS copy_baseline; CREATE TABLE copy_baseline (tenant_id text, event_id text, "
                           "object_type text, object_id text, payload jsonb, PRIMARY KEY (tenant_id, event_id))")
        rows = [(e.tenant_id, e.event_id, e.object_type, e.object_id, e.payload) for e in envelopes]
        started = time.perf_counter()
        for start in range(0, len(rows), 2000):
            await conn.copy_records_to_table("copy_baseline", records=rows[start:start + 2000])
        elapsed = time.perf_counter() - started
        await conn.execute("DROP TABLE copy_baseline")
    return len(rows) / elapsed


async def main(count: int, database: str) -> None:
    settings = await bench_settings(platform(), database)
    envelopes = await make_events(count)
    await fill_topic(settings, envelopes)
    pool = await asyncpg.create_pool(settings.postgres.dsn.get_secret_value(), min_size=1, max_size=4)
    # The generator's objects (simulator, 50,000 envelopes) are no part of a projector process:
    # keep the collector from walking them over and over while the projector runs.
    tune_gc()
    try:
        say("measuring the projector (exactly-once, one member)…")
        projector_rate = await measure_projector(settings, pool, len(envelopes))
        say("measuring the COPY baseline…")
        copy_rate = await measure_copy(pool, envelopes)
    finally:
        await pool.close()
    write_result(BenchResult(
        name="projector_throughput",
        figures=[Figure("projector events/s (exactly-once, 1 member)", projector_rate, "events/s",
                        "COPY of the same rows", copy_rate, Target(at_least=10_000, ratio_at_least=0.2))],
        peak_rss_mib={"bench process (projector + generator)": own_peak_rss_mib()},
        notes=f"{len(envelopes):,} distinct events from simulated 12-month accounts, 6 partitions; "
              "each batch: dedupe insert, collapsed upserts, history rows, positions, one transaction; "
              "the next batch decoded while it commits; generator objects frozen out of the GC.",
    ))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--database", default=BENCH_DATABASE, help="a database of the local Postgres (wiped)")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.database))
