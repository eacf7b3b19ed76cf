"""The projector: consumes the raw events topic and applies each batch exactly once to Postgres.

Per `getmany` batch: decode every record (a record that cannot be decoded or handled goes to the
dead-letter topic with the reason, and the partition keeps moving), then one Postgres transaction
records the event ids, applies the new events and stores the positions. The next batch is fetched
and decoded while that transaction runs (Postgres works on its own core meanwhile); it is applied
only after the previous one committed, and dropped if a seek happened since it was fetched. Kafka offsets are
committed afterwards only as a convenience: on assignment the projector seeks to the positions
stored in Postgres, which are the truth. A crash anywhere loses nothing and doubles nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError, KafkaTimeoutError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from plumbing.errors import error_site, is_retriable
from plumbing.kafka import KafkaPublisher, RecordTooLargeError, consumer_config
from plumbing.logs import get_logger
from plumbing.settings import KafkaSettings
from projections.errors import PositionGapError
from projections.projector.dead_letters import letter_for, letter_row, reason_text
from projections.projector.decoding import Event, decode
from projections.projector.metrics import ProjectorMetrics
from projections.projector.store import Applied, DeadLetterRow, PostgresProjectionStore
from schemas import DeadLetter, EnvelopeCodec

log = get_logger(__name__)
LAG_EVERY_S = 5.0


def _seek_may_succeed_later(exc: BaseException) -> bool:
    return is_retriable(exc) or isinstance(exc, KafkaTimeoutError)


def _logs_retry(what: str) -> Callable[[RetryCallState], None]:
    """Logs each retry of `what` with the error's site, not its message (which may quote a record's data): a bug
    taken for an outage shows where it is."""
    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(f"{what}; retrying", attempt=state.attempt_number, error=error_site(error) if error else None)
    return log_retry


class _SeekToStoredPositions(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, resume each partition from the position stored in Postgres."""

    def __init__(self, projector: RevenueProjector):
        self._projector = projector

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Waits for the batch in hand: its positions must be stored before anyone reads them."""
        async with self._projector.applying:
            pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        async with self._projector.applying:
            await self._projector.seek_to_stored_positions(list(assigned))


# Records decoded between two yields to the event loop while a batch is applied, so the
# transaction's next statement goes out within a few milliseconds.
DECODE_SLICE = 50


class RevenueProjector:
    """One member of the projector consumer group."""

    def __init__(self, settings: KafkaSettings, pool: asyncpg.Pool, dead_letters: KafkaPublisher | None,
                 metrics: ProjectorMetrics, group_id: str | None = None, schema: str = "projection",
                 max_records: int = 2000, tenant_filter: str | None = None):
        self._settings = settings
        self._group = group_id or settings.projector_group
        self._store = PostgresProjectionStore(pool, self._group, schema)
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._codec = EnvelopeCodec()
        self._max_records = max_records
        self._tenant_filter = tenant_filter  # a replay of one tenant skips the others' events
        self._consumer = self._new_consumer()
        self.applied_events = 0
        # Held while a batch is applied, so a rebalance never reads positions a batch is about to move.
        self.applying = asyncio.Lock()
        # Bumped on every seek (assignments included): a batch fetched before a seek is stale and is dropped.
        self.assignment_generation = 0
        self._in_flight: asyncio.Task[None] | None = None  # the batch being applied
        # Once stop() is called, or the stop run() was given is set, a wait for Postgres or Kafka to come back ends:
        # a SIGTERM during an outage stops the process (the batch in hand is read again later).
        self._stopped = False
        self._run_stop: asyncio.Event | None = None

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(**consumer_config(self._settings, self._group, f"projector-{self._group}"))

    async def start(self) -> None:
        """Joins the group; partitions resume from the positions stored in Postgres.

        Waits up to `startup_wait_s` for a cluster that is away (a fresh consumer per attempt); raises
        aiokafka's KafkaError after that.
        """
        async for attempt in AsyncRetrying(retry=retry_if_exception_type((KafkaError, OSError)),
                                           wait=wait_random_exponential(multiplier=0.2, max=3),
                                           stop=stop_after_delay(self._settings.startup_wait_s), reraise=True):
            with attempt:
                self._consumer.subscribe([self._settings.raw_topic], listener=_SeekToStoredPositions(self))
                try:
                    await self._consumer.start()
                except (KafkaError, OSError):
                    await self._consumer.stop()
                    self._consumer = self._new_consumer()
                    log.warning("Kafka unreachable at start-up; retrying", bootstrap=self._settings.bootstrap_servers)
                    raise

    def _stopping(self, _: RetryCallState | None = None) -> bool:
        """Whether the member is stopping (a retry's stop condition)."""
        return self._stopped or (self._run_stop is not None and self._run_stop.is_set())

    def _until_back(self, retry: Callable[[BaseException], bool] = is_retriable,
                    logged_as: str | None = None) -> AsyncRetrying:
        """Retries while Postgres or Kafka is away, until they answer or the member is stopping."""
        return AsyncRetrying(retry=retry_if_exception(retry), wait=wait_random_exponential(multiplier=0.2, max=5),
                             stop=self._stopping, before_sleep=_logs_retry(logged_as) if logged_as else None,
                             reraise=True)

    async def stop(self) -> None:
        """Leaves the group; a batch still in flight is cancelled (it rolls back and is read again later).

        Positions need no final commit: each batch stored its own.
        """
        self._stopped = True
        task, self._in_flight = self._in_flight, None
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._consumer.stop()

    async def seek_to_stored_positions(self, partitions: Sequence[TopicPartition]) -> None:
        """Seeks each partition to its stored position, or to the beginning when it has none.

        Postgres restarting or Kafka coming back (which is when the group rebalances) is waited for: a seek back
        after a stale batch that raised would stop the projector, and one on assignment that raised would leave
        the partitions where Kafka's convenience commit put them."""
        async for attempt in self._until_back(_seek_may_succeed_later, "positions not read (Postgres or Kafka away)"):
            with attempt:
                stored = await self._store.positions(self._settings.raw_topic, [tp.partition for tp in partitions])
                fresh = [tp for tp in partitions if tp.partition not in stored]
                # An explicit offset, not seek_to_beginning(): that one resets asynchronously and could
                # move a partition back after a batch from it was already applied.
                beginnings = await self._consumer.beginning_offsets(fresh) if fresh else {}
        for tp in partitions:
            self._consumer.seek(tp, stored[tp.partition] if tp.partition in stored else beginnings[tp])
        # After the seek: a batch fetched while we looked the positions up is stale.
        self.assignment_generation += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Applies batches until `stop` is set, then finishes the batch in flight; every LAG_EVERY_S it refreshes
        the per-partition lag gauges (records on the topic not yet consumed)."""
        self._run_stop = stop
        try:
            await self._apply_until(stop)
        except Exception as exc:
            if not (stop.is_set() and is_retriable(exc)):
                raise
            log.warning("stopped while a batch waited (Postgres or Kafka away); it is read again",
                        error=error_site(exc))

    async def _apply_until(self, stop: asyncio.Event) -> None:
        lag_due = time.monotonic()
        while not stop.is_set():
            await self.run_once()
            if time.monotonic() >= lag_due:
                lag_due = time.monotonic() + LAG_EVERY_S
                try:
                    await self.lag()
                except Exception as exc:  # noqa: BLE001 - a gauge refresh (e.g. mid-rebalance) never stops applying
                    log.debug("lag not refreshed", error=repr(exc))
        await self.drain()

    async def run_until_idle(self, timeout_s: float = 60.0, on_progress: Callable[[int], None] | None = None) -> None:
        """Applies batches until every assigned partition is caught up (tests and replays)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = await self.run_once(timeout_ms=300)
            if on_progress is not None and got:
                on_progress(got)
            if got == 0 and self._consumer.assignment() and await self.lag() == 0:
                return
        raise TimeoutError(f"projector not idle after {timeout_s}s (lag {await self.lag()})")

    async def lag(self) -> int:
        """Returns the records not yet consumed on the assigned partitions; updates the lag gauge."""
        assigned = list(self._consumer.assignment())
        ends = await self._consumer.end_offsets(assigned) if assigned else {}
        total = 0
        for tp in assigned:
            behind = max(0, ends[tp] - await self._consumer.position(tp))
            self._metrics.lag.labels(str(tp.partition)).set(behind)
            total += behind
        return total

    async def run_once(self, timeout_ms: int = 1000) -> int:
        """Fetches and decodes one batch while the previous one is applied, then starts applying it.

        Returns the number of records fetched (0 once the previous batch is applied and nothing
        came). Raises what applying the previous batch raised.
        """
        generation = self.assignment_generation
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=self._max_records)
        records = [r for partition_records in batches.values() for r in partition_records]
        if not records:
            await self.drain()
            return 0
        decoded = await self._decode_all(records)
        await self.drain()
        if generation != self.assignment_generation:
            # Fetched across a seek (by a rebalance or by the previous batch): drop it and seek now,
            # with no fetch in progress, so this seek cannot make another batch stale in turn.
            async with self.applying:
                await self._seek_back(batches)
            return 0
        self._in_flight = asyncio.create_task(self._apply_batch(generation, batches, records, decoded))
        return len(records)

    async def _seek_back(self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        """Seeks the still-assigned partitions of a dropped batch back to their stored positions."""
        await self.seek_to_stored_positions([tp for tp in batches if tp in self._consumer.assignment()])

    async def drain(self) -> None:
        """Waits until the batch in flight is applied or dropped; raises what applying it raised."""
        task, self._in_flight = self._in_flight, None
        if task is not None:
            await task

    async def _decode_all(self, records: Sequence[ConsumerRecord]) -> list[Event | Exception]:
        """Decodes `records` (an exception in place of a record that cannot be applied), yielding now and then."""
        decoded: list[Event | Exception] = []
        for start in range(0, len(records), DECODE_SLICE):
            if start and self._in_flight is not None:
                await asyncio.sleep(0)  # let the transaction in flight send its next statement
            for record in records[start:start + DECODE_SLICE]:
                try:
                    decoded.append(decode(self._codec, record))
                except Exception as exc:  # noqa: BLE001 - one record's failure is that record's, never the batch's
                    decoded.append(exc)
        return decoded

    async def _apply_batch(self, generation: int, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]],
                           records: Sequence[ConsumerRecord], decoded: Sequence[Event | Exception]) -> None:
        """Applies one fetched batch under the rebalance lock, unless a seek made it stale; then commits offsets."""
        async with self.applying:
            if generation != self.assignment_generation:
                # Partitions were (re)positioned while this batch was fetched: whether it came from
                # before or after that seek, resume from the stored positions and fetch again.
                await self._seek_back(batches)
                return
            try:
                await self.apply(records, decoded)
            except PositionGapError as exc:
                log.info("batch starts after the stored position; seeking back", reason=str(exc))
                await self._seek_back(batches)
                return
        offsets = {tp: rs[-1].offset + 1 for tp, rs in batches.items()}
        try:
            await self._consumer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - a convenience commit; Postgres holds the truth
            log.info("kafka offset commit skipped", error=repr(exc))

    async def apply(self, records: Sequence[ConsumerRecord],
                    decoded: Sequence[Event | Exception] | None = None) -> None:
        """Applies `records` (decoded here unless `decoded` is given) in one transaction; a record that cannot
        be decoded or that Postgres refuses is dead-lettered alone and the rest are applied."""
        started = time.perf_counter()
        events: list[tuple[ConsumerRecord, Event]] = []
        letters: list[DeadLetterRow] = []
        for record, event in zip(records, decoded if decoded is not None else await self._decode_all(records)):
            if isinstance(event, Exception):
                letters.append(await self._dead_letter(record, event))
            elif self._tenant_filter is None or event[0] == self._tenant_filter:
                events.append((record, event))
        positions = {(r.topic, r.partition): r.offset + 1 for r in records}
        first_offsets: dict[tuple[str, int], int] = {}
        for r in records:
            first_offsets.setdefault((r.topic, r.partition), r.offset)
        async for attempt in self._until_back(logged_as="batch not applied (Postgres away)"):
            with attempt:
                applied = await self._apply_isolating_poison(events, positions, first_offsets, letters)
        self.applied_events += applied.new_events
        self._metrics.applied.inc(applied.new_events)
        self._metrics.duplicates.inc(applied.duplicates)
        self._metrics.batch_seconds.observe(time.perf_counter() - started)
        now_ms = time.time() * 1000
        for record in records:  # record timestamps are the producers' send times
            self._metrics.event_age.observe(max(0.0, now_ms - record.timestamp) / 1000)
        oldest: dict[str, float] = {}
        for record, event in events:  # each tenant's lag: its oldest event in the batch just applied
            oldest[event[0]] = max(oldest.get(event[0], 0.0), max(0.0, now_ms - record.timestamp) / 1000)
        for tenant, age in oldest.items():
            self._metrics.tenant_lagged(tenant, age)

    async def _apply_isolating_poison(
        self, events: Sequence[tuple[ConsumerRecord, Event]], positions: dict[tuple[str, int], int],
        first_offsets: dict[tuple[str, int], int], letters: Sequence[DeadLetterRow],
    ) -> Applied:
        """Applies the batch in one transaction; if Postgres refuses it (a constraint, bad data), finds the
        records it refuses by halves, dead-letters each alone and applies the rest.

        Halving costs about 2·log2(batch) transactions per refused record, so a tenant sending records
        Postgres refuses slows its partition little. Retriable errors and PositionGapError propagate.
        """
        try:
            return await self._store.apply([e for _, e in events], positions, first_offsets, letters)
        except PositionGapError:
            raise
        except Exception as exc:  # noqa: BLE001 - sorted below: retriable ones propagate
            if is_retriable(exc):
                raise
            log.warning("batch refused by Postgres; isolating the records it refuses", error=reason_text(exc))
        refused: list[DeadLetterRow] = []
        applied = await self._apply_halves(events, refused)
        return applied + await self._store.apply([], positions, first_offsets, [*letters, *refused])

    async def _apply_halves(self, events: Sequence[tuple[ConsumerRecord, Event]],
                            refused: list[DeadLetterRow]) -> Applied:
        """Applies `events` in one transaction, or, if Postgres refuses it, each half in turn (down to one)."""
        if not events:
            return Applied(0, 0)
        try:
            return await self._store.apply([e for _, e in events], {})
        except Exception as exc:  # noqa: BLE001 - sorted below: retriable ones propagate
            if is_retriable(exc):
                raise
            if len(events) == 1:
                record, (_, event_id, _) = events[0]
                refused.append(await self._dead_letter(record, exc, event_id))
                return Applied(0, 0)
        middle = len(events) // 2
        return await self._apply_halves(events[:middle], refused) + await self._apply_halves(events[middle:], refused)

    async def _dead_letter(self, record: ConsumerRecord, exc: Exception, event_id: str = "") -> DeadLetterRow:
        """Publishes the record with the reason to the dead-letter topic, waits for the ack, and returns the
        row that counts it against its tenant (stored with the batch's positions).

        Without a dead-letter publisher (a replay: the live group already dead-lettered it) the
        record is only skipped and counted. Raises RecordTooLargeError if the topic refuses even a letter
        without the record's value (a topic made to take a few KiB).
        """
        self._metrics.dead_letters.labels(type(exc).__name__).inc()
        row = letter_row(record, exc, event_id)
        if self._dead_letters is None:
            return row
        failed_time = datetime.now(timezone.utc)
        letter = letter_for(record, exc, row.event_id, self._group, failed_time)
        try:
            await self._publish_letter(self._dead_letters, letter)
        except RecordTooLargeError:
            refused = len(self._codec.encode_dead_letter(letter))
            log.warning("dead letter too large for its topic; sent without the record", topic=record.topic,
                        partition=record.partition, offset=record.offset, size=refused)
            letter = letter_for(record, exc, row.event_id, self._group, failed_time, refused_at=refused)
            await self._publish_letter(self._dead_letters, letter)
        log.warning("record dead-lettered", topic=record.topic, partition=record.partition,
                    offset=record.offset, error_type=type(exc).__name__, tenant_id=row.tenant_id)
        return row

    async def _publish_letter(self, publisher: KafkaPublisher, letter: DeadLetter) -> None:
        """Publishes a dead letter, keyed as its record, and waits for the ack.

        Kafka away (the raw topic's batch was fetched before it went): waits for it, as the batch does for Postgres;
        raising would stop the projector. A letter the topic does not take raises RecordTooLargeError at once.
        """
        value = self._codec.encode_dead_letter(letter)
        async for attempt in self._until_back():
            with attempt:
                await publisher.publish(self._settings.dead_letter_topic, letter.key or b"", value)
