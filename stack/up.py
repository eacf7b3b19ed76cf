"""Brings up the platform the tests, the main job and the benchmarks share: Kafka, Postgres, schema, topics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from plumbing.kafka import ensure_topics
from plumbing.migrations import apply_migrations
from plumbing.settings import KafkaSettings, PostgresSettings
from projections import MIGRATIONS_DIR
from projections.catalog import sync_catalog
from stack import postgres
from stack.kafka import KafkaBroker
from stack.progress import say


@dataclass(frozen=True)
class Platform:
    """Addresses of the running broker and database server."""

    kafka: KafkaBroker
    cluster: postgres.Cluster

    def postgres_dsn(self, database: str = "ingestor") -> str:
        """Returns the DSN of one of the project's databases."""
        return postgres.dsn(self.cluster, database)


def start_platform(kafka: KafkaBroker | None = None) -> Platform:
    """Starts (or reuses) Kafka and Postgres; returns where they are."""
    broker = kafka or KafkaBroker()
    cluster = postgres.start()
    broker.start()
    return Platform(broker, cluster)


async def prepare(kafka: KafkaSettings, pg: PostgresSettings) -> None:
    """Applies migrations and creates the topics named in the settings."""
    import asyncpg

    conn = await asyncpg.connect(pg.dsn.get_secret_value())
    try:
        applied = await apply_migrations(conn, MIGRATIONS_DIR)
        await sync_catalog(conn)
    finally:
        await conn.close()
    say(f"database schema up to date ({len(applied)} migration(s) applied)")
    await ensure_topics(kafka)
    say(f"topics ready: {kafka.raw_topic}, {kafka.dead_letter_topic}")


def bring_up(database: str = "ingestor") -> Platform:
    """Starts the platform, migrates `database` and creates the default topics."""
    platform = start_platform()
    asyncio.run(
        prepare(
            KafkaSettings(bootstrap_servers=platform.kafka.bootstrap_servers),
            PostgresSettings(dsn=platform.postgres_dsn(database)),  # type: ignore[arg-type]
        )
    )
    return platform
