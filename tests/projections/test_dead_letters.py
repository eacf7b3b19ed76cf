"""Poison records go to the dead-letter topic with the reason; the partition keeps moving."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from ingestor.connections.tenant_store import PostgresTenantStore
from ingestor.connections.vault import MasterKeyring, generate_master_key
from plumbing.kafka import MAX_RECORD_BYTES, KafkaPublisher, PublishError, producer_config
from plumbing.settings import Settings
from projections.projector.consumer import RevenueProjector
from projections.projector.metrics import ProjectorMetrics
from schemas import Envelope, EnvelopeCodec, envelope_key
from stack.up import Platform
from tests.helpers import FailsFirst, consume_all, topic_size, wait_for
from tests.projections.support import project_until_idle, publish
from tests.projections.test_order_and_duplicates import CHARGE, CUSTOMER, SUBSCRIPTION, T, event

pytestmark = pytest.mark.integration


async def test_poison_records_are_dead_lettered_and_the_next_record_is_applied(
    settings: Settings, pool: asyncpg.Pool, create_topic: Callable[[str, int], Awaitable[None]],
) -> None:
    await create_topic(settings.kafka.raw_topic, 1)
    await create_topic(settings.kafka.dead_letter_topic, 1)
    tenant = f"poison_{settings.kafka.projector_group[-8:]}"
    good_before = event(CHARGE | {"id": "ch_before", "status": "succeeded"}, "charge.succeeded", "evt_before", T,
                        tenant)
    good_after = event(CHARGE | {"id": "ch_after", "status": "succeeded"}, "charge.succeeded", "evt_after", T, tenant)
    unknown_type = dataclasses.replace(good_before, event_id="evt_payout", object_type="payout", object_id="po_1")
    broken_payload = dataclasses.replace(good_before, event_id="evt_broken",
                                         payload='{"data": {"object": {"id": "ch_x"}}}')

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
    assert [lt.error_type for lt in letters] == ["UnknownSchemaError", "CorruptRecordError", "UnknownObjectError",
                                                 "UnreadableObjectError"]
    assert letters[0].value == b"\xc3\x01truncated" and letters[0].offset == 1
    assert all(lt.topic == settings.kafka.raw_topic and lt.error_message for lt in letters)
    positions = await pool.fetchval(
        "SELECT next_offset FROM projection.consumer_positions WHERE consumer_group = $1",
        settings.kafka.projector_group)
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


def padded_to(envelope: Envelope, size: int, incompressible: bool = False) -> Envelope:
    """The envelope with its Stripe JSON padded by `"x": [100000.0, ...]` (how orjson writes a tenant's 1e5s), or by
    random text when `incompressible`, until its record value is exactly `size` bytes."""
    payload = json.loads(envelope.payload)

    def padded(floats: int, text: int) -> Envelope:
        filler = random.Random(text).randbytes(text // 2 + 1).hex()[:text]
        return dataclasses.replace(envelope, payload=json.dumps(payload | {"x": [1e5] * floats, "y": filler}))

    floats = 0 if incompressible else (size - len(EnvelopeCodec().encode(padded(0, 0))) - 64) // len("100000.0, ")
    text = 0
    for _ in range(4):  # the string's length prefix may grow by a byte or two as it grows
        text += size - len(EnvelopeCodec().encode(padded(floats, text)))
    assert len(EnvelopeCodec().encode(padded(floats, text))) == size
    return padded(floats, text)


def largest_value(key: bytes) -> int:
    """The size of the largest record value the topic takes (MAX_RECORD_BYTES) with this key."""
    overhead = int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, b"v" * 2**20, [])) - 2**20
    return MAX_RECORD_BYTES - overhead - 8  # a few bytes for the longer length prefixes


async def create_topic_taking(platform: Platform, topic: str, partitions: int, max_bytes: int | None) -> None:
    """Creates a topic; with `max_bytes`, one whose records may be at most that large (max.message.bytes)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=platform.kafka.bootstrap_servers)
    await admin.start()
    try:
        configs = {"max.message.bytes": str(max_bytes)} if max_bytes else {}
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs)])
    finally:
        await admin.close()


