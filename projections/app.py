"""The projector process: Postgres pool, dead-letter publisher, metrics endpoint, one group member.

Resources open in order and close in reverse. On SIGTERM the loop finishes the batch in hand
(its transaction commits or not as a whole), then leaves the group; positions need no final
commit because every batch stored its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from prometheus_client import CollectorRegistry, start_http_server

from plumbing.kafka import KafkaPublisher
from plumbing.logs import get_logger
from plumbing.postgres import create_pool
from plumbing.settings import Settings
from projections.consumer import ProjectorMetrics, RevenueProjector

log = get_logger(__name__)


async def run_projector(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Runs one projector group member until `stop` is set (or SIGTERM/SIGINT when none is given)."""
    stop = stop or _stop_on_signals()
    registry = CollectorRegistry()
    if settings.projector.metrics_port:
        start_http_server(settings.projector.metrics_port, addr="127.0.0.1", registry=registry)
    pool = await create_pool(settings.postgres)
    try:
        async with KafkaPublisher(settings.kafka, client_id="projector-dead-letters") as dead_letters:
            projector = RevenueProjector(settings.kafka, pool, dead_letters, ProjectorMetrics(registry),
                                         max_records=settings.projector.max_batch_records)
            await projector.start()
            log.info("projector started", topic=settings.kafka.raw_topic, group=settings.kafka.projector_group)
            try:
                await projector.run(stop)
            finally:
                await projector.stop()
    finally:
        await pool.close()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop
