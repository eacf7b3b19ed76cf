"""The read client of the AI query layer: common revenue questions, per tenant and permission level.

Each question runs on the read-only login role of the caller's level, inside a transaction bound to
the tenant (`app.tenant_id` plus its signature, see migration 0004), so the database itself keeps
the tenant's rows apart and the level's views out of reach; the client refuses a question above the
level first, with a clear message, but does not rely on that.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg

from plumbing.settings import ReaderSettings
from projections.errors import ProjectionError


class Level(enum.IntEnum):
    """Permission levels, each seeing everything the one below sees."""

    SUMMARY = 1
    STANDARD = 2
    FULL = 3


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


def _convert(name: str, value: Any) -> Any:
    if name in ("from", "to", "month"):
        day = value if isinstance(value, date) else date.fromisoformat(str(value))
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


class RevenueReader:
    """Answers the common questions; one connection pool per permission level, opened lazily."""

    def __init__(self, settings: ReaderSettings, owner_pool: asyncpg.Pool):
        self._settings = settings
        self._owner_pool = owner_pool  # signs tenant contexts; never runs a question
        self._pools: dict[Level, asyncpg.Pool] = {}
        self._signatures: dict[str, str] = {}

    async def close(self) -> None:
        """Closes the reader pools."""
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()

    async def _pool(self, level: Level) -> asyncpg.Pool:
        if level not in self._pools:
            dsn = {Level.SUMMARY: self._settings.summary_dsn, Level.STANDARD: self._settings.standard_dsn,
                   Level.FULL: self._settings.full_dsn}[level]
            self._pools[level] = await asyncpg.create_pool(
                dsn.get_secret_value(), min_size=0, max_size=4,
                server_settings={"statement_timeout": str(self._settings.statement_timeout_ms),
                                 "default_transaction_read_only": "on"})
        return self._pools[level]

    async def tenant_signature(self, tenant_id: str) -> str:
        """Returns the signature that binds a reader transaction to `tenant_id`."""
        if tenant_id not in self._signatures:
            self._signatures[tenant_id] = await self._owner_pool.fetchval(
                "SELECT analytics_private.tenant_signature($1)", tenant_id)
        return self._signatures[tenant_id]

    async def run_sql(self, tenant_id: str, level: Level, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Runs read-only SQL as `level`'s role in a transaction bound to `tenant_id`."""
        signature = await self.tenant_signature(tenant_id)
        pool = await self._pool(level)
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute("SELECT set_config('app.tenant_id', $1, true), set_config('app.tenant_sig', $2, true)",
                               tenant_id, signature)
            rows = await conn.fetch(sql, *args)
        return [{k: plain(v) for k, v in row.items()} for row in rows]

    async def ask(self, tenant_id: str, level: Level, question: str, livemode: bool = True,
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
        except ValueError as exc:
            raise UnknownQuestionError(f"bad parameter for '{question}': {exc}") from exc
        rows = await self.run_sql(tenant_id, level, q.sql, livemode, *args)
        if q.per_currency_sql is None or not rows:
            return rows
        per_currency = await self.run_sql(tenant_id, level, q.per_currency_sql, livemode, *args)
        return [{**rows[0], **extra} for extra in per_currency] or rows
