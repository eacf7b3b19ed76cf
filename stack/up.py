"""Brings up the platform the tests, the main job and the benchmarks share: Kafka, Postgres, schema, topics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg

from plumbing.settings import KafkaSettings, PostgresSettings
from service.admin import migrate_database, prepare
from stack import postgres
from stack.kafka import KafkaBroker
from stack.kafka_cluster import KafkaCluster
from stack.progress import say


@dataclass(frozen=True)
class Platform:
    """Addresses of the running broker and database server."""

    kafka: KafkaBroker | KafkaCluster
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


def bring_up(database: str = "ingestor", brokers: int = 1) -> Platform:
    """Starts the platform, migrates `database` and creates the default topics. With three brokers, Kafka is a
    cluster (stack/kafka_cluster.py) and the topics keep three replicas, two of them in sync for a write."""
    if brokers == 1:
        platform = start_platform()
    else:
        nodes = KafkaCluster(size=brokers)
        nodes.start()
        platform = Platform(nodes, postgres.start())
    say(asyncio.run(
        prepare(
            KafkaSettings(bootstrap_servers=platform.kafka.bootstrap_servers, replication_factor=min(3, brokers)),
            PostgresSettings(dsn=platform.postgres_dsn(database)),  # type: ignore[arg-type]
        )
    ))
    return platform


async def reset_database(conn: asyncpg.Connection) -> None:
    """Empties a test or benchmark database and migrates it afresh, with the tenant reader roles an
    earlier run made in it (roles belong to the server, not to a schema: they would pile up)."""
    if await conn.fetchval("SELECT to_regclass('analytics_private.reader_roles') IS NOT NULL"):
        await conn.execute("SELECT analytics_private.drop_reader_roles(t) "
                           "FROM (SELECT DISTINCT tenant_id AS t FROM analytics_private.reader_roles) r")
    await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; DROP SCHEMA IF EXISTS projection CASCADE; "
                       "DROP SCHEMA IF EXISTS analytics CASCADE; DROP SCHEMA IF EXISTS analytics_private CASCADE; "
                       "CREATE SCHEMA public;")
    await migrate_database(conn)
