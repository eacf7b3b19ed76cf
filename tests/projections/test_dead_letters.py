"""Poison records go to the dead-letter topic with the reason; the partition keeps moving."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from plumbing.kafka import producer_config
from plumbing.settings import Settings
from schemas import EnvelopeCodec
from tests.helpers import consume_all, topic_size
from tests.projections.support import project_until_idle, publish
from tests.projections.test_order_and_duplicates import CHARGE, T, event

pytestmark = pytest.mark.integration


async def test_poison_records_are_dead_lettered_and_the_next_record_is_applied(
    settings: Settings, pool: asyncpg.Pool, create_topic: Callable[[str, int], Awaitable[None]],
) -> None:
    await create_topic(settings.kafka.raw_topic, 1)
    await create_topic(settings.kafka.dead_letter_topic, 1)
    tenant = f"poison_{settings.kafka.projector_group[-8:]}"
    good_before = event(CHARGE | {"id": "ch_before", "status": "succeeded"}, "charge.succeeded", "evt_before", T, tenant)
    good_after = event(CHARGE | {"id": "ch_after", "status": "succeeded"}, "charge.succeeded", "evt_after", T, tenant)
    unknown_type = dataclasses.replace(good_before, event_id="evt_payout", object_type="payout", object_id="po_1")
    broken_payload = dataclasses.replace(good_before, event_id="evt_broken", payload='{"data": {"object": {"id": "ch_x"}}}')

    await publish(settings, [good_before])
    producer = AIOKafkaProducer(**producer_config(settings.kafka, "poison-test"))
    await producer.start()
    try:
        await producer.send_and_wait(settings.kafka.raw_topic, b"\xc3\x01truncated", key=b"x")  # undecodable
        await producer.send_and_wait(settings.kafka.raw_topic, b'{"plain": "json"}', key=b"y")  # not Avro at all
    finally:
        await producer.stop()
    await publish(settings, [unknown_type, broken_payload, good_after])

    projector = await project_until_idle(settings, pool)

    assert projector.applied_events == 2
    assert await topic_size(settings.kafka, settings.kafka.dead_letter_topic) == 4
    ids = {r["id"] for r in await pool.fetch("SELECT id FROM projection.charges WHERE tenant_id = $1", tenant)}
    assert ids == {"ch_before", "ch_after"}
    letters = [EnvelopeCodec().decode_dead_letter(v)
               for _, v in await consume_all(settings.kafka, settings.kafka.dead_letter_topic, 4, timeout_s=30)]
    assert [lt.error_type for lt in letters] == ["UnknownSchemaError", "CorruptRecordError", "UnknownObjectError", "PoisonRecordError"]
    assert letters[0].value == b"\xc3\x01truncated" and letters[0].offset == 1
    assert all(lt.topic == settings.kafka.raw_topic and lt.error_message for lt in letters)
    positions = await pool.fetchval(
        "SELECT next_offset FROM projection.consumer_positions WHERE consumer_group = $1", settings.kafka.projector_group)
    assert positions == 6
