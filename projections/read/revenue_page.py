"""The data of the Revenue page in one call: a year of MRR and its movements, churn and retention, 90 days
of daily revenue, the signup cohorts, and the latest month's KPIs — every currency, one mode.

Fixed statements over the summary-level analytics views, run as the tenant's own reader role. The
windows end at the tenant's latest data (not at today), so a tenant whose data stops sees its last
year, not an empty chart. The page filters by currency itself; amounts stay integer minor units.
"""

from __future__ import annotations

from typing import Any

from projections.read.client import Level, RevenueReader
from projections.read.money import decimals

MONTHS = 12
DAYS = 90
# Each series: its statement; $1 is livemode. Months and days count back from the latest with data.
SERIES: dict[str, str] = {
    "mrr": "SELECT month, currency, mrr_rounded AS mrr, subscribers FROM analytics.mrr_by_month "
           "WHERE livemode = $1 AND month > (SELECT max(month) FROM analytics.mrr_by_month WHERE livemode = $1) "
           f"- interval '{MONTHS} months' ORDER BY month, currency",
    "movements": "SELECT month, currency, opening_mrr, new_mrr, expansion_mrr, contraction_mrr, churned_mrr, "
                 "reactivation_mrr, closing_mrr FROM analytics.mrr_movements WHERE livemode = $1 AND month > "
                 f"(SELECT max(month) FROM analytics.mrr_movements WHERE livemode = $1) - interval '{MONTHS} months' "
                 "ORDER BY month, currency",
    "retention": "SELECT k.month, k.currency, k.mrr_churn_rate, k.gross_mrr_retention, k.net_mrr_retention, "
                 "c.subscriber_churn_rate FROM analytics.revenue_kpis k LEFT JOIN analytics.subscriber_churn c "
                 "ON c.month = k.month AND c.livemode = k.livemode WHERE k.livemode = $1 AND k.month > "
                 f"(SELECT max(month) FROM analytics.revenue_kpis WHERE livemode = $1) - interval '{MONTHS} months' "
                 "ORDER BY k.month, k.currency",
    "daily": "SELECT day, currency, gross, refunded, net FROM analytics.daily_revenue WHERE livemode = $1 AND day > "
             f"(SELECT max(day) FROM analytics.daily_revenue WHERE livemode = $1) - {DAYS} ORDER BY day, currency",
    "cohorts": "SELECT cohort, months_since, customers, retained, logo_retention FROM analytics.cohort_logo_retention "
               "WHERE livemode = $1 AND cohort > (SELECT max(cohort) FROM analytics.cohort_logo_retention "
               f"WHERE livemode = $1) - interval '{MONTHS} months' ORDER BY cohort, months_since",
    "kpis": "SELECT month, currency, mrr, arr, subscribers, arpa, net_mrr_retention, gross_mrr_retention, quick_ratio, "
            "ltv FROM analytics.revenue_kpis WHERE livemode = $1 AND month = "
            "(SELECT max(month) FROM analytics.revenue_kpis WHERE livemode = $1) ORDER BY currency",
}


async def revenue_data(reader: RevenueReader, tenant_id: str, level: Level, livemode: bool) -> dict[str, Any]:
    """Returns every series of the page, and the currencies they hold."""
    data = {name: await reader.run_sql(tenant_id, level, sql, livemode) for name, sql in SERIES.items()}
    currencies = sorted({r["currency"] for rows in data.values() for r in rows if "currency" in r})
    return {"mode": "live" if livemode else "test", "currencies": currencies,
            "decimals": {c: decimals(c) for c in currencies}, **data}
