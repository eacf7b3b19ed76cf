"""What the `ingestor` console subcommands of the write path do: web, worker, poll, import, rotate-master-key.

`stack/cli.py` parses the arguments and calls these; each reads the settings once, configures the
secret-masking logs and runs one process's job. The import command shows a `rich` progress bar per
resource (objects published, share of the 12-month window covered) while it runs.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from ingestor.app import create_web_app, load_keyring
from ingestor.connections import import_window
from ingestor.rekey import master_keys_in_use, reencrypt_all
from ingestor.stripe_catalog import IMPORTED
from ingestor.worker import Worker, import_until_done, open_worker, run_worker
from plumbing.logs import configure_logging
from plumbing.settings import Settings, load_settings


def _settings() -> Settings:
    settings = load_settings()
    configure_logging(settings.log)
    return settings


def web() -> None:
    """Serves the webhook receiver and the control API until SIGTERM."""
    from aiohttp import web as aiohttp_web

    settings = _settings()
    app = create_web_app(settings, load_keyring(settings.vault))
    aiohttp_web.run_app(app, host=settings.http.host, port=settings.http.port,
                        shutdown_timeout=settings.http.shutdown_timeout_s, print=None)


def worker(poll: bool, imports: bool) -> None:
    """Runs the poller and/or the importer until SIGTERM."""
    settings = _settings()
    asyncio.run(run_worker(settings, load_keyring(settings.vault), poll, imports))


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
    """Draws one bar per resource (share of the window covered) until `job` ends."""
    columns = (TextColumn("{task.description:>16}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
               TextColumn("{task.fields[objects]:>8} objects"))
    with Progress(*columns, console=Console(stderr=True)) as bars:
        ids = {r.name: bars.add_task(r.name, total=1.0, objects=0) for r in IMPORTED}
        while True:
            for cp in await w.checkpoints.import_checkpoints(connection_id):
                if cp.resource in ids:
                    bars.update(ids[cp.resource], completed=cp.covered(), objects=cp.objects_published)
            if job.done():
                return
            await asyncio.sleep(0.5)


def rotate_master_key() -> str:
    """Re-encrypts every stored secret with the current master key; reports what each key id still holds."""
    settings = _settings()
    keyring = load_keyring(settings.vault)

    async def run() -> str:
        pool = await asyncpg.create_pool(settings.postgres.dsn.get_secret_value(), min_size=1, max_size=2)
        try:
            report = await reencrypt_all(pool, keyring)
            used = await master_keys_in_use(pool)
        finally:
            await pool.close()
        old = {k: n for k, n in used.items() if k != keyring.current}
        verdict = ("no ciphertext uses an older master key: the old keys may be removed from the setting"
                   if not old else f"still under older keys: {old}")
        failed = f"; could not decrypt {len(report.failed)}: {report.failed}" if report.failed else ""
        return f"re-encrypted {report.reencrypted} secret(s) with master key {keyring.current!r}; {verdict}{failed}"

    return asyncio.run(run())
