"""The read client of the AI query layer: common revenue questions, per tenant and permission level.

Each question runs as the tenant's own login role of the caller's level (migration 0010), so the
database itself keeps the tenant's rows apart (row-level security keyed on the session's role), the
level's views out of reach (grants), and the limits in force (read-only, timeouts, temp files,
connections per tenant). The client refuses a question above the level first, with a clear message,
but does not rely on that. Pools are per tenant and level, small, opened on first use and closed
least-recently-used first, so one tenant's load waits on its own connections only. With a byte cap, the
rows of an answer are held to it as they arrive (row_budget), before they are read, whatever the SQL.
"""

from __future__ import annotations

import asyncio
import enum
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg

from plumbing.postgres import DatabaseUnavailableError, database_errors
from plumbing.settings import ReaderSettings
from projections.errors import ProjectionError
from projections.read.metric_queries import MetricQueryError, parse_day
from projections.read.row_budget import ReaderConnection, RowBudget


class Level(enum.IntEnum):
    """Permission levels, each seeing everything the one below sees."""

    SUMMARY = 1
    STANDARD = 2
    FULL = 3


@dataclass(frozen=True)
class Grant:
    """What a caller's credential may read: one tenant ("*" for an operator) up to one permission level, in
    one Stripe mode ("live", "test") or both ("all")."""

    tenant_id: str
    level: Level
    mode: str = "all"

    def allows(self, mode: str) -> bool:
        """Tells whether this credential may read `mode` ("live" or "test")."""
        return self.mode in ("all", mode)

    @property
    def default_mode(self) -> str:
        """The mode read when none is asked: the credential's one mode, or live."""
        return self.mode if self.mode != "all" else "live"


class QuestionRefusedError(ProjectionError):
    """The question needs a higher permission level than the caller has."""


class UnknownQuestionError(ProjectionError):
    """No such question, or a parameter is missing or malformed."""


@dataclass(frozen=True)
class Question:
    """One common question: its SQL over the analytics views and the lowest level that may ask it."""

    name: str
    description: str
    min_level: Level
    sql: str
    params: tuple[str, ...] = ()
    # Rows per currency to combine with the (single) row of `sql`, same parameters.
    per_currency_sql: str | None = None


QUESTIONS: Mapping[str, Question] = {q.name: q for q in (
    Question("revenue", "Gross, refunded and net revenue per currency between two days (inclusive).", Level.SUMMARY,
             "SELECT currency, sum(gross)::bigint AS gross, sum(refunded)::bigint AS refunded, sum(net)::bigint AS net "
             "FROM analytics.daily_revenue WHERE livemode = $1 AND day BETWEEN $2 AND $3 GROUP BY currency ORDER BY currency",
             ("from", "to")),
    Question("mrr", "MRR at each month end per currency (the current month as of now).", Level.SUMMARY,
             "SELECT month, currency, mrr, mrr_rounded, subscribers FROM analytics.mrr_by_month "
             "WHERE livemode = $1 ORDER BY month, currency"),
    Question("movements", "MRR movements of one month per currency.", Level.SUMMARY,
             "SELECT * FROM analytics.mrr_movements WHERE livemode = $1 AND month = $2::date "
             "ORDER BY currency", ("month",)),
    # Two statements merged in Python: joined in one statement the planner re-runs the second view per row.
    Question("churn", "Subscriber churn and revenue churn of one month.", Level.SUMMARY,
             "SELECT month, active_start, new_subscribers, churned_subscribers, churn_denominator, subscriber_churn_rate "
             "FROM analytics.subscriber_churn WHERE livemode = $1 AND month = $2::date", ("month",),
             per_currency_sql="SELECT currency, opening_mrr, churned_mrr, contraction_mrr, revenue_churn_rate "
             "FROM analytics.revenue_churn WHERE livemode = $1 AND month = $2::date ORDER BY currency"),
    Question("kpis", "ARR, ARPA, net and gross MRR retention, quick ratio and LTV of one month per currency.",
             Level.SUMMARY,
             "SELECT month, currency, mrr, arr, subscribers, arpa, net_mrr_retention, gross_mrr_retention, quick_ratio, "
             "mrr_churn_rate, ltv, net_mrr_retention_12m FROM analytics.revenue_kpis WHERE livemode = $1 "
             "AND month = $2::date ORDER BY currency", ("month",)),
    Question("customers", "Customers (paying or not), new customers and subscribers at each month end.", Level.SUMMARY,
             "SELECT month, customers, new_customers, subscribers, paying_share FROM analytics.customer_counts "
             "WHERE livemode = $1 ORDER BY month"),
    Question("failed_payments", "Failed payments per day and currency between two days.", Level.SUMMARY,
             "SELECT day, currency, failed_count, failed_amount FROM analytics.daily_revenue "
             "WHERE livemode = $1 AND failed_count > 0 AND day BETWEEN $2 AND $3 ORDER BY day, currency", ("from", "to")),
    Question("top_customers", "Customers with the highest net revenue in one currency.", Level.STANDARD,
             "SELECT customer_id, email, name, currency, gross, refunded, net, payments, last_payment "
             "FROM analytics.customer_revenue WHERE livemode = $1 AND currency = $2 ORDER BY net DESC, customer_id LIMIT $3",
             ("currency", "limit")),
    Question("payment_history", "Every charge of one customer, newest first.", Level.STANDARD,
             "SELECT charge_id, created, currency, amount, amount_captured, amount_refunded, status, failure_code, invoice_id "
             "FROM analytics.charges WHERE livemode = $1 AND customer_id = $2 ORDER BY created DESC, charge_id", ("customer",)),
    Question("payment_history_with_cards", "A customer's charges with card brand and last4.", Level.FULL,
             "SELECT c.charge_id, c.created, c.currency, c.amount, c.status, k.card_brand, k.card_last4 "
             "FROM analytics.charges c JOIN analytics.charge_cards k USING (charge_id) "
             "WHERE c.livemode = $1 AND c.customer_id = $2 ORDER BY c.created DESC, c.charge_id", ("customer",)),
)}


