"""SIGKILL of the projector process at random points of a 50,000-event run leaves tables equal to a clean run."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from plumbing.kafka import KafkaPublisher, consumer_config
from plumbing.postgres import DatabaseUnavailableError, database_errors
from plumbing.settings import Settings
from projections.projector.consumer import RevenueProjector
from projections.projector.metrics import ProjectorMetrics
from projections.projector.store import PostgresProjectionStore
from stack import REPO_ROOT
from stripe_sim import OLD_VERSION, SimServer
from tests.helpers import FailsFirst, topic_size, wait_for
from tests.projections.support import dump, history_envelopes, project_until_idle, publish, shuffled_with_duplicates

pytestmark = pytest.mark.integration
KILLS = 10


def projector_process(settings: Settings) -> subprocess.Popen[bytes]:
    """Starts `python -m service projector` configured only through its environment, as in production."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "INGESTOR_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INGESTOR_KAFKA__RAW_TOPIC": settings.kafka.raw_topic,
        "INGESTOR_KAFKA__DEAD_LETTER_TOPIC": settings.kafka.dead_letter_topic,
        "INGESTOR_KAFKA__PROJECTOR_GROUP": settings.kafka.projector_group,
        "INGESTOR_KAFKA__SESSION_TIMEOUT_MS": "1500",
        "INGESTOR_POSTGRES__DSN": settings.postgres.dsn.get_secret_value(),
        "INGESTOR_PROJECTOR__METRICS_PORT": "0",
        "INGESTOR_PROJECTOR__MAX_BATCH_RECORDS": "500",
        "INGESTOR_LOG__LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "service", "projector"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def applied_offsets(pool: asyncpg.Pool, group: str) -> int:
    return int(await pool.fetchval(
        "SELECT coalesce(sum(next_offset), 0) FROM projection.consumer_positions WHERE consumer_group = $1", group))


async def test_sigkill_at_random_points_changes_nothing(
    make_settings: Callable[..., Settings], pool: asyncpg.Pool, create_topic: Callable[[str, int], Awaitable[None]],
) -> None:
    async with SimServer(seed=77) as sim:
        account = sim.create_account(api_version=OLD_VERSION, customers=1000, months=12, seed=99)
        base = history_envelopes(sim, account.id, "clean")
    base = shuffled_with_duplicates(base, seed=9, duplicate_share=0.9)[:50_000]
    assert len(base) == 50_000

    clean = make_settings()
    killed = make_settings()
    tenant = f"killed_{killed.kafka.projector_group[-8:]}"
    for s in (clean, killed):
        await create_topic(s.kafka.raw_topic, 4)
        await create_topic(s.kafka.dead_letter_topic, 1)
    await publish(clean, base)
    await publish(killed, [dataclasses.replace(e, tenant_id=tenant) for e in base])
    total = await topic_size(killed.kafka, killed.kafka.raw_topic)

    await project_until_idle(clean, pool, timeout_s=300)

    rng = random.Random(2024)
    group = killed.kafka.projector_group
    for kill in range(KILLS):
        before = await applied_offsets(pool, group)
        target = min(total, before + rng.randint(200, 4000))
        process = projector_process(killed)
        try:
            async def progressed() -> bool:
                if process.poll() is not None:
                    raise AssertionError(f"projector exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
                return await applied_offsets(pool, group) >= target
            await wait_for(progressed, timeout_s=120, what=f"projector progress before kill {kill + 1}")
        finally:
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait)
    assert await applied_offsets(pool, group) < total, "the run finished before the last kill; kill earlier"

    process = projector_process(killed)
    try:
        async def caught_up() -> bool:
            return await applied_offsets(pool, group) == total
        await wait_for(caught_up, timeout_s=300, what="the restarted projector to catch up")
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0

    distinct = len({e.event_id for e in base})
    assert await pool.fetchval("SELECT count(*) FROM projection.processed_events WHERE tenant_id = $1", tenant) == distinct
    async with pool.acquire() as conn:
        assert await dump(conn, tenant) == await dump(conn, "clean")