# A dead-letter topic as ensure_topics makes it (the producer refuses the whole letter before sending it), and one
# an operator made smaller (the broker refuses even the cut letter: random padding stays large when compressed).
@pytest.mark.parametrize("dead_letter_topic_takes", [None, 64 * 1024], ids=["topic-as-configured", "small-topic"])
async def test_a_record_too_large_to_dead_letter_whole_is_cut_and_the_member_keeps_projecting(
    dead_letter_topic_takes: int | None, settings: Settings, pool: asyncpg.Pool, platform: Platform,
) -> None:
    """The attack that stopped a member for good: a tenant signs a subscription event the projector cannot read,
    padded to just under the topic's limit. Whole, with its reason, the dead letter is over the limit; the publish
    was retried for ever and every partition of the member stalled. Now the letter keeps the start of the record
    (or, on a dead-letter topic that takes less, none of it), says so, and the partitions move on."""
    await create_topic_taking(platform, settings.kafka.raw_topic, 2, None)
    await create_topic_taking(platform, settings.kafka.dead_letter_topic, 1, dead_letter_topic_takes)
    suffix = settings.kafka.projector_group[-8:]
    hostile, honest = f"hostile_{suffix}", f"honest_{suffix}"
    unreadable = event(SUBSCRIPTION | {"id": "sub_big", "status": "active", "currency": "US"},  # not ISO 4217
                       "customer.subscription.updated", "evt_big", T, hostile)
    # Just under the limit: the raw topic takes it, the dead letter (the record, its key again, the reason) is over.
    unreadable = padded_to(unreadable, largest_value(envelope_key(hostile, "sub_big")),
                           incompressible=dead_letter_topic_takes is not None)
    before = [event(CHARGE | {"id": f"ch_before_{i}", "status": "succeeded"}, "charge.succeeded", f"evt_before_{i}",
                    T + i, honest) for i in range(10)]
    after = [event(CHARGE | {"id": f"ch_after_{i}", "status": "succeeded"}, "charge.succeeded", f"evt_after_{i}",
                   T + i, tenant) for i, tenant in enumerate([honest] * 9 + [hostile])]
    await publish(settings, before)
    await publish(settings, [unreadable])
    await publish(settings, after)

    async with KafkaPublisher(settings.kafka, client_id="test-dlq") as dead_letters:
        projector = RevenueProjector(settings.kafka, pool, dead_letters, ProjectorMetrics(CollectorRegistry()))
        await projector.start()
        try:
            await asyncio.wait_for(projector.run_until_idle(), 90)  # before: never returned
        finally:
            await projector.stop()
        connected = dead_letters.connected

    assert projector.applied_events == 20
    honest_ids = {r["id"] for r in await pool.fetch("SELECT id FROM projection.charges WHERE tenant_id = $1", honest)}
    assert honest_ids == {f"ch_before_{i}" for i in range(10)} | {f"ch_after_{i}" for i in range(9)}
    assert await pool.fetchval("SELECT count(*) FROM projection.charges WHERE tenant_id = $1", hostile) == 1
    counted = await pool.fetch("SELECT event_id, reason FROM public.dead_lettered_events WHERE tenant_id = $1", hostile)
    assert [(r["event_id"], r["reason"]) for r in counted] == [("evt_big", "UnreadableObjectError")]
    [(key, value)] = await consume_all(settings.kafka, settings.kafka.dead_letter_topic, 1, timeout_s=30)
    letter = EnvelopeCodec().decode_dead_letter(value)
    original = EnvelopeCodec().encode(unreadable)
    assert key == envelope_key(hostile, "sub_big") == letter.key
    assert (letter.topic, letter.error_type) == (settings.kafka.raw_topic, "UnreadableObjectError")
    assert "currency" in letter.error_message and "evt_big" in letter.error_message
    assert f"offset {letter.offset}" in letter.error_message  # where the whole record still is
    if dead_letter_topic_takes is None:
        assert letter.value is not None and 0 < len(letter.value) < len(original)
        assert original.startswith(letter.value)
        assert f"cut to its first {len(letter.value)} of {len(original)} bytes" in letter.error_message
        assert connected  # a record refused before it was sent does not cost the producer
    else:
        assert letter.value is None and "left out" in letter.error_message


