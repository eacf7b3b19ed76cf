"""The projector process (`ingestor projector`): Postgres pool, dead-letter publisher, metrics endpoint, one group member.

Resources open in order and close in reverse. On SIGTERM the loop finishes the batch in hand
(its transaction commits or not as a whole), then leaves the group; positions need no final
commit because every batch stored its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import timedelta

from prometheus_client import CollectorRegistry, start_http_server
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from plumbing.kafka import KafkaPublisher, PublishError
from plumbing.logs import configure_logging, get_logger
from plumbing.postgres import create_pool
from plumbing.runtime import log_tasks, tune_gc
from plumbing.settings import Settings, load_settings
from projections.projector.consumer import RevenueProjector
from projections.projector.dedupe_pruning import prune_periodically
from projections.projector.metrics import ProjectorMetrics
from projections.projector.replay import ReplayReport, replay

log = get_logger(__name__)


async def run_projector(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Runs one projector group member until `stop` is set (or SIGTERM/SIGINT when none is given)."""
    stop = stop or _stop_on_signals()
    registry = CollectorRegistry()
    if settings.projector.metrics_port:
        start_http_server(settings.projector.metrics_port, addr=settings.projector.metrics_host, registry=registry)
    pool = await create_pool(settings.postgres)
    try:
        dead_letters = KafkaPublisher(settings.kafka, client_id="projector-dead-letters")
        try:
            await dead_letters.start()
        except PublishError as exc:  # it connects on its first publish; the consumer waits for Kafka below
            log.warning("Kafka unreachable at start-up", error=str(exc))
        metrics = ProjectorMetrics(registry)
        pruning = asyncio.create_task(prune_periodically(
            pool, timedelta(days=settings.projector.dedupe_retention_days), settings.projector.dedupe_prune_interval_s,
            metrics.dedupe_pruned))
        try:
            projector = RevenueProjector(settings.kafka, pool, dead_letters, metrics,
                                         max_records=settings.projector.max_batch_records)
            await projector.start()
            log.info("projector started", topic=settings.kafka.raw_topic, group=settings.kafka.projector_group)
            try:
                await projector.run(stop)
            finally:
                await projector.stop()
        finally:
            pruning.cancel()  # a round in progress stops at once; its advisory lock goes with the connection
            with contextlib.suppress(asyncio.CancelledError):
                await pruning
            await dead_letters.stop()
    finally:
        await pool.close()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGUSR1, log_tasks)  # where each task waits (docs/operating.md)
    return stop


def serve() -> None:
    """Runs one projector group member until SIGTERM/SIGINT."""
    settings = load_settings()
    configure_logging(settings.log)
    tune_gc()
    asyncio.run(run_projector(settings))


def replay_projections(tenant_id: str | None, timeout_s: float) -> ReplayReport:
    """Rebuilds projections from offset zero with a progress bar; returns the report."""
    settings = load_settings()
    configure_logging(settings.log)

    async def run() -> ReplayReport:
        pool = await create_pool(settings.postgres)
        try:
            with Progress(TextColumn("replaying {task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn()) as progress:
                task = progress.add_task(settings.kafka.raw_topic, total=None)
                return await replay(settings, pool, tenant_id, timeout_s,
                                    on_progress=lambda n: progress.advance(task, n))
        finally:
            await pool.close()

    return asyncio.run(run())


if __name__ == "__main__":
    serve()
