"""What the `ingestor projector` and `ingestor replay` subcommands run."""

from __future__ import annotations

import asyncio
import io

from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from plumbing.logs import configure_logging
from plumbing.postgres import create_pool
from plumbing.runtime import tune_gc
from plumbing.settings import load_settings
from projections.app import run_projector
from projections.errors import ProjectionError
from projections.read_client import QUESTIONS, Level, RevenueReader
from projections.replay import ReplayReport, replay


def projector() -> None:
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


def ask(tenant_id: str, question: str, level: str, mode: str, params: dict[str, str], as_json: bool) -> str:
    """Answers one common question (or lists them for "list"); raises ValueError with the reason."""
    if question == "list":
        return "\n".join(f"{q.name:28} [{q.min_level.name.lower():8}] {q.description} params: {', '.join(q.params) or '-'}"
                         for q in QUESTIONS.values())
    settings = load_settings()

    async def run() -> list[dict[str, Any]]:
        owner = await create_pool(settings.postgres)
        reader = RevenueReader(settings.reader, owner)
        try:
            return await reader.ask(tenant_id, Level[level.upper()], question, livemode=mode == "live", **params)
        finally:
            await reader.close()
            await owner.close()

    try:
        rows = asyncio.run(run())
    except ProjectionError as exc:
        raise ValueError(str(exc)) from exc
    if as_json:
        return orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode()
    return render_table(question, rows)


def render_table(title: str, rows: list[dict[str, Any]]) -> str:
    """Returns rows as a plain-text table."""
    table = Table(title=title)
    for column in rows[0] if rows else ["(no rows)"]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console = Console(width=160, file=io.StringIO())
    console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined, no-any-return]
