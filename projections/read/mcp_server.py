"""The AI query layer over the Model Context Protocol: governed metrics, lineage and guarded SQL.

One server definition serves both transports: stdio for an assistant on the operator's machine
(`ingestor mcp`, the credential read once at start) and streamable HTTP mounted in the web process
(each request's bearer token checked by the SDK's auth middleware). Who is asking — tenant and
permission level — comes from the credential only: no tool takes a tenant or a level, so no argument
can widen them. Every query runs as the tenant's own reader role of that level, so the database
enforces tenant (row-level security), level (grants) and limits again.

Tools answer with JSON; a refusal is a tool error whose text says why and what is allowed. Logs name
the tool, tenant, level and outcome — never a query's literals (run_sql logs the normalised statement).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import asyncpg
from mcp.server import MCPServer
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from pydantic import Field

from plumbing.logs import get_logger
from plumbing.postgres import DatabaseUnavailableError
from projections.errors import ProjectionError
from projections.read.catalog import Metric, load_catalog
from projections.read.client import AnswerTooLargeError, Grant, Level, ReaderBusyError, RevenueReader
from projections.read.lineage import EXPLAINABLE, ExplainRequest, explain
from projections.read.metric_queries import MetricQueryError, metric_sql, parse_day
from projections.read.sql_guard import ALLOWED_FUNCTIONS, SqlRefusedError, check_select

log = get_logger(__name__)

SERVER_NAME = "stripe-revenue"
INSTRUCTIONS = """\
Revenue of one company's Stripe account, from its raw Stripe events. Amounts are integer minor units of
their currency (cents for usd, whole yen for jpy): divide by 10^decimals to show them
(analytics.currency_units), and never add amounts of different currencies. Start with list_metrics;
query_metric answers with governed definitions; explain says which subscriptions, charges and Stripe
events make a figure; run_sql is for what no metric covers (one SELECT over the analytics views).
mode "live" is real money, "test" is Stripe test mode."""
# What every tool shares: the caller's credential fixes these; the text tells the model so.
MODE = Annotated[Literal["live", "test"] | None, Field(
    description='"live" (real money) or "test" (Stripe test mode); omit for live, or for the one mode a mode-bound '
                'credential reads.')]
PERIOD_BOUND = Annotated[str | None, Field(description="A day YYYY-MM-DD or a month YYYY-MM, inclusive; omit for no bound.")]

# The caller of the current request: the bearer token's for HTTP; for stdio the token of the environment,
# looked up again on every call so that revoking it takes effect at once. Raises ToolError when gone.
GrantOf = Callable[[], Awaitable[Grant]]


@dataclass(frozen=True)
class _Call:
    """One tool call, for the log line."""

    tool: str
    grant: Grant
    started: float


def build_mcp_server(reader: RevenueReader, grant_of: GrantOf, *, sql_max_rows: int = 1000,
                     sql_max_bytes: int = 2 * 1024 * 1024, token_verifier: Any = None,
                     auth: AuthSettings | None = None) -> MCPServer:
    """Returns the MCP server: tools and resources over `reader`, as the caller `grant_of()` names."""
    logging.getLogger("mcp").setLevel(logging.WARNING)  # its info lines repeat refusal texts, literals included
    server: MCPServer = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS, version="1", log_level="WARNING",
                                  token_verifier=token_verifier, auth=auth)
    catalog = {m.name: m for m in load_catalog()}

    async def begin(tool: str) -> _Call:
        return _Call(tool, await grant_of(), time.monotonic())

    def done(call: _Call, outcome: str, **fields: Any) -> None:
        log.info("mcp tool", tool=call.tool, tenant_id=call.grant.tenant_id, reader_level=call.grant.level.name.lower(),
                 outcome=outcome, ms=round((time.monotonic() - call.started) * 1000, 1), **fields)

    def refuse(call: _Call, reason: str, message: str, **fields: Any) -> ToolError:
        done(call, "refused", reason=reason, **fields)
        return ToolError(message)

    def metric_for(call: _Call, name: str) -> Metric:
        metric = catalog.get(name)
        if metric is None:
            raise refuse(call, "unknown_metric", f"unknown metric {name[:60]!r}; list_metrics names them: "
                         f"{', '.join(catalog)}")
        needed = Level[metric.min_level.upper()]
        if call.grant.level < needed:
            raise refuse(call, "level_too_low", f"{metric.name} needs the {metric.min_level} level; this credential "
                         f"grants {call.grant.level.name.lower()}. Ask the tenant's admin for a {metric.min_level} "
                         "reader token, or use an aggregate metric.", metric=name)
        return metric

    def mode_for(call: _Call, asked: str | None) -> str:
        """The mode a call reads: the one asked, which a mode-bound credential must allow; by default live, or
        the credential's one mode."""
        mode = asked or call.grant.default_mode
        if not call.grant.allows(mode):
            raise refuse(call, "mode_not_granted", f"this credential reads {call.grant.mode} mode only; "
                         f"ask the tenant for a reader token of {mode} mode")
        return mode

    async def run(call: _Call, sql: str, *args: Any, max_rows: int | None = None,
                  max_bytes: int | None = None) -> tuple[list[dict[str, Any]], bool]:
        try:
            return await reader.run_sql_capped(call.grant.tenant_id, call.grant.level, sql, *args, max_rows=max_rows,
                                               max_bytes=max_bytes, mode=call.grant.mode)
        except ReaderBusyError as exc:
            raise refuse(call, "busy", f"{exc}; try again in a few seconds") from None
        except AnswerTooLargeError as exc:
            raise refuse(call, "too_large", f"refused: {exc}") from None
        except DatabaseUnavailableError:
            raise refuse(call, "database_unavailable", "the database is unavailable; try again shortly") from None
        except asyncpg.InsufficientPrivilegeError as exc:
            raise refuse(call, "level_too_low", f"this credential's level ({call.grant.level.name.lower()}) cannot "
                         f"read that: {exc}. Per-customer views need standard, card details full.") from None
        except asyncpg.QueryCanceledError:
            raise refuse(call, "timeout", "the query ran longer than this reader's statement timeout; narrow it "
                         "(a shorter period, fewer rows) and try again") from None
        except asyncpg.PostgresError as exc:
            raise refuse(call, "sql_error", f"the database refused the query: {exc}") from None

    def metric_entry(metric: Metric, grant: Grant) -> dict[str, Any]:
        q = metric.query
        return {"name": metric.name, "question": metric.question, "unit": metric.unit, "min_level": metric.min_level,
                "allowed": grant.level >= Level[metric.min_level.upper()], "grain": q.grain,
                "group_by": q.group_by_options, "dimensions": q.dimensions, "measures": list(q.measures),
                "params": list(q.filters), "explainable": metric.name in EXPLAINABLE}

    @server.tool(description="List the governed revenue metrics: name, the question each answers, unit, grain, "
                 "how it may be grouped, and whether this credential's level may read it. Start here.")
    async def list_metrics() -> dict[str, Any]:
        call = await begin("list_metrics")
        done(call, "ok")
        return {"level": call.grant.level.name.lower(), "modes": call.grant.mode,
                "metrics": [metric_entry(m, call.grant) for m in catalog.values()]}

    @server.tool(description="Describe one metric: its exact definition, unit (minor units of a currency), "
                 "grain, dimensions, measures, the parameters it takes, the lowest level that may read it, and "
                 "example SQL over the analytics views.")
    async def describe_metric(name: Annotated[str, Field(description="A metric name from list_metrics.")]) -> dict[str, Any]:
        call = await begin("describe_metric")
        metric = catalog.get(name)
        if metric is None:
            raise refuse(call, "unknown_metric", f"unknown metric {name[:60]!r}; list_metrics names them")
        done(call, "ok", metric=name)
        return {**metric_entry(metric, call.grant), "definition": metric.definition, "example_sql": metric.sql}

    @server.tool(description="Read a metric over a period, grouped by day, month or in total where the metric "
                 "allows (describe_metric says which). Rows keep the currency: amounts of different currencies "
                 "are never added. Returns the rows and the definition used.")
    async def query_metric(
        metric: Annotated[str, Field(description="A metric name from list_metrics.")],
        start: PERIOD_BOUND = None, end: PERIOD_BOUND = None,
        group_by: Annotated[Literal["day", "month", "total"] | None, Field(
            description="Time grouping; omit for the metric's own grain.")] = None,
        params: Annotated[dict[str, str] | None, Field(
            description='The metric\'s parameters (describe_metric lists them), e.g. {"customer": "cus_123"}.')] = None,
        mode: MODE = None,
        limit: Annotated[int, Field(ge=1, le=1000, description="At most this many rows.")] = 100,
    ) -> dict[str, Any]:
        call = await begin("query_metric")
        chosen = metric_for(call, metric)
        reads = mode_for(call, mode)
        try:
            query = metric_sql(chosen, livemode=reads == "live", start=start, end=end, group_by=group_by,
                               params=params, limit=limit)
        except MetricQueryError as exc:
            raise refuse(call, "bad_arguments", str(exc), metric=metric) from None
        rows, _ = await run(call, query.sql, *query.args)
        done(call, "ok", metric=metric, rows=min(len(rows), limit))
        return {"metric": chosen.name, "mode": reads, "group_by": query.group_by, "unit": chosen.unit,
                "definition": chosen.definition, "rows": rows[:limit], "truncated": len(rows) > limit}

    @server.tool(name="explain", description="Explain a figure by what made it: for an MRR metric (mrr, mrr_movements, "
                 "revenue_churn_rate, subscriber_churn_rate) in one month, the subscriptions whose MRR moved "
                 "and the Stripe event that moved each; for a revenue metric (gross_revenue, refunded_revenue, "
                 "net_revenue, failed_payments) on a day or period, the charges and refunds and their events. "
                 "Always returns the totals and whether they add up to the figure; the per-customer rows need "
                 "the standard level.")
    async def explain_metric(
        metric: Annotated[str, Field(description="One of the explainable metrics.")],
        month: Annotated[str | None, Field(description="YYYY-MM: the month (MRR metrics; or a whole month of revenue).")] = None,
        start: PERIOD_BOUND = None, end: PERIOD_BOUND = None,
        currency: Annotated[str | None, Field(description="Only this currency, e.g. eur.")] = None,
        movement: Annotated[Literal["new", "expansion", "contraction", "churn", "reactivation"] | None, Field(
            description="Only this MRR movement.")] = None,
        mode: MODE = None,
        limit: Annotated[int, Field(ge=1, le=500, description="At most this many contributing rows.")] = 100,
    ) -> dict[str, Any]:
        call = await begin("explain")
        metric_for(call, metric)
        reads = mode_for(call, mode)
        try:
            request = ExplainRequest(metric, reads == "live", parse_day("month", month), parse_day("from", start),
                                     parse_day("to", end, last=True), currency, movement, limit)
            async def rows_of(sql: str, *args: Any) -> list[dict[str, Any]]:
                return (await run(call, sql, *args))[0]

            answer = await explain(rows_of, call.grant.level, request)
        except MetricQueryError as exc:
            raise refuse(call, "bad_arguments", str(exc), metric=metric) from None
        done(call, "ok", metric=metric, adds_up=answer["adds_up"])
        return answer

    @server.tool(description="Run one read-only SELECT over the analytics views (name them in full: "
                 "analytics.daily_revenue). Checked by PostgreSQL's own parser first: one statement, only the "
                 "analytics schema, functions from an allowlist (aggregates, windows, dates, numbers, text), at "
                 f"most {sql_max_rows} rows and about {sql_max_bytes // 1024} KiB. Filter livemode = true for real money. Prefer query_metric when a "
                 "metric answers the question.")
    async def run_sql(sql: Annotated[str, Field(description="One SELECT statement.")]) -> dict[str, Any]:
        call = await begin("run_sql")
        try:
            checked = check_select(sql)
        except SqlRefusedError as exc:
            raise refuse(call, "sql_refused", f"refused: {exc}") from None
        except Exception as exc:  # the parser or printer failing on odd input is a refusal, not a crash
            raise refuse(call, "sql_refused", f"refused: the query could not be checked ({type(exc).__name__})") from None
        rows, cut = await run(call, checked.sql, max_rows=sql_max_rows, max_bytes=sql_max_bytes)
        done(call, "ok", fingerprint=checked.fingerprint, query=checked.normalized, rows=len(rows), truncated=cut)
        return {"sql": checked.sql, "rows": rows, "truncated": cut}

    @server.resource("revenue://catalog", name="metrics-catalog", mime_type="application/json",
                     description="Every governed metric with its definition, unit, grain, level and example SQL.")
    async def catalog_resource() -> dict[str, Any]:
        grant = await grant_of()
        return {"level": grant.level.name.lower(), "metrics": [
            {**metric_entry(m, grant), "definition": m.definition, "example_sql": m.sql} for m in catalog.values()]}

    @server.resource("revenue://views", name="analytics-views", mime_type="text/markdown",
                     description="The analytics views this credential may read, each with its columns and "
                     f"their documentation; run_sql reads these. Functions allowed: {', '.join(sorted(ALLOWED_FUNCTIONS))}.")
    async def views_resource() -> str:
        grant = await grant_of()
        try:
            rows = await reader.run_sql(grant.tenant_id, grant.level, VIEWS_SQL, mode=grant.mode)
        except (ProjectionError, asyncpg.PostgresError) as exc:
            raise ResourceError(f"the views could not be read: {type(exc).__name__}") from None
        return render_views(rows)

    return server


