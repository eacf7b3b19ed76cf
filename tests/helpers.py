"""Test helpers shared across packages."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from aiokafka import AIOKafkaConsumer

from ingestor.stripe_api.discounts import StripeDiscounts
from plumbing.kafka import consumer_config, topic_end_offsets
from plumbing.settings import KafkaSettings
from stripe_sim import SimClock

POLL_INTERVAL_S = 0.05
# The simulator's "now" in tests that compare with its ground truth: its generated history depends on
# the clock, so a pinned clock makes the data, and the test, the same whatever day it runs.
SIM_NOW = 1_781_500_000  # 2026-06-15T05:06:40Z


def pinned_sim_clock() -> SimClock:
    """Returns a simulator clock frozen at SIM_NOW."""
    return SimClock(frozen_at=SIM_NOW)


def month_of(epoch_s: int) -> str:
    """Returns the UTC month ("YYYY-MM") of a Unix time."""
    return datetime.fromtimestamp(epoch_s, timezone.utc).strftime("%Y-%m")


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, what: str = "condition") -> None:
    """Polls `condition` until it holds; fails the test after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL_S)


async def consume_all(settings: KafkaSettings, topic: str, expected: int, timeout_s: float = 60.0) -> list[tuple[bytes, bytes]]:
    """Reads `topic` from the beginning until `expected` records arrived (or the timeout)."""
    consumer = AIOKafkaConsumer(topic, **consumer_config(settings, f"readback-{uuid.uuid4().hex[:6]}", "readback"))
    await consumer.start()
    records: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for partition_records in batch.values():
                records.extend((r.key, r.value) for r in partition_records)
        # One more fetch: anything beyond `expected` would be a duplicate.
        extra = await consumer.getmany(timeout_ms=300)
        for partition_records in extra.values():
            records.extend((r.key, r.value) for r in partition_records)
    finally:
        await consumer.stop()
    return records


async def topic_size(settings: KafkaSettings, topic: str) -> int:
    """Returns how many records `topic` holds (sum of end offsets; topics here are never truncated)."""
    return sum((await topic_end_offsets(settings, topic)).values())


class FailsFirst:
    """A method that raises `error()` on its first `times` calls and then does what `real` does: Postgres or Kafka
    away for a while, as seen by one store or publisher method (set it on the class with monkeypatch)."""

    def __init__(self, real: Callable[..., Awaitable[Any]], times: int, error: Callable[[], BaseException]):
        self.real, self.times, self.error, self.failed = real, times, error, 0

    def __get__(self, instance: object, owner: type) -> Callable[..., Awaitable[Any]]:
        async def method(*args: Any, **kwargs: Any) -> Any:
            if self.failed < self.times:
                self.failed += 1
                raise self.error()
            return await self.real(instance, *args, **kwargs)
        return method


class LoopLateness:
    """How late this event loop ran while open: a timer every few milliseconds notes how late it fired, beyond
    `beyond_s`.

    A loop held up (a collection of a long test session's heap, a loaded two-core machine) runs every timer late at
    once, and the simulator sharing the loop sees what was sent meanwhile arrive in a bunch, or late. A test about
    when requests reach Stripe allows for that much, and no more."""

    TICK_S = 0.005

    def __init__(self, beyond_s: float) -> None:
        self.beyond_s = beyond_s
        self.held_up: list[tuple[float, float]] = []  # (when the loop resumed, how long it was held up past beyond_s)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLateness:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.TICK_S)
            late = loop.time() - before - self.TICK_S
            if late > self.beyond_s:
                self.held_up.append((loop.time(), late - self.beyond_s))

    def tokens_due_while_held_up(self, per_second: float) -> int:
        """The most tokens of a budget of `per_second` that came due in held-up time and went out (as the loop
        resumed) within one second."""
        most = max((sum(late for at, late in self.held_up if resumed <= at < resumed + 1.0)
                    for resumed, _ in self.held_up), default=0.0)
        return math.ceil(per_second * most)

    def held_up_between(self, start: float, end: float) -> float:
        """How long the loop was held up (past `beyond_s` a time) in what it resumed from between `start` and `end`
        (monotonic seconds, as `time.monotonic` and the loop's clock give them)."""
        return sum(late for at, late in self.held_up if start < at <= end)


def discounts_reading_from(stripe_api: Any, **options: Any) -> StripeDiscounts:
    """The receiver's fill-in over a stand-in for Stripe (its `retrieve_raw` and `close`): every connection's key
    stored and not refused."""

    class Store:
        async def load_key_unless_refused(self, connection_id: str) -> tuple[str, str]:
            return ("rk_test_x", "")

    class Readers:
        def reader(self, *args: Any, **kwargs: Any) -> Any:
            return stripe_api

    return StripeDiscounts(Store(), Readers(), **options)  # type: ignore[arg-type]
