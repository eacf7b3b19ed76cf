"""How we talk to Kafka: the one place aiokafka's defaults are overridden, the publisher, topic bootstrap.

aiokafka's defaults are unsafe for a product whose promise is "nothing acknowledged is lost":
acks=1, no idempotence, auto-commit on, and `auto_offset_reset="latest"`. Every client this
project builds gets its configuration from `producer_config` / `consumer_config` below.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, TopicAlreadyExistsError

from plumbing.partitioning import partition_for_key
from plumbing.settings import KafkaSettings

# Broker-side limit for one record; Stripe payloads are well under 1 MiB, the envelope adds little.
MAX_RECORD_BYTES = 2 * 1024 * 1024


class PublishError(Exception):
    """The broker did not acknowledge a record within the bound; the caller must not report success."""

    retriable = True


class RecordTooLargeError(PublishError):
    """A record is larger than the producer or the topic takes: sent again it is refused again, so it is not
    retried; send a smaller one."""

    retriable = False


def producer_config(settings: KafkaSettings, client_id: str) -> dict[str, Any]:
    """Returns the producer settings: acknowledged by all in-sync replicas, idempotent, bounded,
    keys partitioned exactly as by aiokafka's default (only faster)."""
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": settings.compression,
        "linger_ms": settings.linger_ms,
        "max_batch_size": settings.max_batch_size,
        "max_request_size": MAX_RECORD_BYTES,
        "request_timeout_ms": int(settings.send_timeout_s * 1000),
        "retry_backoff_ms": 100,
        "partitioner": partition_for_key,
    }


