"""The one raw-event publisher of the write path: envelope → key → Avro → the raw topic, acknowledged.

The receiver, the poller and the importer all publish through `RawEventPublisher`, so every
record on the raw topic is keyed (tenant, object) and encoded the same way whichever path made it,
and "acknowledged" means the same thing everywhere: acks=all from the in-sync replicas
(`plumbing.kafka.KafkaPublisher`).
"""

from __future__ import annotations

from collections.abc import Sequence

from plumbing.kafka import KafkaPublisher, Position
from schemas import Envelope, EnvelopeCodec


class RawEventPublisher:
    """Publishes envelopes on the raw events topic and returns once Kafka acknowledged them."""

    def __init__(self, publisher: KafkaPublisher, topic: str, codec: EnvelopeCodec | None = None):
        self.kafka = publisher
        self.topic = topic
        self._codec = codec or EnvelopeCodec()

    def record(self, envelope: Envelope) -> tuple[bytes, bytes]:
        """Returns the (key, value) record of one envelope."""
        return self._codec.record(envelope)

    async def publish(self, envelope: Envelope, timeout_s: float | None = None) -> Position:
        """Publishes one envelope; raises PublishError if Kafka did not acknowledge it within the bound."""
        key, value = self.record(envelope)
        return await self.kafka.publish(self.topic, key, value, timeout_s=timeout_s)

    async def publish_many(self, envelopes: Sequence[Envelope], timeout_s: float | None = None) -> list[Position]:
        """Publishes envelopes in order, all acknowledged or PublishError; nothing to publish is a no-op."""
        return await self.publish_records([self.record(e) for e in envelopes], timeout_s)

    async def publish_records(self, records: Sequence[tuple[bytes, bytes]], timeout_s: float | None = None,
                              key_hashes: Sequence[int] | None = None) -> list[Position]:
        """Publishes records made by `record`, as `publish_many` (the importer lets go of a page's objects and
        envelopes before the acknowledgement), with their keys' hashes if they were computed already."""
        if not records:
            return []
        return await self.kafka.publish_many(self.topic, records, timeout_s, key_hashes)