async def test_a_connection_broken_as_a_batch_commits_is_retried_and_counts_once(
    make_settings: Callable[..., Settings], pool: asyncpg.Pool, create_topic: Callable[[str, int], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # When Postgres restarts, a pooled connection can break just as its transaction ends: the pool then
    # fails to reset it with asyncpg's InternalClientError ("cannot switch to state 15; another operation
    # is in progress"). The fault suite's Postgres restart once killed the projector this way. The batch
    # must be retried (on a fresh connection), and applying it a second time must change nothing.
    async with SimServer(seed=31) as sim:
        account = sim.create_account(api_version=OLD_VERSION, customers=15, months=6, seed=4)
        base = history_envelopes(sim, account.id, "t")
    clean, broken = make_settings(), make_settings()
    clean_tenant, tenant = f"clean_{clean.kafka.projector_group[-8:]}", f"broken_{broken.kafka.projector_group[-8:]}"
    for s in (clean, broken):
        await create_topic(s.kafka.raw_topic, 2)
        await create_topic(s.kafka.dead_letter_topic, 1)
    await publish(clean, [dataclasses.replace(e, tenant_id=clean_tenant) for e in base])
    await publish(broken, [dataclasses.replace(e, tenant_id=tenant) for e in base])
    await project_until_idle(clean, pool)

    real_apply = PostgresProjectionStore.apply
    failures = 0

    async def apply_then_break(self: PostgresProjectionStore, *args: Any, **kwargs: Any) -> Any:
        nonlocal failures
        applied = await real_apply(self, *args, **kwargs)  # committed...
        if failures < 3:
            failures += 1  # ...but the connection broke on its way back to the pool, inside the store
            with database_errors():
                raise asyncpg.exceptions.InternalClientError("cannot switch to state 15; another operation (2) is in progress")
        return applied

    monkeypatch.setattr(PostgresProjectionStore, "apply", apply_then_break)
    await project_until_idle(broken, pool)
    assert failures == 3
    distinct = len({e.event_id for e in base})
    assert await pool.fetchval("SELECT count(*) FROM projection.processed_events WHERE tenant_id = $1", tenant) == distinct
    async with pool.acquire() as conn:
        assert await dump(conn, tenant) == await dump(conn, clean_tenant)


async def test_positions_unreadable_while_postgres_restarts_are_waited_for_not_a_stop_and_nothing_is_skipped(
    make_settings: Callable[..., Settings], pool: asyncpg.Pool, create_topic: Callable[[str, int], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Kafka back after an outage rebalances the group, often while Postgres restarts too. The seek to the positions
    # stored in Postgres on assignment then failed (aiokafka logs it and goes on: the partition starts where Kafka's
    # convenience commit is, after the stored position); the batch read from there is refused as a gap, and the seek
    # back failed as well, which stopped the projector (the fault suite's projector exited with code 1).
    async with SimServer(seed=32) as sim:
        account = sim.create_account(customers=10, months=4, seed=5)
        base = history_envelopes(sim, account.id, "t")
    settings = make_settings()
    tenant = f"gap_{settings.kafka.projector_group[-8:]}"
    events = [dataclasses.replace(e, tenant_id=tenant) for e in base]
    half = len(events) // 2
    await create_topic(settings.kafka.raw_topic, 1)
    await create_topic(settings.kafka.dead_letter_topic, 1)
    await publish(settings, events[:half])
    await project_until_idle(settings, pool)  # stored (and committed to Kafka) at `half`
    await publish(settings, events[half:])
    partition = TopicPartition(settings.kafka.raw_topic, 0)
    ahead = AIOKafkaConsumer(**consumer_config(settings.kafka, settings.kafka.projector_group, "ahead"))
    ahead.assign([partition])
    await ahead.start()
    try:
        await ahead.commit({partition: half + 10})  # Kafka's commit is only a convenience; Postgres holds the truth
    finally:
        await ahead.stop()

    postgres_restarting = FailsFirst(PostgresProjectionStore.positions, 4,
                                     lambda: DatabaseUnavailableError("Postgres unavailable: CannotConnectNowError"))
    monkeypatch.setattr(PostgresProjectionStore, "positions", postgres_restarting)
    await project_until_idle(settings, pool)
    assert postgres_restarting.failed == 4
    distinct = len({e.event_id for e in events})
    assert await pool.fetchval("SELECT count(*) FROM projection.processed_events WHERE tenant_id = $1", tenant) == distinct


async def test_a_stop_while_postgres_is_away_ends_the_wait_and_applies_nothing_of_the_batch(
    settings: Settings, pool: asyncpg.Pool, create_topic: Callable[[str, int], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM during an outage: the projector stops (its batch is read again later) instead of waiting for Postgres
    until the process manager kills it."""
    async with SimServer(seed=33) as sim:
        account = sim.create_account(customers=3, months=2, seed=6)
        base = history_envelopes(sim, account.id, "t")
    tenant = f"stop_{settings.kafka.projector_group[-8:]}"
    await create_topic(settings.kafka.raw_topic, 1)
    await create_topic(settings.kafka.dead_letter_topic, 1)
    await publish(settings, [dataclasses.replace(e, tenant_id=tenant) for e in base])
    postgres_away = asyncio.Event()

    async def apply_while_postgres_is_away(self: PostgresProjectionStore, *args: Any, **kwargs: Any) -> Any:
        postgres_away.set()
        with database_errors():
            raise asyncpg.exceptions.CannotConnectNowError("the database system is shutting down")

    monkeypatch.setattr(PostgresProjectionStore, "apply", apply_while_postgres_is_away)
    async with KafkaPublisher(settings.kafka, client_id="test-dlq") as dead_letters:
        projector = RevenueProjector(settings.kafka, pool, dead_letters, ProjectorMetrics(CollectorRegistry()))
        await projector.start()
        stop = asyncio.Event()
        try:
            running = asyncio.create_task(projector.run(stop))
            await asyncio.wait_for(postgres_away.wait(), 30)
            stop.set()
            await asyncio.wait_for(running, 20)  # returns, without raising
        finally:
            await projector.stop()
    assert projector.applied_events == 0
    assert await pool.fetchval("SELECT count(*) FROM projection.processed_events WHERE tenant_id = $1", tenant) == 0
