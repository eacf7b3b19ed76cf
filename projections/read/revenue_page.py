"""The data of the Revenue page in one call: a year of MRR and its movements, churn and retention, 90 days
of daily revenue, the signup cohorts, and the latest month's KPIs — every currency, one mode; or, with a
reporting currency, the money converted into it (with the FX effect apart from the movements).

Five fixed statements over the summary-level analytics views, run as the tenant's own reader role, two at
a time (the tenant's pool). The page filters by currency itself; amounts stay integer minor units. Months
and days are the tenant's (its time zone), and so is "the last 12 months".
"""

from __future__ import annotations

import asyncio
from typing import Any

from projections.read.client import Level, RevenueReader
from projections.read.money import decimals

MONTHS = 12
DAYS = 90
# Four statements, run two at a time: every monthly money figure comes from one read of analytics.revenue_kpis
# (MRR, movements, retention, KPIs), so the MRR history is computed once per series, not once per chart;
# subscriber churn (not per currency) is read apart and joined here (joined in SQL it took longer than both).
# Monthly windows end at the current month (the MRR views always reach it); days at the latest day with
# revenue, so a tenant whose data stops still sees its last 90 days. $1 is livemode (the settings take none);
# $2 the reporting currency.
THIS_MONTH = ("date_trunc('month', now() AT TIME ZONE coalesce((SELECT time_zone FROM analytics.tenant_settings), "
              "'UTC'))")
SINCE = f"> {THIS_MONTH} - interval '{MONTHS} months'"
SERIES: dict[str, str] = {
    "months": "SELECT k.month, k.currency, k.mrr, k.subscribers, k.arr, k.arpa, k.opening_mrr, k.new_mrr, "
              "k.expansion_mrr, k.contraction_mrr, k.churned_mrr, k.reactivation_mrr, k.mrr AS closing_mrr, "
              "k.mrr_churn_rate, k.gross_mrr_retention, k.net_mrr_retention, k.quick_ratio, k.ltv "
              f"FROM analytics.revenue_kpis k WHERE k.livemode = $1 AND k.month {SINCE} ORDER BY k.month, k.currency",
    "subscriber_churn": "SELECT month, subscriber_churn_rate FROM analytics.subscriber_churn WHERE livemode = $1 "
                        f"AND month {SINCE}",
    "daily": "SELECT day, currency, gross, refunded, net FROM analytics.daily_revenue WHERE livemode = $1 AND day > "
             f"(SELECT max(day) FROM analytics.daily_revenue WHERE livemode = $1) - {DAYS} ORDER BY day, currency",
    "cohorts": "SELECT cohort, months_since, customers, retained, logo_retention FROM analytics.cohort_logo_retention "
               f"WHERE livemode = $1 AND cohort {SINCE} ORDER BY cohort, months_since",
    "settings": "SELECT (SELECT time_zone FROM analytics.tenant_settings) AS time_zone, ARRAY(SELECT reporting_currency "
                "FROM analytics.reporting_currencies ORDER BY 1) AS reporting_currencies",
}
# With a reporting currency: the same columns from the converted views, the reporting currency as `currency`.
REPORTING: dict[str, str] = {
    "months": "SELECT k.month, k.reporting_currency AS currency, k.mrr, k.subscribers, k.arr, k.arpa, k.opening_mrr, "
              "k.new_mrr, k.expansion_mrr, k.contraction_mrr, k.churned_mrr, k.reactivation_mrr, k.fx_effect, "
              "k.closing_mrr, k.mrr_churn_rate, k.gross_mrr_retention, k.net_mrr_retention, k.quick_ratio, k.ltv, "
              f"k.missing_rates FROM analytics.mrr_reporting k WHERE k.livemode = $1 AND k.reporting_currency = $2 "
              f"AND k.month {SINCE} ORDER BY k.month",
    "daily": "SELECT day, reporting_currency AS currency, gross, refunded, net, missing_rates "
             "FROM analytics.daily_revenue_reporting WHERE livemode = $1 AND reporting_currency = $2 AND day > "
             f"(SELECT max(day) FROM analytics.daily_revenue WHERE livemode = $1) - {DAYS} ORDER BY day",
}
# What each chart reads of the monthly rows.
MONTHLY = {
    "mrr": ("month", "currency", "mrr", "subscribers", "missing_rates"),
    "movements": ("month", "currency", "opening_mrr", "new_mrr", "expansion_mrr", "contraction_mrr", "churned_mrr",
                  "reactivation_mrr", "fx_effect", "closing_mrr", "missing_rates"),
    "retention": ("month", "currency", "mrr_churn_rate", "gross_mrr_retention", "net_mrr_retention",
                  "subscriber_churn_rate"),
    "kpis": ("month", "currency", "mrr", "arr", "subscribers", "arpa", "net_mrr_retention", "gross_mrr_retention",
             "quick_ratio", "ltv", "missing_rates"),
}


class UnknownReportingCurrencyError(ValueError):
    """No exchange rates were loaded to that currency, so nothing can be reported in it."""


async def revenue_data(reader: RevenueReader, tenant_id: str, level: Level, livemode: bool,
                       credential_mode: str = "all", reporting: str | None = None) -> dict[str, Any]:
    """Returns every series of the page, and the currencies they hold (as the credential's mode-bound role);
    with `reporting`, the money series converted into that currency (fx_effect and missing_rates added)."""

    async def read(name: str) -> list[dict[str, Any]]:
        if reporting is not None and name in REPORTING:
            return await reader.run_sql(tenant_id, level, REPORTING[name], livemode, reporting, mode=credential_mode)
        args = () if name == "settings" else (livemode,)
        return await reader.run_sql(tenant_id, level, SERIES[name], *args, mode=credential_mode)

    months, subscriber_churn, daily, cohorts, settings = await asyncio.gather(
        *(read(name) for name in ("months", "subscriber_churn", "daily", "cohorts", "settings")))
    reporting_currencies, time_zone = settings[0]["reporting_currencies"], settings[0]["time_zone"]  # always one row
    if reporting is not None and reporting not in reporting_currencies:
        raise UnknownReportingCurrencyError(
            f"no exchange rates to {reporting!r} were loaded; report in one of: {', '.join(reporting_currencies) or 'none'}")
    churn_of = {r["month"]: r["subscriber_churn_rate"] for r in subscriber_churn}
    months = [{**r, "subscriber_churn_rate": churn_of.get(r["month"])} for r in months]
    latest = max((r["month"] for r in months), default=None)
    data: dict[str, list[dict[str, Any]]] = {
        name: [{c: r[c] for c in columns if c in r} for r in months if name != "kpis" or r["month"] == latest]
        for name, columns in MONTHLY.items()}
    data |= {"daily": daily, "cohorts": cohorts}
    currencies = sorted({r["currency"] for rows in data.values() for r in rows if "currency" in r})
    shown = sorted({*currencies, *reporting_currencies})
    return {"mode": "live" if livemode else "test", "currencies": currencies, "reporting": reporting,
            "reporting_currencies": reporting_currencies,
            "time_zone": time_zone or "UTC",  # a tenant id without a tenants row reads in UTC, like the views
            "decimals": {c: decimals(c) for c in shown}, **data}
