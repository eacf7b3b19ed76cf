"""An HTTP load generator for webhook deliveries: open-loop at a fixed rate, or closed-loop at full speed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp


@dataclass
class LoadResult:
    """What one load step measured."""

    offered_per_s: float | None
    sent: int
    ok: int
    seconds: float
    latencies_ms: list[float]  # of the 2xx answers, from when each was due to be sent
    statuses: Counter[int] = field(default_factory=Counter)  # every answer's status (0: no answer)
    most_late_ms: float = 0.0  # how late the generator sent the latest of its deliveries (its own loop's lag)

    @property
    def achieved_per_s(self) -> float:
        return self.ok / self.seconds

    @property
    def acknowledged_percent(self) -> float:
        return 100 * self.ok / max(1, self.sent)

    def percentile(self, p: float) -> float:
        """The latency percentile of the acknowledged deliveries."""
        return _percentile(sorted(self.latencies_ms), p)

    def percentile_counting_refusals(self, p: float) -> float:
        """The latency percentile of every delivery sent, one not acknowledged counting as infinitely late."""
        return _percentile(sorted(self.latencies_ms) + [float("inf")] * (self.sent - self.ok), p)


def _percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
                result: LoadResult, due: float | None = None) -> None:
    """Sends one delivery; its latency runs from `due` (when it should have been sent) when given."""
    started = time.perf_counter()
    result.most_late_ms = max(result.most_late_ms, (started - due) * 1000 if due is not None else 0.0)
    status = 0
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            await resp.read()
            status = resp.status
    finally:
        result.statuses[status] += 1
    if status == 200:
        result.ok += 1
        result.latencies_ms.append((time.perf_counter() - (due if due is not None else started)) * 1000)


async def open_loop(url: str, deliveries: list[tuple[bytes, dict[str, str]]], rate: float, seconds: float) -> LoadResult:
    """Sends `rate` deliveries per second for `seconds`, whatever the answers' speed (no coordinated omission)."""
    result = LoadResult(rate, 0, 0, seconds, [])
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the offered load, not synchronisation
            body, headers = deliveries[i % len(deliveries)]
            tasks.append(asyncio.create_task(_post(session, url, body, headers, result, due)))
            result.sent += 1
        await asyncio.gather(*tasks, return_exceptions=True)
        result.seconds = time.perf_counter() - start
    return result


async def closed_loop(url: str, deliveries: list[tuple[bytes, dict[str, str]]], concurrency: int,
                      seconds: float) -> LoadResult:
    """Keeps `concurrency` deliveries in flight for `seconds`: the sustained maximum."""
    result = LoadResult(None, 0, 0, seconds, [])
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker(offset: int) -> None:
            i = offset
            while time.perf_counter() < deadline:
                body, headers = deliveries[i % len(deliveries)]
                result.sent += 1
                await _post(session, url, body, headers, result)
                i += concurrency
        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        result.seconds = time.perf_counter() - start
    return result