# One example per parameter, for `ingestor ask … list` and error messages.
PARAM_EXAMPLES = {"from": "2026-10-01", "to": "2026-10-31", "month": "2026-11", "currency": "usd", "limit": "10",
                  "customer": "cus_123"}
# Columns that hold an amount of the row's currency, in minor units (shown in major units by the CLI).
MONEY_COLUMNS = frozenset({
    "gross", "refunded", "net", "failed_amount", "amount", "amount_captured", "amount_refunded", "mrr", "mrr_rounded",
    "opening_mrr", "new_mrr", "expansion_mrr", "contraction_mrr", "churned_mrr", "reactivation_mrr", "closing_mrr",
    "billed", "paid", "outstanding", "uncollectible", "arr", "arpa", "ltv",
})


def _convert(name: str, value: Any) -> Any:
    if name in ("from", "to", "month"):  # a day, or a month (YYYY-MM): its first day, or its last for "to"
        day = parse_day(name, value, last=name == "to")
        assert day is not None
        return day.replace(day=1) if name == "month" else day  # any day names its month
    if name == "limit":
        limit = int(value)
        if not 1 <= limit <= 1000:
            raise UnknownQuestionError("limit must be between 1 and 1000")
        return limit
    return str(value)


def plain(value: Any) -> Any:
    """Returns a JSON-friendly value (dates as ISO text, decimals as text to keep them exact)."""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


async def _fetch_capped(cursor: Any, rows: list[asyncpg.Record], budget: RowBudget | None, max_rows: int | None,
                        max_bytes: int | None, batch: int = 100) -> bool:
    """Fetches into `rows` until the cursor ends or a cap is reached; returns whether a cap cut them.

    Batches start at one row and double up to `batch`, never more rows than the budget holds at the largest
    row seen, so a row that ends the connection (the budget refusing it) costs few of the rows before it.
    """
    size, want = 0, 1 if budget is not None else batch
    while True:
        left = batch if max_rows is None else max_rows - len(rows)
        if left <= 0:
            return await cursor.fetchrow() is not None
        fits = budget.room // budget.largest if budget is not None and budget.largest else batch
        count = min(want, left, max(1, fits))
        got = await cursor.fetch(count)
        for row in got:
            size += sum(len(str(v)) for v in row.values())
            if max_bytes is not None and size > max_bytes:
                return True
            rows.append(row)
        if len(got) < count:
            return False
        want = min(batch, 2 * want)


# (tenant_id, level name, mode) → (login role, password) of the tenant's reader role of that level and mode
# ("all", "live" or "test": a mode-bound role sees only that mode's rows, by row-level security).
ReaderCredentials = Callable[[str, str, str], Awaitable[tuple[str, str]]]


class AnswerTooLargeError(ProjectionError):
    """The answer's first row alone is larger than its byte cap; it was refused as Postgres announced it."""


class ReaderBusyError(ProjectionError):
    """Every connection this tenant's readers may hold is in use: answer 503, try again shortly."""

    retriable = True


