"""`explain`: which subscriptions, charges and refunds make up a figure, and the Stripe events behind them.

A query over the lineage views (migration 0057), never a replay. Every level gets the totals per
movement or kind (counts and amounts) beside the figure they explain, and whether they add up to it;
standard and full also get the contributing rows with their event ids. The summary level's views hold
no ids, so a summary reader cannot get per-customer rows even by asking. The SQL here is fixed; the
caller's values are bind parameters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from projections.read.client import Level
from projections.read.metric_queries import MetricQueryError, parse_day

# Runs read-only SQL as the caller's reader role: (sql, *args) → rows.
RunSql = Callable[..., Awaitable[list[dict[str, Any]]]]
MOVEMENTS = ("new", "expansion", "contraction", "churn", "reactivation")
# The movement columns of analytics.mrr_movements, by movement.
MOVEMENT_COLUMNS = {"new": "new_mrr", "expansion": "expansion_mrr", "contraction": "contraction_mrr",
                    "churn": "churned_mrr", "reactivation": "reactivation_mrr"}
# Metrics explained by MRR changes, and the movements that make each.
MRR_METRICS: dict[str, tuple[str, ...]] = {
    "mrr": MOVEMENTS, "mrr_movements": MOVEMENTS,
    "revenue_churn_rate": ("churn", "contraction"), "subscriber_churn_rate": ("churn",),
}
# Metrics explained by revenue contributions, and the kinds (with their sign in the figure).
REVENUE_METRICS: dict[str, dict[str, int]] = {
    "gross_revenue": {"charge": 1}, "refunded_revenue": {"refund": 1},
    "net_revenue": {"charge": 1, "refund": -1}, "failed_payments": {"failed_charge": 1},
}
EXPLAINABLE = (*MRR_METRICS, *REVENUE_METRICS)
MAX_CONTRIBUTIONS = 500


@dataclass(frozen=True)
class ExplainRequest:
    """What to explain: a metric in one month (MRR metrics) or over days (revenue metrics)."""

    metric: str
    livemode: bool
    month: date | None = None
    start: date | None = None
    end: date | None = None
    currency: str | None = None
    movement: str | None = None
    limit: int = 100


def _checked(request: ExplainRequest) -> ExplainRequest:
    if request.metric not in EXPLAINABLE:
        raise MetricQueryError(f"explain knows: {', '.join(EXPLAINABLE)}; {request.metric[:60]!r} is not one")
    if not 1 <= request.limit <= MAX_CONTRIBUTIONS:
        raise MetricQueryError(f"limit must be between 1 and {MAX_CONTRIBUTIONS}")
    if request.currency is not None and not (len(request.currency) == 3 and request.currency.isalpha()):
        raise MetricQueryError("currency is a three-letter ISO code such as usd")
    if request.metric in MRR_METRICS:
        if request.month is None:
            raise MetricQueryError(f"{request.metric} is explained per month: give month (YYYY-MM)")
        if request.movement is not None and request.movement not in MRR_METRICS[request.metric]:
            raise MetricQueryError(f"movement is one of: {', '.join(MRR_METRICS[request.metric])}")
        return request
    if request.movement is not None:
        raise MetricQueryError(f"{request.metric} has no movements; it is explained by charges and refunds")
    start = request.start or request.month
    end = request.end or (request.start if request.month is None else parse_day("month", request.month.isoformat()[:7], last=True))
    if start is None or end is None:
        raise MetricQueryError(f"{request.metric} is explained per day or period: give from (and to), or month")
    if start > end:
        raise MetricQueryError("from is after to")
    return ExplainRequest(request.metric, request.livemode, None, start, end, request.currency.lower()
                          if request.currency else None, None, request.limit)


async def explain(run: RunSql, level: Level, request: ExplainRequest) -> dict[str, Any]:
    """Returns the figure, its totals per movement or kind, whether they add up, and (standard+) the rows."""
    request = _checked(request)
    if request.metric in MRR_METRICS:
        return await _explain_mrr(run, level, request)
    return await _explain_revenue(run, level, request)


async def _explain_mrr(run: RunSql, level: Level, r: ExplainRequest) -> dict[str, Any]:
    assert r.month is not None
    month = r.month.replace(day=1)
    movements = [r.movement] if r.movement else list(MRR_METRICS[r.metric])
    args: tuple[Any, ...] = (r.livemode, month, movements, r.currency)
    scope = "livemode = $1 AND month = $2 AND movement = ANY($3::text[]) AND ($4::text IS NULL OR currency = $4)"
    totals = await run(f"SELECT currency, movement, customers, subscriptions, events, amount FROM analytics.mrr_change_counts "
                       f"WHERE {scope} ORDER BY currency, movement", *args)
    figures = await run("SELECT * FROM analytics.mrr_movements WHERE livemode = $1 AND month = $2 "
                        "AND ($3::text IS NULL OR currency = $3) ORDER BY currency", r.livemode, month, r.currency)
    by_currency = {f["currency"]: f for f in figures}
    for total in totals:
        figure = by_currency.get(total["currency"], {}).get(MOVEMENT_COLUMNS[total["movement"]])
        total["figure"] = figure
        total["adds_up"] = figure is not None and Decimal(str(figure)) == Decimal(str(total["amount"]))
    # Both ways: every movement the figures show must be explained by rows, not only the rows by figures.
    explained = {(t["currency"], t["movement"]) for t in totals}
    unexplained = [(f["currency"], m) for f in figures for m in movements
                   if Decimal(str(f[MOVEMENT_COLUMNS[m]])) != 0 and (f["currency"], m) not in explained]
    answer: dict[str, Any] = {
        "metric": r.metric, "month": month.isoformat()[:7], "mode": "live" if r.livemode else "test",
        "movements": movements, "figures": figures, "totals": totals,
        "adds_up": all(t["adds_up"] for t in totals) and not unexplained,
    }
    rows = ("SELECT currency, movement, customer_id, subscription_id, opening_mrr, closing_mrr, change, event_id, "
            f"derived_as, source, event_time FROM analytics.mrr_changes WHERE {scope} "
            "ORDER BY currency, movement, change, subscription_id")
    return await _with_contributions(run, level, answer, rows, args, r.limit, "the subscriptions")


async def _explain_revenue(run: RunSql, level: Level, r: ExplainRequest) -> dict[str, Any]:
    signs = REVENUE_METRICS[r.metric]
    kinds = list(signs)
    args: tuple[Any, ...] = (r.livemode, r.start, r.end, kinds, r.currency)
    scope = "livemode = $1 AND day BETWEEN $2 AND $3 AND kind = ANY($4::text[]) AND ($5::text IS NULL OR currency = $5)"
    totals = await run("SELECT currency, kind, sum(items)::bigint AS items, sum(amount)::bigint AS amount "
                       f"FROM analytics.revenue_contribution_counts WHERE {scope} GROUP BY 1, 2 ORDER BY 1, 2", *args)
    figures = await run("SELECT currency, sum(gross)::bigint AS gross, sum(refunded)::bigint AS refunded, "
                        "sum(net)::bigint AS net, sum(failed_count)::bigint AS failed_count, "
                        "sum(failed_amount)::bigint AS failed_amount FROM analytics.daily_revenue "
                        "WHERE livemode = $1 AND day BETWEEN $2 AND $3 AND ($4::text IS NULL OR currency = $4) "
                        "GROUP BY 1 ORDER BY 1", r.livemode, r.start, r.end, r.currency)
    figure_column = {"gross_revenue": "gross", "refunded_revenue": "refunded", "net_revenue": "net",
                     "failed_payments": "failed_amount"}[r.metric]
    explained: dict[str, int] = {}
    for total in totals:
        explained[total["currency"]] = explained.get(total["currency"], 0) + signs[total["kind"]] * total["amount"]
    figure_of = {f["currency"]: f[figure_column] for f in figures}
    checks = [{"currency": c, "figure": figure_of.get(c, 0), "explained": explained.get(c, 0),
               "adds_up": figure_of.get(c, 0) == explained.get(c, 0)} for c in sorted(set(figure_of) | set(explained))]
    answer: dict[str, Any] = {
        "metric": r.metric, "from": r.start.isoformat() if r.start else None, "to": r.end.isoformat() if r.end else None,
        "mode": "live" if r.livemode else "test", "kinds": kinds, "figures": figures, "totals": totals,
        "checks": checks, "adds_up": all(c["adds_up"] for c in checks),
    }
    rows = ("SELECT day, currency, kind, charge_id, refund_id, customer_id, amount, event_id, source, event_time "
            f"FROM analytics.revenue_contributions WHERE {scope} ORDER BY day, currency, kind, charge_id, refund_id")
    return await _with_contributions(run, level, answer, rows, args, r.limit, "the charges, refunds")


async def _with_contributions(run: RunSql, level: Level, answer: dict[str, Any], sql: str, args: tuple[Any, ...],
                              limit: int, what: str) -> dict[str, Any]:
    """Adds the contributing rows (standard level and up; summary gets a note instead), at most `limit`."""
    if level < Level.STANDARD:
        answer["contributions"] = None
        answer["note"] = f"summary level: counts and amounts only; {what} and events need a standard reader"
        return answer
    rows = await run(f"{sql} LIMIT ${len(args) + 1}", *args, limit + 1)
    answer["contributions"], answer["truncated"] = rows[:limit], len(rows) > limit
    return answer