def consumer_config(settings: KafkaSettings, group_id: str, client_id: str) -> dict[str, Any]:
    """Returns the consumer settings: manual commits, start from the beginning, committed reads only."""
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": client_id,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_partition_fetch_bytes": MAX_RECORD_BYTES,
        "fetch_max_bytes": 16 * MAX_RECORD_BYTES,
        "max_poll_records": 2000,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": max(300, settings.session_timeout_ms // 3),
        "request_timeout_ms": 40_000,
        "retry_backoff_ms": 200,
    }


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record sits: topic, partition, offset."""

    topic: str
    partition: int
    offset: int


class KafkaPublisher:
    """Publishes records and returns only once the broker acknowledged them (acks=all)."""

    def __init__(self, settings: KafkaSettings, client_id: str = "ingestor"):
        self._settings = settings
        self._client_id = client_id
        self._timeout_s = settings.send_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def connected(self) -> bool:
        """Tells whether the producer is connected to the cluster."""
        return self._producer is not None

    async def start(self) -> None:
        """Connects to the cluster; raises PublishError if it is unreachable within the bound.

        A publisher that could not start retries on its next publish, so a process started
        while Kafka is down recovers by itself when Kafka comes back.
        """
        await self._start_producer()

    async def _start_producer(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is not None:
                return self._producer
            if self._closed:
                raise PublishError("publisher is stopped")
            producer = AIOKafkaProducer(**producer_config(self._settings, self._client_id))
            try:
                await asyncio.wait_for(producer.start(), self._timeout_s)
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                await producer.stop()
                raise PublishError(f"Kafka unreachable at {self._settings.bootstrap_servers}: {exc!r}") from exc
            self._producer = producer
            return producer

    async def stop(self) -> None:
        """Flushes what is buffered and disconnects; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        async with self._starting:
            if self._producer is not None:
                await self._producer.stop()
        for closing in list(self._closing):
            await closing

    async def __aenter__(self) -> KafkaPublisher:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def publish(self, topic: str, key: bytes, value: bytes, timeout_s: float | None = None) -> Position:
        """Sends one record and waits for its acknowledgement.

        Raises PublishError when the broker does not acknowledge within `timeout_s` (default
        `send_timeout_s`); the record may still arrive later (consumers dedupe). Cancellation
        abandons the wait only.
        """
        return (await self.publish_many(topic, [(key, value)], timeout_s))[0]

    async def publish_many(
        self, topic: str, records: Sequence[tuple[bytes, bytes]], timeout_s: float | None = None,
        key_hashes: Sequence[int] | None = None,
    ) -> list[Position]:
        """Sends records in order and waits until all are acknowledged; raises PublishError otherwise.

        `key_hashes`, one per record (`partitioning.key_hash` of its key), place each record where the partitioner
        would without hashing its key here: the importer's records come with them from its page pool.

        A producer that failed to get an acknowledgement is replaced for the next call: after a
        broker outage an idempotent producer whose batches expired can keep failing on sequence
        numbers, and a fresh producer (a new producer id) is the way out. Nothing it held was
        acknowledged to anyone, so nothing acknowledged is lost.

        A record over the size limit raises RecordTooLargeError (not retriable). The producer's own size check
        (`max_request_size`) refuses it before it is sent, and the producer is kept. A broker refusal (a topic
        with a smaller `max.message.bytes`) replaces the producer, as above.
        """
        bound = self._timeout_s if timeout_s is None else timeout_s
        producer: AIOKafkaProducer | None = None
        pending: list[asyncio.Future[Any]] = []
        sent = False  # every record handed to the producer (past its size check)
        try:
            async with asyncio.timeout(bound):  # no extra task per publish, unlike wait_for
                producer = self._producer or await self._start_producer()
                placed: list[int | None] = [None] * len(records)  # None: the producer's partitioner places it
                if key_hashes is not None:  # as the partitioner does (`partition_for_key`), in aiokafka's order
                    if len(key_hashes) != len(records):
                        raise ValueError(f"{len(key_hashes)} key hashes for {len(records)} records")
                    partitions = list(await producer.partitions_for(topic))
                    placed = [partitions[hashed % len(partitions)] for hashed in key_hashes]
                # Appended one by one: a send that fails lets go of those before it.
                for (key, value), partition in zip(records, placed):
                    pending.append(await producer.send(topic, value=value, key=key, partition=partition))
                sent = True
                # Awaited in turn, not gathered: a batch's acknowledgement resolves its records' futures at once,
                # so this wakes once per batch, where gather ran a callback per record (a tenth of publishing).
                acked = [await future for future in pending]
        except MessageSizeTooLargeError as exc:
            _let_go(pending)
            if sent:  # the broker refused a batch the producer had numbered: its sequence numbers are off now
                self._discard(producer)
            raise RecordTooLargeError(f"a record is larger than {topic} or the producer takes: {exc}") from exc
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            _let_go(pending)
            self._discard(producer)
            raise PublishError(
                f"Kafka did not acknowledge {len(records)} record(s) on {topic} within {bound:g}s: {exc!r}"
            ) from exc
        return [Position(md.topic, md.partition, md.offset) for md in acked]

    def _discard(self, producer: AIOKafkaProducer | None) -> None:
        """Drops a failed producer (once) and closes it in the background."""
        if producer is None or producer is not self._producer:
            return
        self._producer = None
        closing = asyncio.get_running_loop().create_task(self._close_quietly(producer))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def _close_quietly(self, producer: AIOKafkaProducer) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await producer.stop()
        except (KafkaError, OSError, asyncio.TimeoutError):
            pass  # the broker may still be away; the producer's records were never acknowledged


def _let_go(futures: Sequence[asyncio.Future[Any]]) -> None:
    """The records of a failed publish are not waited for: their failures are read (asyncio would log each one
    unread) and the rest cancelled (a record may still arrive; consumers dedupe)."""
    for future in futures:
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()


async def topic_end_offsets(settings: KafkaSettings, topic: str) -> dict[int, int]:
    """Returns the end offset (next offset to be written) of each partition of `topic`."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id="offsets")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [p["partition"] for p in described[0]["partitions"]] if described else []
    if not partitions:
        raise PublishError(f"topic {topic} does not exist")
    consumer = AIOKafkaConsumer(**consumer_config(settings, f"offsets-{topic}", "offsets"))
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def ensure_topics(settings: KafkaSettings) -> None:
    """Creates the raw-events and dead-letter topics if missing: never compacted, kept forever (for replay)."""
    keep_forever = {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        "retention.bytes": "-1",
        "max.message.bytes": str(MAX_RECORD_BYTES),
        "min.insync.replicas": str(min(2, settings.replication_factor)),
    }
    wanted = [
        NewTopic(settings.raw_topic, settings.raw_partitions, settings.replication_factor, topic_configs=keep_forever),
        NewTopic(
            settings.dead_letter_topic,
            settings.dead_letter_partitions,
            settings.replication_factor,
            topic_configs=keep_forever,
        ),
    ]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id="topic-bootstrap")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process created it between list and create
    finally:
        await admin.close()
