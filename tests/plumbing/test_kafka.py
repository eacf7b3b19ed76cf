"""The publisher against the real broker: nothing lost, per-key order kept, bounded failure when down."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import DefaultPartitioner

from plumbing.errors import is_retriable
from plumbing.kafka import (
    MAX_RECORD_BYTES,
    KafkaPublisher,
    PublishError,
    consumer_config,
    ensure_topics,
    producer_config,
)
from plumbing.partitioning import key_hash
from plumbing.settings import KafkaSettings, Settings
from stack.up import Platform
from tests.helpers import consume_all

pytestmark = pytest.mark.integration


def test_unsafe_aiokafka_defaults_are_overridden() -> None:
    settings = KafkaSettings()
    produce = producer_config(settings, "x")
    assert produce["acks"] == "all" and produce["enable_idempotence"] is True
    consume = consumer_config(settings, "g", "x")
    assert consume["enable_auto_commit"] is False
    assert consume["auto_offset_reset"] == "earliest"
    assert consume["isolation_level"] == "read_committed"


async def test_ten_thousand_records_come_back_exactly_once_in_per_key_order(
    settings: Settings, create_topic: Callable[[str, int], Awaitable[None]]
) -> None:
    topic = settings.kafka.raw_topic
    await create_topic(topic, 6)
    keys = [f"tenant_a:cus_{i}".encode() for i in range(50)]
    sent = [(keys[i % len(keys)], f"{keys[i % len(keys)].decode()}#{i // len(keys)}".encode()) for i in range(10_000)]
    async with KafkaPublisher(settings.kafka) as publisher:
        for start in range(0, len(sent), 500):
            positions = await publisher.publish_many(topic, sent[start:start + 500])
            assert len(positions) == len(sent[start:start + 500])
    received = await consume_all(settings.kafka, topic, len(sent))
    assert len(received) == len(sent)
    assert sorted(received) == sorted(sent)
    per_key: dict[bytes, list[int]] = defaultdict(list)
    for key, value in received:
        per_key[key].append(int(value.split(b"#")[1]))
    assert all(seq == sorted(seq) for seq in per_key.values())


async def test_each_key_lands_in_the_partition_any_default_kafka_producer_would_choose(
    settings: Settings, create_topic: Callable[[str, int], Awaitable[None]]
) -> None:
    # The poller, the importer and the receiver must agree on a key's partition, and so must any
    # other producer left on aiokafka's (or the Java client's) default partitioner.
    topic = settings.kafka.raw_topic
    await create_topic(topic, 6)
    keys = [f"{uuid.uuid4()}:sub_{i}".encode() for i in range(300)]
    async with KafkaPublisher(settings.kafka) as publisher:
        positions = await publisher.publish_many(topic, [(key, b"v") for key in keys])
    partitions = list(range(6))
    expected = [DefaultPartitioner()(key, partitions, partitions) for key in keys]
    assert [p.partition for p in positions] == expected
    assert len(set(expected)) == 6


async def test_topics_are_created_once_never_compacted_and_kept_forever(settings: Settings) -> None:
    await ensure_topics(settings.kafka)
    await ensure_topics(settings.kafka)  # a second run is a no-op
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics([settings.kafka.raw_topic])
        assert len(described[0]["partitions"]) == settings.kafka.raw_partitions
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, settings.kafka.raw_topic)])
        values = {entry[0]: entry[1] for entry in configs[0].resources[0][4]}
        assert values["cleanup.policy"] == "delete"
        assert values["retention.ms"] == "-1"
    finally:
        await admin.close()


async def test_send_fails_within_the_bound_when_the_broker_is_down(
    make_settings: Callable[..., Settings], platform: Platform, create_topic: Callable[[str, int], Awaitable[None]]
) -> None:
    settings = make_settings(send_timeout_s=2.0)
    topic = settings.kafka.raw_topic
    await create_topic(topic, 1)
    publisher = KafkaPublisher(settings.kafka)
    await publisher.start()
    try:
        await publisher.publish(topic, b"k", b"before")
        await asyncio.to_thread(platform.kafka.stop)
        started = time.monotonic()
        with pytest.raises(PublishError, match="did not acknowledge 1 record"):
            await publisher.publish(topic, b"k", b"during")
        assert time.monotonic() - started < 2.0 + 1.0
    finally:
        await asyncio.to_thread(platform.kafka.start)
        await publisher.stop()
    # After the broker is back the same publisher works again.
    async with KafkaPublisher(settings.kafka) as fresh:
        await fresh.publish(topic, b"k", b"after", timeout_s=60)  # bounded wait while leaders are elected
    received = [v for _, v in await consume_all(settings.kafka, topic, 2, timeout_s=30)]
    assert b"before" in received and b"after" in received


async def test_records_given_their_keys_hashes_land_where_the_partitioner_puts_them(
    settings: Settings, create_topic: Callable[[str, int], Awaitable[None]]
) -> None:
    """The importer's page pool hashes the keys of its records; the partitions must be those of every other producer."""
    topic = f"{settings.kafka.raw_topic}.hashed"
    await create_topic(topic, 6)
    keys = [f"{uuid.uuid4()}:ch_{i}".encode() for i in range(300)]
    async with KafkaPublisher(settings.kafka) as publisher:
        hashed = await publisher.publish_many(topic, [(key, b"v") for key in keys],
                                              key_hashes=[key_hash(key) for key in keys])
    partitions = list(range(6))
    assert [p.partition for p in hashed] == [DefaultPartitioner()(key, partitions, partitions) for key in keys]
    assert len({p.partition for p in hashed}) == 6


async def test_a_record_too_large_is_refused_at_once_and_the_producer_is_kept(
    settings: Settings, create_topic: Callable[[str, int], Awaitable[None]]
) -> None:
    """A record over the size limit will never be acknowledged: the error says not to retry it, and the producer,
    which never sent it, goes on publishing (before, it was thrown away with every such record)."""
    topic = settings.kafka.raw_topic
    await create_topic(topic, 1)
    async with KafkaPublisher(settings.kafka) as publisher:
        await publisher.publish(topic, b"k", b"before")
        with pytest.raises(PublishError) as refused:
            await publisher.publish(topic, b"k", b"x" * MAX_RECORD_BYTES)
        assert not is_retriable(refused.value)
        assert publisher.connected
        await publisher.publish(topic, b"k", b"after")
    assert [v for _, v in await consume_all(settings.kafka, topic, 2, timeout_s=30)] == [b"before", b"after"]
