"""What the `ingestor projector` and `ingestor replay` subcommands run."""

from __future__ import annotations

import asyncio

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from plumbing.logs import configure_logging
from plumbing.postgres import create_pool
from plumbing.settings import load_settings
from projections.app import run_projector
from projections.replay import ReplayReport, replay


def projector() -> None:
    """Runs one projector group member until SIGTERM/SIGINT."""
    settings = load_settings()
    configure_logging(settings.log)
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