@pytest.fixture
async def postgres_fault(pool: asyncpg.Pool) -> AsyncIterator[Callable[[str, list[str]], Awaitable[str]]]:
    """Factory: makes Postgres raise a SQLSTATE (a real server error, from a trigger) on every insert of the
    tenants' processed events until the returned table's row is deleted; sequences count the attempts and the
    size of the first and the latest (they are not rolled back with the refused transaction)."""
    made: list[str] = []

    async def make(sqlstate: str, tenants: list[str]) -> str:
        name = f"fault_{uuid.uuid4().hex[:8]}"
        made.append(name)
        await pool.execute(f"""
            CREATE TABLE public.{name} (on_ boolean);
            INSERT INTO public.{name} VALUES (true);
            CREATE SEQUENCE public.{name}_attempts; CREATE SEQUENCE public.{name}_first;
            CREATE SEQUENCE public.{name}_last;
            CREATE FUNCTION public.{name}() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE n bigint;
            BEGIN
                SELECT count(*) INTO n FROM inserted WHERE tenant_id IN ({", ".join(f"'{t}'" for t in tenants)});
                IF n > 0 AND EXISTS (SELECT 1 FROM public.{name}) THEN
                    IF nextval('public.{name}_attempts') = 1 THEN PERFORM setval('public.{name}_first', n); END IF;
                    PERFORM setval('public.{name}_last', n);
                    RAISE EXCEPTION 'injected server fault' USING ERRCODE = '{sqlstate}';
                END IF;
                RETURN NULL;
            END $$;
            CREATE TRIGGER {name} AFTER INSERT ON projection.processed_events REFERENCING NEW TABLE AS inserted
                FOR EACH STATEMENT EXECUTE FUNCTION public.{name}();
        """)
        return name

    yield make
    for name in made:
        await pool.execute(f"DROP TRIGGER {name} ON projection.processed_events; DROP FUNCTION public.{name}(); "
                           f"DROP TABLE public.{name}; DROP SEQUENCE public.{name}_attempts, public.{name}_first, "
                           f"public.{name}_last")


@pytest.mark.parametrize("sqlstate", ["53000", "53100", "53200", "53300", "53400", "58030", "55P03", "40003"])
async def test_a_postgres_resource_error_holds_the_batch_and_dead_letters_nothing(
    sqlstate: str, settings: Settings, pool: asyncpg.Pool, create_topic: Callable[[str, int], Awaitable[None]],
    postgres_fault: Callable[[str, list[str]], Awaitable[str]],
) -> None:
    """Postgres out of memory, disk or connections is the server's state, not a record's fault: before, the batch was
    halved down to single records, each refused and dead-lettered, and every tenant's events were skipped. Now the
    whole batch waits (retried with backoff) and is applied once Postgres has room again; nothing is dead-lettered."""
    await create_topic(settings.kafka.raw_topic, 1)
    await create_topic(settings.kafka.dead_letter_topic, 1)
    suffix = settings.kafka.projector_group[-8:]
    tenants = [f"a_{suffix}", f"b_{suffix}"]
    fault = await postgres_fault(sqlstate, tenants)
    await publish(settings, [event(CHARGE | {"id": f"ch_{i}", "status": "succeeded"}, "charge.succeeded", f"evt_{i}",
                                   T + i, tenants[i % 2]) for i in range(20)])

    async def dead_letters() -> int:
        return int(await pool.fetchval("SELECT count(*) FROM public.dead_lettered_events WHERE tenant_id = ANY($1)",
                                        tenants))

    async def whole_batch_retried() -> bool:
        assert await dead_letters() == 0, "events dead-lettered for the server's fault"
        return bool(await pool.fetchval(f"SELECT a.last_value >= 2 AND f.last_value = l.last_value FROM "
                                        f"public.{fault}_attempts a, public.{fault}_first f, public.{fault}_last l"))

    async def all_applied() -> bool:
        assert await dead_letters() == 0, "events dead-lettered for the server's fault"
        return bool(await pool.fetchval("SELECT count(*) = 20 FROM projection.charges WHERE tenant_id = ANY($1)",
                                        tenants))

    async with KafkaPublisher(settings.kafka, client_id="test-dlq") as publisher:
        projector = RevenueProjector(settings.kafka, pool, publisher, ProjectorMetrics(CollectorRegistry()))
        await projector.start()
        stop = asyncio.Event()
        running = asyncio.create_task(projector.run(stop))
        try:
            await wait_for(whole_batch_retried, 60, "the same batch to be tried again while Postgres refuses it")
            await pool.execute(f"DELETE FROM public.{fault}")  # Postgres has room again
            await wait_for(all_applied, 60, "the batch to be applied")
        finally:
            stop.set()
            await running
            await projector.stop()

    assert projector.applied_events == 20
    assert await topic_size(settings.kafka, settings.kafka.dead_letter_topic) == 0
    assert await pool.fetchval("SELECT next_offset FROM projection.consumer_positions WHERE consumer_group = $1",
                               settings.kafka.projector_group) == 20


