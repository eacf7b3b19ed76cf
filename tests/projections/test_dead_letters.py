"""Poison records go to the dead-letter topic with the reason; the partition keeps moving."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from plumbing.kafka import KafkaPublisher, PublishError, producer_config
from plumbing.settings import Settings
from schemas import EnvelopeCodec
from tests.helpers import FailsFirst, consume_all, topic_size
from tests.projections.support import project_until_idle, publish
from tests.projections.test_order_and_duplicates import CHARGE, CUSTOMER, T, event

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
    assert [lt.error_type for lt in letters] == ["UnknownSchemaError", "CorruptRecordError", "UnknownObjectError", "UnreadableObjectError"]
    assert letters[0].value == b"\xc3\x01truncated" and letters[0].offset == 1
    assert all(lt.topic == settings.kafka.raw_topic and lt.error_message for lt in letters)
    positions = await pool.fetchval(
        "SELECT next_offset FROM projection.consumer_positions WHERE consumer_group = $1", settings.kafka.projector_group)
    assert positions == 6


async def test_what_postgres_refuses_is_dead_lettered_alone_and_no_tenant_waits_or_loops(
    make_settings: Callable[..., Settings], pool: asyncpg.Pool, create_topic: Callable[[str, int], Awaitable[None]],
) -> None:
    """The attack that stopped projection for everyone: a tenant's own correctly signed event whose
    object Postgres refuses (a charge with "currency": null broke NOT NULL and the projector exited on
    every restart at the same offset). Each such record is dead-lettered alone, counted against its
    tenant, and the other tenant's events in the same batches are applied; a restart repeats nothing."""
    settings = make_settings()
    await create_topic(settings.kafka.raw_topic, 1)  # one partition: hostile and honest share it
    await create_topic(settings.kafka.dead_letter_topic, 1)
    suffix = settings.kafka.projector_group[-8:]
    hostile, honest = f"hostile_{suffix}", f"honest_{suffix}"
    poisons = [
        CUSTOMER | {"id": "cus_nul", "email": "nul\u0000@example.com"},  # valid JSON, a text Postgres refuses
        CHARGE | {"id": "ch_null_currency", "status": "succeeded", "currency": None},  # no currency: never guessed
        CHARGE | {"id": "ch_huge_amount", "status": "succeeded", "amount": 10**30},  # beyond any Stripe amount
    ]
    deliveries = []
    for i in range(60):
        deliveries.append(event(CHARGE | {"id": f"ch_ok_{i}", "status": "succeeded"}, "charge.succeeded",
                                f"evt_ok_{i}", T + i, honest))
        if i % 20 == 10:
            poison = poisons[i // 20]
            kind = "customer.updated" if poison["object"] == "customer" else "charge.succeeded"
            deliveries.append(event(poison, kind, f"evt_poison_{i}", T + i, hostile))
    await publish(settings, deliveries)

    projector = await project_until_idle(settings, pool)

    assert projector.applied_events == 60
    honest_ids = {r["id"] for r in await pool.fetch("SELECT id FROM projection.charges WHERE tenant_id = $1", honest)}
    assert honest_ids == {f"ch_ok_{i}" for i in range(60)}
    assert await pool.fetchval("SELECT count(*) FROM projection.charges WHERE tenant_id = $1", hostile) == 0
    counted = await pool.fetch("SELECT event_id, reason FROM public.dead_lettered_events WHERE tenant_id = $1", hostile)
    assert sorted(r["event_id"] for r in counted) == ["evt_poison_10", "evt_poison_30", "evt_poison_50"]
    reasons = {r["event_id"]: r["reason"] for r in counted}
    assert reasons["evt_poison_10"] == "CharacterNotInRepertoireError"  # found by halving the batch Postgres refused
    assert reasons["evt_poison_30"] == reasons["evt_poison_50"] == "UnreadableObjectError"
    assert await topic_size(settings.kafka, settings.kafka.dead_letter_topic) == 3

    again = await project_until_idle(settings, pool)  # a restart: the stored positions are past every record
    assert again.applied_events == 0
    assert await topic_size(settings.kafka, settings.kafka.dead_letter_topic) == 3
    assert await pool.fetchval("SELECT count(*) FROM public.dead_lettered_events WHERE tenant_id = $1", hostile) == 3


async def test_a_record_dead_lettered_while_kafka_is_away_waits_for_it_and_the_projector_goes_on(
    settings: Settings, pool: asyncpg.Pool, create_topic: Callable[[str, int], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, the dead letter's PublishError stopped the projector; now the letter is sent once Kafka answers,
    counted once, and the records after it are applied."""
    await create_topic(settings.kafka.raw_topic, 1)
    await create_topic(settings.kafka.dead_letter_topic, 1)
    tenant = f"away_{settings.kafka.projector_group[-8:]}"
    good = event(CHARGE | {"id": "ch_good", "status": "succeeded"}, "charge.succeeded", "evt_good", T, tenant)
    unknown_type = dataclasses.replace(good, event_id="evt_payout", object_type="payout", object_id="po_1")
    await publish(settings, [unknown_type, good])

    kafka_away = FailsFirst(KafkaPublisher.publish, 2, lambda: PublishError("the broker did not acknowledge in time"))
    monkeypatch.setattr(KafkaPublisher, "publish", kafka_away)
    projector = await project_until_idle(settings, pool)
    assert kafka_away.failed == 2 and projector.applied_events == 1
    assert await topic_size(settings.kafka, settings.kafka.dead_letter_topic) == 1
    assert await pool.fetchval("SELECT count(*) FROM public.dead_lettered_events WHERE tenant_id = $1", tenant) == 1
    assert await pool.fetchval("SELECT count(*) FROM projection.charges WHERE tenant_id = $1", tenant) == 1
