"""Exchange rates the operator loads for revenue in one reporting currency (`ingestor fx load FILE`).

The file is CSV with the header `date,currency,reporting_currency,rate`: on `date`, one major unit of `currency`
is `rate` major units of `reporting_currency` (`2026-03-31,eur,usd,1.0823`). A file is checked whole before
anything is written, and written in one transaction: a bad line names itself and loads nothing. A rate loaded
again for the same day replaces the old one (a correction). Amounts are never converted without a rate: the
views (migration 0071) show the currencies that lack one instead of a figure.

`parse_rates` is pure; `load_rates` writes.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

HEADER = ("date", "currency", "reporting_currency", "rate")
CURRENCY = re.compile(r"[a-z]{3}")
# Plain ASCII only: Python's Decimal and date parsers also take "1_0823", other scripts' digits, "20260331" and
# week dates, which in a rates file are typos, not rates.
RATE_TEXT = re.compile(r"[0-9]{1,18}(\.[0-9]{1,12})?")
DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
MAX_ROWS = 1_000_000
MAX_ERRORS_SHOWN = 10
# numeric(30, 12): up to 18 digits before the point, 12 after; a rate outside this range is a typo, not a rate.
SMALLEST_RATE, LARGEST_RATE = Decimal("1e-12"), Decimal("1e15")
EARLIEST_DAY = date(1970, 1, 1)


class RatesFileError(ValueError):
    """The rates file is not loadable; the message names every bad line (up to ten). Nothing was written."""


@dataclass(frozen=True)
class FxRate:
    day: date
    currency: str
    reporting_currency: str
    rate: Decimal


def _rate(text: str) -> Decimal:
    if not RATE_TEXT.fullmatch(text):  # digits, at most 12 of them after the point: always a finite Decimal
        raise ValueError(f"rate {text[:30]!r} is not a plain decimal number such as 1.0823")
    value = Decimal(text)
    if not SMALLEST_RATE <= value < LARGEST_RATE:
        raise ValueError(f"rate {text!r} must be a positive number from 1e-12 to below 1e15")
    return value


def _row(fields: dict[str, str], today: date) -> FxRate:
    try:
        if not DATE_TEXT.fullmatch(fields["date"].strip()):
            raise ValueError
        day = date.fromisoformat(fields["date"].strip())
    except ValueError:
        raise ValueError(f"date {fields['date']!r} is not YYYY-MM-DD") from None
    if not EARLIEST_DAY <= day <= today:
        raise ValueError(f"date {day} is not between {EARLIEST_DAY} and today")
    currency, reporting = fields["currency"].strip().lower(), fields["reporting_currency"].strip().lower()
    for name, code in (("currency", currency), ("reporting_currency", reporting)):
        if not CURRENCY.fullmatch(code):
            raise ValueError(f"{name} {code!r} is not a three-letter ISO currency code")
    if currency == reporting:
        raise ValueError(f"currency and reporting_currency are both {currency!r}")
    return FxRate(day, currency, reporting, _rate(fields["rate"].strip()))


def parse_rates(text: str, today: date) -> list[FxRate]:
    """Returns the rates of a whole file; raises RatesFileError naming each bad line (and a repeated day)."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if tuple(h.strip().lower() for h in reader.fieldnames or ()) != HEADER:
        raise RatesFileError(f"the first line must be the header {','.join(HEADER)}")
    reader.fieldnames = list(HEADER)
    rates: list[FxRate] = []
    errors: list[str] = []
    first_line: dict[tuple[date, str, str], int] = {}
    for fields in _rows(reader):
        line = reader.line_num
        if len(rates) >= MAX_ROWS:
            raise RatesFileError(f"more than {MAX_ROWS:,} rates in one file; split it")
        if None in fields or any(v is None for v in fields.values()):
            errors.append(f"line {line}: expected 4 fields")
            continue
        try:
            rate = _row(fields, today)
        except ValueError as exc:
            errors.append(f"line {line}: {exc}")
            continue
        key = (rate.day, rate.currency, rate.reporting_currency)
        if key in first_line:
            errors.append(f"line {line}: {rate.currency}→{rate.reporting_currency} on {rate.day} again "
                          f"(first on line {first_line[key]})")
            continue
        first_line[key] = line
        rates.append(rate)
    if errors:
        shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
        more = f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise RatesFileError(f"nothing loaded — {len(errors)} bad line(s): {shown}{more}")
    if not rates:
        raise RatesFileError("the file holds no rates")
    return rates


def _rows(reader: csv.DictReader[str]) -> Iterator[dict[str, str]]:
    try:
        yield from reader
    except csv.Error as exc:
        raise RatesFileError(f"nothing loaded — line {reader.line_num} is not CSV: {exc}") from None


async def load_rates(pool: asyncpg.Pool, rates: list[FxRate]) -> dict[str, Any]:
    """Writes the rates in one transaction (new days added, known days replaced); returns what changed."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("CREATE TEMPORARY TABLE fx_rates_file (rate_date date, currency text, reporting_currency text, "
                           "rate numeric(30, 12)) ON COMMIT DROP")
        await conn.copy_records_to_table("fx_rates_file", records=[
            (r.day, r.currency, r.reporting_currency, r.rate) for r in rates])
        changed = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE o.rate IS NULL) AS added, "
            "       count(*) FILTER (WHERE o.rate IS NOT NULL AND o.rate <> f.rate) AS replaced "
            "FROM fx_rates_file f LEFT JOIN fx_rates o USING (reporting_currency, currency, rate_date)")
        await conn.execute(
            "INSERT INTO fx_rates (reporting_currency, currency, rate_date, rate) "
            "SELECT reporting_currency, currency, rate_date, rate FROM fx_rates_file "
            "ON CONFLICT (reporting_currency, currency, rate_date) DO UPDATE SET rate = EXCLUDED.rate, loaded_at = now() "
            "WHERE fx_rates.rate <> EXCLUDED.rate")
        pairs = sorted({f"{r.currency}→{r.reporting_currency}" for r in rates})
        report = {"rates": len(rates), "added": changed["added"], "replaced": changed["replaced"], "pairs": pairs,
                  "from": min(r.day for r in rates).isoformat(), "to": max(r.day for r in rates).isoformat()}
        await conn.execute("INSERT INTO audit_log (actor, tenant_id, action, detail) VALUES ('admin', NULL, "
                           "'fx_rates.loaded', $1::jsonb)", orjson.dumps(report).decode())
    return report
