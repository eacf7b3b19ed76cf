"""Session fixtures: one real Kafka broker and one real PostgreSQL server for the whole test run.

The local-stack launcher starts them (or reuses running ones) when the first test that needs them
runs, so the unit tests (`-m "not integration"`) run with neither. Tests get settings objects built
here — never from os.environ — pointing at a test database and at topics unique to each test.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from hypothesis import settings as hypothesis_settings

from plumbing.settings import KafkaSettings, PostgresSettings, ReaderSettings, Settings
from stack import postgres
from stack.up import Platform, reset_database, start_platform

# Property tests check what they draw, not how fast: hypothesis's 200 ms per example would fail a run on a loaded
# or slower machine (a test may still set its own draws).
hypothesis_settings.register_profile("ingestor", deadline=None)
hypothesis_settings.load_profile("ingestor")

# Another session working in the same checkout can give its test run a database of its own.
TEST_DATABASE = os.environ.get("TEST_DATABASE_NAME", "ingestor_test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test that uses the broker or the server `integration`, so `-m "not integration"`
    runs without Kafka and Postgres whatever a test's author remembered to mark."""
    for item in items:
        if "platform" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


# Topics tests create; a session deletes those earlier sessions left on the local broker, which
# otherwise grows by hundreds of partitions a run and restarts ever more slowly. Sessions run side by side on one
# broker set TEST_KEEP_LEFTOVER_TOPICS=1 in all but the first: the deletion would take another's topics mid-test.
TEST_TOPIC_PREFIXES = ("test.", "faults.", "bench.")


@pytest.fixture(scope="session")
def platform() -> Iterator[Platform]:
    """Starts (or reuses) the local Kafka broker and PostgreSQL server."""
    platform = start_platform()
    if not os.environ.get("TEST_KEEP_LEFTOVER_TOPICS"):
        asyncio.run(_delete_leftover_topics(platform.kafka.bootstrap_servers))
    yield platform


async def _delete_leftover_topics(bootstrap_servers: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        leftovers = [t for t in await admin.list_topics() if t.startswith(TEST_TOPIC_PREFIXES)]
        for start in range(0, len(leftovers), 100):
            await admin.delete_topics(leftovers[start:start + 100])
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def clean_database(platform: Platform) -> str:
    """Recreates the test database's schema from the migrations; returns its DSN."""
    postgres.ensure_database(platform.cluster, TEST_DATABASE)
    dsn = platform.postgres_dsn(TEST_DATABASE)
    conn = await asyncpg.connect(dsn)
    try:
        await reset_database(conn)
    finally:
        await conn.close()
    return dsn


@pytest.fixture
def make_settings(platform: Platform, clean_database: str) -> Callable[..., Settings]:
    """Factory: settings for the real broker and test database, with fresh topics unless given."""

    def make(**kafka_overrides: object) -> Settings:
        suffix = uuid.uuid4().hex[:8]
        kafka = KafkaSettings(
            bootstrap_servers=platform.kafka.bootstrap_servers,
            raw_topic=f"test.raw.{suffix}",
            dead_letter_topic=f"test.dlq.{suffix}",
            projector_group=f"test-projector-{suffix}",
            **kafka_overrides,  # type: ignore[arg-type]
        )
        return Settings(kafka=kafka, postgres=PostgresSettings(dsn=clean_database),  # type: ignore[arg-type]
                        reader=ReaderSettings(dsn=postgres.reader_dsn(platform.cluster, TEST_DATABASE)))  # type: ignore[arg-type]

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Settings with fresh topic names (not yet created)."""
    return make_settings()


@pytest.fixture
async def pg(clean_database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test database."""
    conn = await asyncpg.connect(clean_database)
    yield conn
    await conn.close()


@pytest.fixture
def create_topic(platform: Platform) -> Callable[[str, int], Awaitable[None]]:
    """Factory: creates a topic on the real broker."""

    async def create(name: str, partitions: int = 1) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=platform.kafka.bootstrap_servers)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            await admin.close()

    return create
