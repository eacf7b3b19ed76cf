"""`ingestor ask`: a common revenue question answered through the read layer, printed as a table or JSON.

An operator's command (it reads the settings and the master keys): it asks as the tenant's own reader
role of the level given, so the database applies that level and tenant as for any reader.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from ingestor.connections.tenant_store import PostgresTenantStore
from plumbing.postgres import create_pool
from plumbing.settings import load_settings
from projections.errors import ProjectionError
from projections.read.client import MONEY_COLUMNS, PARAM_EXAMPLES, QUESTIONS, Level, RevenueReader
from projections.read.money import format_money
from service.web import load_keyring


def ask(tenant_id: str, question: str, level: str, mode: str, params: dict[str, str], as_json: bool) -> str:
    """Answers one common question (or lists them for "list"); raises ValueError with the reason."""
    if question == "list":
        return "\n".join(
            f"{q.name:28} [{q.min_level.name.lower():8}] {q.description}\n{'':39}e.g. ingestor ask {tenant_id} {q.name}"
            + "".join(f" -p {p}={PARAM_EXAMPLES[p]}" for p in q.params) for q in QUESTIONS.values())
    settings = load_settings()

    async def run() -> list[dict[str, Any]]:
        # The operator's command: it reads as the tenant's own reader role of the chosen level.
        owner = await create_pool(settings.postgres)
        tenants = PostgresTenantStore(owner, load_keyring(settings.vault), settings.reader)
        reader = RevenueReader(settings.reader, tenants.reader_credentials)
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


def shown(column: str, value: Any, row: dict[str, Any]) -> str:
    """A cell as a person reads it: an amount of the row's currency in its major unit with the symbol."""
    if column in MONEY_COLUMNS and value is not None and isinstance(row.get("currency"), str):
        return format_money(value, row["currency"])
    return "" if value is None else str(value)


def render_table(title: str, rows: list[dict[str, Any]]) -> str:
    """Returns rows as a plain-text table, amounts in major units (the JSON output keeps minor units)."""
    table = Table(title=title)
    for column in rows[0] if rows else ["(no rows)"]:
        table.add_column(column, justify="right" if column in MONEY_COLUMNS else "left")
    for row in rows:
        table.add_row(*(shown(c, v, row) for c, v in row.items()))
    console = Console(width=160, file=io.StringIO())
    console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined, no-any-return]