async def test_what_postgres_refuses_is_named_without_the_row_in_health_dead_letters_and_logs(
    settings: Settings, pool: asyncpg.Pool, create_topic: Callable[[str, int], Awaitable[None]],
) -> None:
    """Postgres's text for a refused row quotes the row (`DETAIL: Failing row contains (..., visa, 4242, ...)`):
    it went into the dead letter, the tenant's health (shown to anyone with the tenant's API token) and the log.
    Now they name the SQLSTATE, the constraint and the table, and nothing of the row. The canonical model refuses
    what the tables' own constraints refuse first, so this test adds a constraint for its tenant: one the model
    does not know, as a future migration's could be."""
    await create_topic(settings.kafka.raw_topic, 1)
    await create_topic(settings.kafka.dead_letter_topic, 1)
    tenant = f"leaky_{settings.kafka.projector_group[-8:]}"
    refused = event(CHARGE | {"id": "ch_refused", "status": "succeeded",
                              "payment_method_details": {"type": "card", "card": {"brand": "visa", "last4": "4242"}},
                              "billing_details": {"email": "jenny.rosen@example.com", "name": "Jenny Rosen"}},
                    "charge.succeeded", "evt_refused", T, tenant)
    honest = event(CHARGE | {"id": "ch_fine", "status": "succeeded"}, "charge.succeeded", "evt_fine", T, tenant)
    await publish(settings, [refused, honest])
    constraint = f"charges_refused_for_{tenant}"
    await pool.execute(f"ALTER TABLE projection.charges ADD CONSTRAINT {constraint} "
                       f"CHECK (tenant_id <> '{tenant}' OR id <> 'ch_refused') NOT VALID")
    try:
        with capture_logs() as logs:
            projector = await project_until_idle(settings, pool)
    finally:
        await pool.execute(f"ALTER TABLE projection.charges DROP CONSTRAINT {constraint}")

    assert projector.applied_events == 1
    secrets = ("4242", "jenny", "Jenny", "Rosen", "Failing row", "DETAIL")
    [row] = await pool.fetch("SELECT * FROM public.dead_lettered_events WHERE tenant_id = $1", tenant)
    assert row["event_id"] == "evt_refused" and row["reason"] == "CheckViolationError"
    assert "23514" in row["message"] and constraint in row["message"]
    store = PostgresTenantStore(pool, MasterKeyring.from_setting(generate_master_key("k1")), settings.reader)
    health = json.dumps(await store.unreadable_events(tenant))
    assert constraint in health
    [(_, value)] = await consume_all(settings.kafka, settings.kafka.dead_letter_topic, 1, timeout_s=30)
    letter = EnvelopeCodec().decode_dead_letter(value)
    assert constraint in letter.error_message
    for text in (health, json.dumps(dict(row), default=str), letter.error_message, letter.error_type, repr(logs)):
        assert not any(secret in text for secret in secrets), text
