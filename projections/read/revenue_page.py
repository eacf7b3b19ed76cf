"""The data of the Revenue page in one call: a year of MRR and its movements, churn and retention, 90 days
of daily revenue, the signup cohorts, and the latest month's KPIs — every currency, one mode.

Four fixed statements over the summary-level analytics views, run as the tenant's own reader role, two at
a time (the tenant's pool). The page filters by currency itself; amounts stay integer minor units.
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
# revenue, so a tenant whose data stops still sees its last 90 days. $1 is livemode.
SERIES: dict[str, str] = {
    "months": "SELECT k.month, k.currency, k.mrr, k.subscribers, k.arr, k.arpa, k.opening_mrr, k.new_mrr, "
              "k.expansion_mrr, k.contraction_mrr, k.churned_mrr, k.reactivation_mrr, k.mrr AS closing_mrr, "
              "k.mrr_churn_rate, k.gross_mrr_retention, k.net_mrr_retention, k.quick_ratio, k.ltv "
              "FROM analytics.revenue_kpis k WHERE k.livemode = $1 "
              f"AND k.month > date_trunc('month', now()) - interval '{MONTHS} months' ORDER BY k.month, k.currency",
    "subscriber_churn": "SELECT month, subscriber_churn_rate FROM analytics.subscriber_churn WHERE livemode = $1 "
                        f"AND month > date_trunc('month', now()) - interval '{MONTHS} months'",
    "daily": "SELECT day, currency, gross, refunded, net FROM analytics.daily_revenue WHERE livemode = $1 AND day > "
             f"(SELECT max(day) FROM analytics.daily_revenue WHERE livemode = $1) - {DAYS} ORDER BY day, currency",
    "cohorts": "SELECT cohort, months_since, customers, retained, logo_retention FROM analytics.cohort_logo_retention "
               f"WHERE livemode = $1 AND cohort > date_trunc('month', now()) - interval '{MONTHS} months' "
               "ORDER BY cohort, months_since",
}
# What each chart reads of the monthly rows.
MONTHLY = {
    "mrr": ("month", "currency", "mrr", "subscribers"),
    "movements": ("month", "currency", "opening_mrr", "new_mrr", "expansion_mrr", "contraction_mrr", "churned_mrr",
                  "reactivation_mrr", "closing_mrr"),
    "retention": ("month", "currency", "mrr_churn_rate", "gross_mrr_retention", "net_mrr_retention",
                  "subscriber_churn_rate"),
    "kpis": ("month", "currency", "mrr", "arr", "subscribers", "arpa", "net_mrr_retention", "gross_mrr_retention",
             "quick_ratio", "ltv"),
}


async def revenue_data(reader: RevenueReader, tenant_id: str, level: Level, livemode: bool,
                       credential_mode: str = "all") -> dict[str, Any]:
    """Returns every series of the page, and the currencies they hold (as the credential's mode-bound role)."""
    months, subscriber_churn, daily, cohorts = await asyncio.gather(
        *(reader.run_sql(tenant_id, level, SERIES[name], livemode, mode=credential_mode)
          for name in ("months", "subscriber_churn", "daily", "cohorts")))
    churn_of = {r["month"]: r["subscriber_churn_rate"] for r in subscriber_churn}
    months = [{**r, "subscriber_churn_rate": churn_of.get(r["month"])} for r in months]
    latest = max((r["month"] for r in months), default=None)
    data: dict[str, list[dict[str, Any]]] = {
        name: [{c: r[c] for c in columns} for r in months if name != "kpis" or r["month"] == latest]
        for name, columns in MONTHLY.items()}
    data |= {"daily": daily, "cohorts": cohorts}
    currencies = sorted({r["currency"] for rows in data.values() for r in rows if "currency" in r})
    return {"mode": "live" if livemode else "test", "currencies": currencies,
            "decimals": {c: decimals(c) for c in currencies}, **data}
