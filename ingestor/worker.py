"""The worker process: the events poller and the history importer, sharing one Stripe budget per account.

Resources open in order and close in reverse (`AsyncExitStack`): Postgres pool, Kafka publisher,
then the poller and importer tasks. On SIGTERM the loops stop taking new work, the in-flight page
or poll finishes (its checkpoint or cursor is written only after Kafka acknowledged it), the
publisher flushes and the pool closes. `burst=True` runs each loop until there is nothing to do,
like arq's burst mode, for tests and one-off runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg

from ingestor.checkpoints import PostgresCheckpoints
from ingestor.connection_store import PostgresConnectionStore
from ingestor.importer import ImportOutcome, StripeImporter
from ingestor.poller import StripeEventsPoller
from ingestor.readers import StripeReaders
from ingestor.vault import MasterKeyring
from plumbing.kafka import KafkaPublisher
from plumbing.logs import get_logger
from plumbing.postgres import create_pool
from plumbing.settings import Settings
from schemas import EnvelopeCodec

log = get_logger(__name__)


@dataclass
class Worker:
    """The wired poller and importer with what they share."""

    pool: asyncpg.Pool
    store: PostgresConnectionStore
    checkpoints: PostgresCheckpoints
    publisher: KafkaPublisher
    poller: StripeEventsPoller
    importer: StripeImporter


@contextlib.asynccontextmanager
async def open_worker(settings: Settings, keyring: MasterKeyring, readers: StripeReaders | None = None,
                      client_id: str = "stripe-worker") -> AsyncIterator[Worker]:
    """Opens the pool and the publisher and wires the poller and importer; closes them in reverse."""
    async with contextlib.AsyncExitStack() as stack:
        pool = await create_pool(settings.postgres)
        stack.push_async_callback(pool.close)
        # Locks hold a connection for a whole poll cycle or import pass: they get their own pool,
        # so queries never wait behind them.
        holders = settings.poller.max_concurrent_connections + settings.importer.max_concurrent_imports
        lock_pool = await create_pool(settings.postgres.model_copy(update={"pool_min_size": 0, "pool_max_size": holders}))
        stack.push_async_callback(lock_pool.close)
        publisher = KafkaPublisher(settings.kafka, client_id=client_id)
        stack.push_async_callback(publisher.stop)
        await publisher.start()
        store, checkpoints = PostgresConnectionStore(pool, keyring), PostgresCheckpoints(pool, lock_pool)
        readers = readers or StripeReaders(settings.stripe)
        codec, topic = EnvelopeCodec(), settings.kafka.raw_topic
        yield Worker(
            pool, store, checkpoints, publisher,
            StripeEventsPoller(store, checkpoints, readers, publisher, codec, topic, settings.poller, settings.importer),
            StripeImporter(store, checkpoints, readers, publisher, codec, topic, settings.importer),
        )


async def run_worker(settings: Settings, keyring: MasterKeyring, poll: bool = True, imports: bool = True) -> None:
    """Runs the poller and/or importer until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_worker(settings, keyring) as worker:
        tasks = []
        if poll:
            tasks.append(asyncio.create_task(worker.poller.run_forever(stop), name="poller"))
        if imports:
            tasks.append(asyncio.create_task(worker.importer.run_forever(stop), name="importer"))
        for task in tasks:
            task.add_done_callback(_stop_on_crash(stop))
        await stop.wait()
        log.info("stopping: finishing in-flight work")
        await asyncio.gather(*tasks, return_exceptions=True)


def _stop_on_crash(stop: asyncio.Event) -> Callable[[asyncio.Task[None]], None]:
    def callback(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("worker task crashed; stopping", task=task.get_name(), error=repr(task.exception()))
            stop.set()
    return callback


async def import_until_done(worker: Worker, connection_id: str, retry_pause_s: float = 1.0) -> ImportOutcome:
    """Runs the connection's import until it is done or paused (retrying transient failures)."""
    while True:
        outcome = await worker.importer.run_connection(connection_id)
        if outcome.state in ("done", "paused"):
            return outcome
        log.warning("import not finished; retrying", state=outcome.state, detail=outcome.detail)
        await asyncio.sleep(retry_pause_s)
