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
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from ingestor.connections.store import PostgresConnectionStore
from ingestor.connections.vault import MasterKeyring
from ingestor.connections.views import import_progress_json, import_window
from ingestor.envelope.publisher import RawEventPublisher
from ingestor.errors import IngestError
from ingestor.sources.checkpoints import PostgresCheckpoints, run_window
from ingestor.sources.deps import SourceDeps
from ingestor.sources.importer import ImportOutcome, StripeImporter
from ingestor.sources.poller import StripeEventsPoller
from ingestor.sources.reconcile import Reconciler
from ingestor.stripe_api.catalog import IMPORTED
from ingestor.stripe_api.readers import StripeReaders
from plumbing.kafka import KafkaPublisher, PublishError
from plumbing.logs import configure_logging, get_logger
from plumbing.postgres import DatabaseUnavailableError, create_pool
from plumbing.runtime import cancel_and_wait, log_tasks, tune_gc
from plumbing.settings import Settings, load_settings
from service.web import load_keyring

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
        publisher = KafkaPublisher(settings.kafka, client_id=client_id)
        stack.push_async_callback(publisher.stop)
        try:
            await publisher.start()
        except PublishError as exc:  # it connects on its first publish; passes retry until Kafka is back
            log.warning("Kafka unreachable at start-up", error=str(exc))
        store, checkpoints = PostgresConnectionStore(pool, keyring), PostgresCheckpoints(pool)
        deps = SourceDeps(store, checkpoints, readers or StripeReaders(settings.stripe, pool=pool),
                          RawEventPublisher(publisher, settings.kafka.raw_topic))
        reconciler = Reconciler(pool, store, deps.readers, settings.kafka,
                                projected_wait_s=settings.importer.reconcile_projected_wait_s)
        checks: set[asyncio.Task[None]] = set()

        async def check(connection_id: str, window: tuple[int, int]) -> None:
            try:
                report = await reconciler.run(connection_id, window, "after_import")
            except (IngestError, LookupError, DatabaseUnavailableError) as exc:  # the import stays done
                log.warning("check against Stripe after the import failed", connection_id=connection_id, error=str(exc))
                return
            log.info("checked against Stripe after the import", connection_id=connection_id, matches=report["matches"])

        async def check_against_stripe(connection_id: str) -> None:
            """After every import, in the background (it waits for the projector): Stripe's counts and money
            over the import's range against the tables. Cancelled when the worker stops."""
            done = await checkpoints.import_checkpoints(connection_id)
            if done:
                window = run_window(done)
                task = asyncio.get_running_loop().create_task(check(connection_id, window))
                checks.add(task)
                task.add_done_callback(checks.discard)

        stack.push_async_callback(lambda: cancel_and_wait(list(checks)))

        yield Worker(
            pool, store, checkpoints, publisher,
            StripeEventsPoller(deps, settings.poller, settings.importer),
            StripeImporter(deps, settings.importer,
                           on_done=check_against_stripe if settings.importer.reconcile_after_import else None),
        )


async def run_worker(settings: Settings, keyring: MasterKeyring, poll: bool = True, imports: bool = True) -> None:
    """Runs the poller and/or importer until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, log_tasks)  # where each task waits: why no progress (docs/operating.md)
    async with open_worker(settings, keyring) as worker:
        tasks = []
        if poll:
            tasks.append(asyncio.create_task(worker.poller.run_forever(stop), name="poller"))
        if imports:
            tasks.append(asyncio.create_task(worker.importer.run_forever(stop), name="importer"))
        for task in tasks:
            task.add_done_callback(_stop_on_crash(stop))
        await stop.wait()
        log.info("stopping: finishing the pages and polls in flight", grace_s=settings.importer.stop_grace_s)
        _, late = await asyncio.wait(tasks, timeout=settings.importer.stop_grace_s)
        # Safe: a checkpoint is only ever saved after Kafka acknowledged what it covers.
        await cancel_and_wait(late)


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
        if outcome.state == "more":
            continue
        log.warning("import not finished; retrying", state=outcome.state, detail=outcome.detail)
        await asyncio.sleep(retry_pause_s)


def _settings() -> Settings:
    settings = load_settings()
    configure_logging(settings.log)
    return settings


def serve(poll: bool, imports: bool) -> None:
    """Runs the poller and/or the importer until SIGTERM."""
    import uvloop

    settings = _settings()
    tune_gc()
    uvloop.run(run_worker(settings, load_keyring(settings.vault), poll, imports))


def poll_once() -> list[str]:
    """Runs one poll cycle for every pollable connection; returns one line per connection."""
    settings = _settings()

    async def run() -> list[str]:
        async with open_worker(settings, load_keyring(settings.vault), client_id="stripe-poller") as w:
            return [f"{o.connection_id}: {o.state} published={o.published} seen={o.seen} {o.detail}".rstrip()
                    for o in await w.poller.run_once(force=True)]

    return asyncio.run(run())


def import_connection(connection_id: str, months: int | None, restart: bool, progress: bool = True) -> str:
    """Runs (or with `restart`, starts over) one connection's import to the end, showing progress."""
    settings = _settings()

    async def run() -> str:
        async with open_worker(settings, load_keyring(settings.vault), client_id="stripe-importer") as w:
            if restart or not await w.checkpoints.import_checkpoints(connection_id):
                start, end = import_window(time.time(), months or settings.importer.history_months)
                await w.checkpoints.start_import(connection_id, [r.name for r in IMPORTED], start, end, "on_demand")
            await w.checkpoints.resume_import(connection_id)
            job = asyncio.create_task(import_until_done(w, connection_id))
            if progress:
                await _show_progress(w, connection_id, job)
            outcome = await job
            return f"{connection_id}: {outcome.state} {outcome.detail}".rstrip()

    return asyncio.run(run())


