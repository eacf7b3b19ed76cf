"""Process-wide tuning and measures shared by the long-running processes (web, projector, worker)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterable, Iterator

from plumbing.logs import get_logger

log = get_logger(__name__)

# How long a cancelled task may take to end (its cleanup: releasing claims, closing clients) before it is cancelled
# again.
CANCEL_AGAIN_S = 10.0


def tune_gc() -> None:
    """Freezes start-up objects out of every collection and makes young collections rarer.

    Each webhook or projected event allocates a few hundred short-lived objects; with the default
    thresholds the collector runs thousands of times a second, and its pauses were most of the
    receiver's p99 latency (measured in bench/receiver_throughput.py: p99 at 1,000 events/s went
    from ~140 ms to ~26 ms, and sustained throughput from ~2,200 to ~3,900 events/s).
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def log_tasks() -> None:
    """Logs each task of the running loop and the chain of coroutines it waits in (innermost last), by function and
    line only (no values: they may hold keys or card data). Why a process makes no progress, on SIGUSR1."""
    tasks = asyncio.all_tasks()
    for task in sorted(tasks, key=lambda t: t.get_name()):
        log.warning("task waiting", task=task.get_name(), waits_in=" > ".join(_awaiting(task.get_coro())))
    log.warning("tasks logged", count=len(tasks))


def _awaiting(coro: object) -> list[str]:
    """`function:line` of each coroutine in the chain `coro` awaits, down to the future it is suspended on."""
    chain = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_qualname}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], again_s: float = CANCEL_AGAIN_S) -> None:
    """Cancels the tasks and waits until every one has ended, cancelling again any still running `again_s` later.

    A cancellation can be lost: aiokafka's `close()` and `stop()` cancel their own tasks and await them under
    `suppress(CancelledError)`, so a task cancelled while it waits there swallows its cancellation and runs on
    (a check after an import then polled the projection for five minutes after its worker was told to stop). An
    error a task ended with is logged, not raised: the others still have to be waited for.
    """
    running, rounds = set(tasks), 0
    while running:
        if rounds:
            log.warning("cancelled tasks still run; cancelling them again", tasks=sorted(t.get_name() for t in running))
        for task in running:
            task.cancel()
        ended, running = await asyncio.wait(running, timeout=again_s)
        rounds += 1
        for task in ended:
            if not task.cancelled() and task.exception() is not None:
                log.warning("a cancelled task ended with an error", task=task.get_name(), error=repr(task.exception()))


class LoopLag:
    """How late this process's event loop runs what is ready (a moving average, in seconds), measured by a
    task that asks to wake every `every_s` while anyone is `watching()`.

    A late loop means the CPU, not the network, is what makes work slow: adding concurrency then only holds
    more in memory (the importer stops splitting slices while it is).
    """

    def __init__(self, every_s: float = 0.05):
        self.every_s = every_s
        self.lag_s = 0.0
        self._watchers = 0
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Measures while the block runs (the first watcher starts the measuring task, the last stops it)."""
        self._watchers += 1
        if self._task is None:
            self._task = asyncio.create_task(self._measure(), name="loop lag")
        try:
            yield
        finally:
            self._watchers -= 1
            if not self._watchers and self._task is not None:
                self._task.cancel()
                self._task = None
                self.lag_s = 0.0

    async def _measure(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.every_s)
            self.lag_s += 0.2 * (max(0.0, loop.time() - asked - self.every_s) - self.lag_s)
