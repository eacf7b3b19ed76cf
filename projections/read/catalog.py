"""The metrics catalog: projections/read/metrics_catalog.yaml is the one source; the analytics.metrics_catalog
view and docs/metrics.md are derived from it (`python -m projections.read.catalog` rewrites the doc)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from projections.errors import ProjectionError
from schemas.stripe_objects import DERIVATIONS

CATALOG_FILE = Path(__file__).resolve().parent / "metrics_catalog.yaml"
DOC_FILE = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
LEVELS = ("summary", "standard", "full")
GRAINS = ("day", "month")
AGGREGATIONS = ("sum", "value")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_ORDER_TERM = re.compile(r"^[a-z_][a-z0-9_]*( (ASC|DESC))?$")


@dataclass(frozen=True)
class MetricQuery:
    """How query_metric reads a metric: see the header of metrics_catalog.yaml."""

    view: str
    measures: dict[str, str]
    dimensions: list[str] = field(default_factory=list)
    time: str | None = None
    grain: str | None = None
    filters: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    @property
    def group_by_options(self) -> list[str]:
        """How rows may be grouped in time: the grain, coarser periods and the total when every measure sums."""
        if self.grain is None:
            return []
        if any(a == "value" for a in self.measures.values()):
            return [self.grain]
        return [*GRAINS[GRAINS.index(self.grain):], "total"]


@dataclass(frozen=True)
class Metric:
    """One catalog entry."""

    name: str
    question: str
    definition: str
    sql: str
    unit: str
    min_level: str
    query: MetricQuery


def load_catalog(path: Path = CATALOG_FILE) -> list[Metric]:
    """Returns the catalog's metrics; raises ProjectionError on a malformed entry."""
    entries = yaml.safe_load(path.read_text())
    metrics = []
    for i, entry in enumerate(entries):
        try:
            metric = Metric(**{**entry, "query": MetricQuery(**entry.get("query") or {})})
        except TypeError as exc:
            raise ProjectionError(f"metrics catalog entry {i}: {exc}") from exc
        if metric.min_level not in LEVELS or not all(vars(metric).values()):
            raise ProjectionError(f"metrics catalog entry {metric.name!r}: empty field or unknown level")
        _check_query(metric.name, metric.query)
        metrics.append(metric)
    return metrics


def _check_query(name: str, query: MetricQuery) -> None:
    """The query spec names only plain identifiers: they are written into SQL (values never are)."""
    names: list[Any] = [query.view, *query.measures, *query.dimensions, *query.filters, *query.filters.values()]
    if query.time is not None:
        names.append(query.time)
    problems = [f"{n!r} is not an identifier" for n in names if not isinstance(n, str) or not _IDENTIFIER.match(n)]
    problems += [f"order term {t!r}" for t in query.order if not _ORDER_TERM.match(t)]
    problems += [f"aggregation {a!r}" for a in query.measures.values() if a not in AGGREGATIONS]
    if (query.time is None) != (query.grain is None) or (query.grain is not None and query.grain not in GRAINS):
        problems.append("time and grain (day or month) go together")
    if not query.measures:
        problems.append("no measures")
    if problems:
        raise ProjectionError(f"metrics catalog entry {name!r}: query: {'; '.join(problems)}")


async def sync_catalog(conn: asyncpg.Connection, metrics: list[Metric] | None = None) -> None:
    """Makes analytics_private.metrics_catalog hold exactly the catalog file's entries."""
    metrics = load_catalog() if metrics is None else metrics
    async with conn.transaction():
        await conn.execute("DELETE FROM analytics_private.metrics_catalog")
        await conn.executemany(
            "INSERT INTO analytics_private.metrics_catalog (name, question, definition, sql, unit, min_level) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            [(m.name, m.question, m.definition, m.sql, m.unit, m.min_level) for m in metrics],
        )


def render_doc(metrics: list[Metric]) -> str:
    """Returns docs/metrics.md for the catalog."""
    lines = [
        "# Revenue metrics",
        "",
        "Generated from `projections/read/metrics_catalog.yaml` by `python -m projections.read.catalog`; the same",
        "entries are in the `analytics.metrics_catalog` view. Amounts are integer minor units of their",
        "currency (`analytics.currency_units` says how many decimals each currency has); test-mode data",
        "is kept apart by `livemode`. The SQL behind each view is in `projections/migrations/0003_revenue_views.sql`",
        "(with the definitions as comments) and `0006_analytics_views.sql`.",
        "",
        "Permission levels: **summary** (aggregates only) < **standard** (+ per-customer and per-transaction",
        "rows) < **full** (+ card brand and last4).",
        "",
    ]
    for m in metrics:
        q = m.query
        lines += [f"## `{m.name}`", "", f"*{m.question}*", "", m.definition, "",
                  f"- unit: {m.unit}", f"- lowest level: {m.min_level}",
                  f"- grain: {q.grain or 'one row per item (no time grain)'}"
                  + (f"; group by {', '.join(q.group_by_options)}" if q.group_by_options else ""),
                  f"- dimensions: {', '.join(q.dimensions) or 'none'}",
                  f"- measures: {', '.join(f'{c} ({a})' for c, a in q.measures.items())}",
                  *([f"- parameters: {', '.join(q.filters)}"] if q.filters else []),
                  "", "```sql", m.sql, "```", ""]
    lines += [
        "## Field derivations",
        "",
        "Every metric reads the canonical record of each Stripe object (`schemas/stripe_objects/`), whatever API",
        "version (2015 on) rendered it. One rule per field, tried left to right; a money amount, currency,",
        "interval or quantity that no rule gives makes the object *unreadable*: its event is dead-lettered and",
        "counted in the tenant's health (`unreadable_events`), never stored as 0, \"\" or \"month\".",
        "",
        "| object | field | rule | when nothing gives it |",
        "|---|---|---|---|",
        *(f"| {o} | {f} | {rule} | {missing} |" for o, f, rule, missing in DERIVATIONS),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    DOC_FILE.parent.mkdir(exist_ok=True)
    DOC_FILE.write_text(render_doc(load_catalog()))
    print(f"wrote {DOC_FILE}")
