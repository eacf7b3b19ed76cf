"""A catalog metric as SQL: the governed way to read a metric over a period, grouped as it allows.

Pure: builds the statement and its arguments from the catalog's query spec (identifiers checked when
the catalog loads) and the caller's values (always bind parameters). Amounts of different currencies
are never added: a metric with a currency dimension keeps it in every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from projections.errors import ProjectionError
from projections.read.catalog import Metric

MAX_ROWS = 1000
ONE_DAY = timedelta(days=1)


class MetricQueryError(ProjectionError):
    """The metric cannot be read that way; the message names what it allows."""


@dataclass(frozen=True)
class MetricSql:
    """A statement over one analytics view and its bind arguments ($1 is livemode)."""

    sql: str
    args: tuple[Any, ...]
    group_by: str | None


def parse_day(name: str, value: str | date | None, *, last: bool = False) -> date | None:
    """Returns the day a value names: YYYY-MM-DD, or for YYYY-MM the month's first day (its last with `last`,
    so a period "to 2026-03" takes all of March); None stays None."""
    if value is None or isinstance(value, date):
        return value
    text = str(value).strip()
    try:
        if len(text) == 7:
            first = date.fromisoformat(text + "-01")
            return first if not last else date(first.year + first.month // 12, first.month % 12 + 1, 1) - ONE_DAY
        return date.fromisoformat(text)
    except ValueError:
        raise MetricQueryError(f"{name} must be a date (YYYY-MM-DD) or a month (YYYY-MM), not {text[:20]!r}") from None


def metric_sql(metric: Metric, *, livemode: bool, start: str | date | None = None, end: str | date | None = None,
               group_by: str | None = None, params: dict[str, str] | None = None, limit: int = 100) -> MetricSql:
    """Returns the SQL reading `metric` between `start` and `end` (inclusive) grouped by `group_by`.

    The statement returns up to `limit` + 1 rows: more than `limit` means the answer was cut.
    """
    q = metric.query
    params = dict(params or {})
    unknown = sorted(set(params) - set(q.filters))
    missing = [p for p in q.filters if p not in params]
    if unknown or missing:
        raise MetricQueryError(f"{metric.name} takes the parameters: {', '.join(q.filters) or 'none'}"
                               + (f"; missing {', '.join(missing)}" if missing else "")
                               + (f"; unknown {', '.join(unknown)}" if unknown else ""))
    if not 1 <= limit <= MAX_ROWS:
        raise MetricQueryError(f"limit must be between 1 and {MAX_ROWS}")
    args: list[Any] = [livemode]
    where = ["livemode = $1"]
    first, last = parse_day("from", start), parse_day("to", end, last=True)
    if q.time is None:
        if group_by is not None or first is not None or last is not None:
            raise MetricQueryError(f"{metric.name} has one row per item: it takes no period and no group_by")
    else:
        if first and last and first > last:
            raise MetricQueryError("from is after to")
        if q.grain == "month":  # a month-grain view holds the first day of each month
            first, last = first and first.replace(day=1), last and last.replace(day=1)
        for bound, op in ((first, ">="), (last, "<=")):
            if bound is not None:
                args.append(bound)
                where.append(f"{q.time} {op} ${len(args)}")
    for name, column in q.filters.items():
        args.append(str(params[name]))
        where.append(f"{column} = ${len(args)}")
    group_by = group_by or q.grain
    if q.grain is not None and group_by not in q.group_by_options:
        raise MetricQueryError(f"{metric.name} can be grouped by: {', '.join(q.group_by_options)}")
    columns, keys, order = _shape(metric, group_by)
    sql = f"SELECT {', '.join(columns)} FROM analytics.{q.view} WHERE {' AND '.join(where)}"
    if keys:
        sql += f" GROUP BY {', '.join(map(str, keys))}"
    args.append(limit + 1)  # one more than asked: the caller can say the answer was cut
    sql += f" ORDER BY {', '.join(order)} LIMIT ${len(args)}"
    return MetricSql(sql, tuple(args), group_by)


def _shape(metric: Metric, group_by: str | None) -> tuple[list[str], list[int], list[str]]:
    """Returns the select list, the GROUP BY positions (none when the view's rows are the answer) and the order."""
    q = metric.query
    if group_by is None:  # one row per item
        return [*q.dimensions, *q.measures], [], q.order or list(q.dimensions)
    if group_by == q.grain:  # the view's own rows
        return [q.time or "", *q.dimensions, *q.measures], [], [q.time or "", *q.dimensions]
    period = [] if group_by == "total" else [f"date_trunc('{group_by}', {q.time})::date AS {group_by}"]
    # A period with an unknown amount (a day without an exchange rate) has an unknown total, never a partial sum.
    columns = [*period, *q.dimensions,
               *(f"CASE WHEN count(*) = count({m}) THEN sum({m})::bigint END AS {m}" for m in q.measures)]
    keys = list(range(1, len(period) + len(q.dimensions) + 1))
    return columns, keys, [str(k) for k in keys] or ["1"]
