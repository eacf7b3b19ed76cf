"""An HTTP load generator for webhook deliveries: open-loop at a fixed rate, or closed-loop at full speed."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp


@dataclass
class LoadResult:
    """What one load step measured."""

    offered_per_s: float | None
    sent: int
    ok: int
    seconds: float
    latencies_ms: list[float]

    @property
    def achieved_per_s(self) -> float:
        return self.ok / self.seconds

    def percentile(self, p: float) -> float:
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(p / 100 * len(data)))] if data else float("nan")


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
                result: LoadResult) -> None:
    started = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as resp:
        await resp.read()
        if resp.status == 200:
            result.ok += 1
            result.latencies_ms.append((time.perf_counter() - started) * 1000)


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
            tasks.append(asyncio.create_task(_post(session, url, body, headers, result)))
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