class RevenueReader:
    """Answers the common questions as each tenant's own reader roles."""

    def __init__(self, settings: ReaderSettings, credentials: ReaderCredentials):
        self._settings = settings
        self._credentials = credentials
        self._pools: OrderedDict[tuple[str, Level, str], asyncpg.Pool] = OrderedDict()
        self._opening: dict[tuple[str, Level, str], asyncio.Lock] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Closes every reader pool."""
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.close()
        for task in list(self._closing):
            await task

    async def _pool(self, tenant_id: str, level: Level, mode: str) -> asyncpg.Pool:
        key = (tenant_id, level, mode)
        pool = self._pools.get(key)
        if pool is not None:
            self._pools.move_to_end(key)
            return pool
        async with self._opening.setdefault(key, asyncio.Lock()):
            if key in self._pools:
                return self._pools[key]
            role, password = await self._credentials(tenant_id, level.name.lower(), mode)
            with database_errors():
                pool = await asyncpg.create_pool(
                    self._settings.dsn.get_secret_value(), user=role, password=password, min_size=0,
                    max_size=self._settings.pool_size, max_inactive_connection_lifetime=60,
                    connection_class=ReaderConnection,
                    statement_cache_size=0,  # readers' SQL may be anyone's: keep no plans of it
                    server_settings={"application_name": "revenue-reader"})
            self._pools[key] = pool
            self._opening.pop(key, None)
        while len(self._pools) > self._settings.max_open_pools:
            _, evicted = self._pools.popitem(last=False)
            task = asyncio.get_running_loop().create_task(evicted.close())  # in-flight questions finish first
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return pool

    async def run_sql(self, tenant_id: str, level: Level, sql: str, *args: Any, max_rows: int | None = None,
                      mode: str = "all") -> list[dict[str, Any]]:
        """Runs read-only SQL as the tenant's reader role of `level` and `mode`; at most `max_rows` rows when given."""
        rows, _ = await self.run_sql_capped(tenant_id, level, sql, *args, max_rows=max_rows, mode=mode)
        return rows

    async def run_sql_capped(self, tenant_id: str, level: Level, sql: str, *args: Any, max_rows: int | None = None,
                             max_bytes: int | None = None, mode: str = "all") -> tuple[list[dict[str, Any]], bool]:
        """Runs read-only SQL as the tenant's reader role; returns the rows and whether a cap cut them.

        With caps, rows come through a cursor a batch at a time and stop at `max_rows` rows or once they
        hold about `max_bytes` (as text), so a huge result is never held whole in this process. With
        `max_bytes`, the rows Postgres sends (counted in its binary form, somewhat more than the text) are held to
        it as well, each refused on its header, before it is read: the answer ends with the rows before it, or, if it is the first, with AnswerTooLargeError.

        Raises ReaderBusyError when the tenant's connections are all in use (here or server-wide),
        DatabaseUnavailableError when Postgres is away, asyncpg's errors for the SQL itself.
        """
        pool = await self._pool(tenant_id, level, mode)
        try:
            with database_errors():
                conn = await pool.acquire(timeout=self._settings.acquire_timeout_s)
        except (DatabaseUnavailableError, asyncpg.TooManyConnectionsError) as exc:
            if isinstance(exc, asyncpg.TooManyConnectionsError) or isinstance(exc.__cause__, asyncio.TimeoutError):
                raise ReaderBusyError("this tenant's readers are using every connection they may hold") from exc
            raise
        budget: RowBudget | None = None
        if max_bytes is not None:
            budget = conn.row_budget
            budget.arm(max_bytes)
        rows: list[asyncpg.Record] = []
        cut = False
        try:
            with database_errors():
                async with conn.transaction(readonly=True):
                    if max_rows is None and max_bytes is None:
                        rows = list(await conn.fetch(sql, *args))
                    else:
                        cut = await _fetch_capped(await conn.cursor(sql, *args), rows, budget, max_rows, max_bytes)
        except Exception:  # the connection is gone; if the budget closed it, the answer ends where it did
            if budget is None or budget.refused is None:
                raise
            if not rows:
                raise AnswerTooLargeError(
                    f"a row of the answer is {budget.refused:,} bytes; an answer may be at most {max_bytes:,} bytes "
                    "(select fewer or narrower columns)") from None
            cut = True
        finally:
            if budget is not None:
                budget.disarm()
            await pool.release(conn)
        return [{k: plain(v) for k, v in row.items()} for row in rows], cut

    async def ask(self, tenant_id: str, level: Level, question: str, livemode: bool = True, mode: str = "all",
                  **params: Any) -> list[dict[str, Any]]:
        """Answers one common question; raises QuestionRefusedError or UnknownQuestionError."""
        q = QUESTIONS.get(question)
        if q is None:
            raise UnknownQuestionError(f"unknown question {question!r}; ask one of: {', '.join(QUESTIONS)}")
        if level < q.min_level:
            raise QuestionRefusedError(
                f"'{question}' needs the {q.min_level.name.lower()} permission level; this reader has "
                f"{level.name.lower()}. Ask an admin for a {q.min_level.name.lower()} reader, or ask an aggregate question."
            )
        missing = [p for p in q.params if p not in params]
        if missing:
            raise UnknownQuestionError(f"'{question}' needs: {', '.join(missing)}")
        try:
            args = [_convert(p, params[p]) for p in q.params]
        except (ValueError, MetricQueryError) as exc:
            raise UnknownQuestionError(f"bad parameter for '{question}': {exc}") from exc
        rows = await self.run_sql(tenant_id, level, q.sql, livemode, *args, mode=mode)
        if q.per_currency_sql is None or not rows:
            return rows
        per_currency = await self.run_sql(tenant_id, level, q.per_currency_sql, livemode, *args, mode=mode)
        return [{**rows[0], **extra} for extra in per_currency] or rows