# The analytics views the session's role may read, with their comments (the catalogs are readable by all).
VIEWS_SQL = """
SELECT c.relname AS view, obj_description(c.oid, 'pg_class') AS view_comment, a.attname AS column_name,
       format_type(a.atttypid, a.atttypmod) AS type, col_description(c.oid, a.attnum) AS column_comment
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE n.nspname = 'analytics' AND c.relkind = 'v' AND has_table_privilege(c.oid, 'SELECT')
 ORDER BY c.relname, a.attnum"""


def render_views(rows: list[dict[str, Any]]) -> str:
    """Returns the views' documentation as Markdown."""
    lines = ["# The analytics views", "", "Amounts are integer minor units of the row's currency.", ""]
    current = None
    for row in rows:
        if row["view"] != current:
            current = row["view"]
            lines += ["", f"## analytics.{current}", "", row["view_comment"] or "", "", "| column | type | meaning |",
                      "|---|---|---|"]
        lines.append(f"| {row['column_name']} | {row['type']} | {(row['column_comment'] or '').replace('|', '/')} |")
    return "\n".join(lines) + "\n"


class ReaderTokenVerifier:
    """The HTTP transport's bearer check: a tenant reader token fixes the tenant and the level."""

    def __init__(self, reader_for_token: Callable[[str], Any]):
        self._reader_for_token = reader_for_token

    async def verify_token(self, token: str) -> AccessToken | None:
        """Returns the token's grant as an AccessToken (claims: tenant_id, level), or None when unknown."""
        try:
            found = await self._reader_for_token(token)
        except DatabaseUnavailableError:
            return None
        if found is None:
            return None
        tenant_id, level, mode = found
        return AccessToken(token=token, client_id=f"reader:{tenant_id}", scopes=[f"revenue:{level}", f"mode:{mode}"],
                           claims={"tenant_id": tenant_id, "level": level, "mode": mode})


async def grant_of_access_token() -> Grant:
    """The HTTP caller's grant, from the token the SDK's middleware verified for this request."""
    from mcp.server.auth.middleware.auth_context import get_access_token

    token = get_access_token()
    if token is None or not token.claims:
        raise ToolError("not authenticated: send Authorization: Bearer <reader token of the tenant>")
    return Grant(str(token.claims["tenant_id"]), Level[str(token.claims["level"]).upper()],
                 str(token.claims.get("mode", "all")))
