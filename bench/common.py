"""What every benchmark needs: the local platform, a clean bench database, settings for it."""

from __future__ import annotations

import uuid

import asyncpg

from plumbing.settings import KafkaSettings, PostgresSettings, Settings
from stack import postgres
from stack.progress import say
from stack.up import Platform, reset_database, start_platform

BENCH_DATABASE = "ingestor_bench"
# A receiver benchmarked for the capacity of one process is sent one tenant's deliveries: its per-connection share
# (ingestor/receiver/shares.py, 200 a second by default) is lifted, or the figure would be the share.
UNBOUNDED_SHARE_ENV = {"INGESTOR_RECEIVER__SHARE_UNITS_PER_S": "1e9", "INGESTOR_RECEIVER__SHARE_BURST_UNITS": "1e9"}


async def bench_settings(platform: Platform, database: str = BENCH_DATABASE) -> Settings:
    """Returns settings for fresh topics and a freshly migrated bench database (created if missing)."""
    postgres.ensure_database(platform.cluster, database)
    dsn = platform.postgres_dsn(database)
    conn = await asyncpg.connect(dsn)
    try:
        await reset_database(conn)
    finally:
        await conn.close()
    suffix = uuid.uuid4().hex[:8]
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=platform.kafka.bootstrap_servers, raw_topic=f"bench.raw.{suffix}",
                            dead_letter_topic=f"bench.dlq.{suffix}", projector_group=f"bench-{suffix}"),
        postgres=PostgresSettings(dsn=dsn),  # type: ignore[arg-type]
    )


def platform() -> Platform:
    """Starts (or reuses) Kafka and Postgres."""
    say("bringing up the local platform for the benchmark…")
    return start_platform()