async def _show_progress(w: Worker, connection_id: str, job: asyncio.Task[object]) -> None:
    """Draws one bar per resource (share of the window covered, objects, objects/s, time left) and a total
    until `job` ends."""
    columns = (TextColumn("{task.description:>16}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
               TextColumn("{task.fields[objects]:>10,} objects"), TextColumn("{task.fields[speed]}"))
    with Progress(*columns, console=Console(stderr=True)) as bars:
        ids = {r.name: bars.add_task(r.name, total=1.0, objects=0, speed="") for r in IMPORTED}
        total = bars.add_task("all", total=1.0, objects=0, speed="")
        while True:
            checkpoints = await w.checkpoints.import_checkpoints(connection_id)
            progress = import_progress_json(checkpoints)
            for name, r in progress["resources"].items():
                if name in ids:
                    bars.update(ids[name], completed=r["covered"], objects=r["objects_published"], speed=_speed_text(r))
            if checkpoints:
                bars.update(total, completed=progress["covered"], objects=progress["objects_published"],
                            speed=_speed_text(progress))
            if job.done():
                return
            await asyncio.sleep(0.5)


def _speed_text(progress: dict[str, Any]) -> str:
    """'1,234 objects/s, 3 min left' from a progress dict (blank parts while unknown)."""
    parts = []
    if progress.get("objects_per_s") is not None:
        parts.append(f"{progress['objects_per_s']:>8,.0f} objects/s")
    if progress.get("eta_s") is not None:
        eta = int(progress["eta_s"])
        parts.append(f"{eta // 60} min {eta % 60:02d} s left" if eta >= 60 else f"{eta} s left")
    return ", ".join(parts)


def reconcile_connection(connection_id: str, months: int | None) -> str:
    """Checks one connection against Stripe over the last `months` months and returns the report in words."""
    settings = _settings()

    async def run() -> dict[str, Any]:
        async with open_worker(settings, load_keyring(settings.vault), client_id="stripe-reconcile") as w:
            reconciler = Reconciler(w.pool, w.store, StripeReaders(settings.stripe, pool=w.pool), settings.kafka,
                                    projected_wait_s=settings.importer.reconcile_projected_wait_s)
            window = import_window(time.time(), months or settings.importer.history_months)
            pages: dict[str, int] = {}

            def progress(resource: str, objects: int) -> None:
                pages[resource] = pages.get(resource, 0) + objects
                Console(stderr=True).print(f"  {resource}: {pages[resource]:,} objects listed", end="\r")

            return await reconciler.run(connection_id, window, "cli", on_page=progress)

    return render_reconcile(asyncio.run(run()))


def render_reconcile(report: dict[str, Any]) -> str:
    """The reconcile report as lines a person reads."""
    lines = ["matches Stripe" if report["matches"] else "DIFFERS from Stripe"]
    for name, r in report["resources"].items():
        line = f"  {name:16} Stripe {r['stripe']:>7,}  ours {r['ours']:>7,}  {'ok' if r['matches'] else 'DIFFERS'}"
        if r["missing_here"]:
            line += f"  missing here: {', '.join(r['missing_here'][:5])}"
        if r["only_here"]:
            line += f"  only here: {', '.join(r['only_here'][:5])}"
        lines.append(line)
    for currency, m in report["charges_by_currency"].items():
        lines.append(f"  charges {currency.upper()}: captured Stripe {m['stripe']['succeeded']:,} "
                     f"ours {m['ours']['succeeded']:,}; refunded Stripe {m['stripe']['refunded']:,} "
                     f"ours {m['ours']['refunded']:,}  {'ok' if m['matches'] else 'DIFFERS'}")
    if report.get("unreadable_at_stripe"):
        lines.append(f"  charges whose money cannot be derived: {', '.join(report['unreadable_at_stripe'][:5])}")
    if not report.get("projection_caught_up", True):
        lines.append("  (the projector had not applied everything published yet: ours may be behind)")
    return "\n".join(lines)
