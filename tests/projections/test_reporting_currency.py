"""Revenue in one reporting currency: rates the operator loads, MRR converted at month-end rates with the FX effect
apart from the movements, daily revenue at each day's rate — against values computed by hand from the
simulator's own subscriptions and the rates; a missing rate converts nothing; a bad rates file loads nothing."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from plumbing.settings import ReaderSettings
from projections.projector.store import PostgresProjectionStore
from projections.read.catalog import load_catalog
from projections.read.client import Level, RevenueReader
from projections.read.fx_rates import RatesFileError, load_rates, parse_rates
from projections.read.metric_queries import metric_sql
from projections.read.money import decimals
from stack import postgres
from stack.up import Platform
from stripe_sim import CURRENT_VERSION, SimServer
from stripe_sim.ground_truth import month_ends, subscription_mrr
from tests.conftest import TEST_DATABASE
from tests.helpers import SIM_NOW, pinned_sim_clock
from tests.projections.support import apply_all, history_envelopes, reader_credentials

pytestmark = pytest.mark.integration
TENANT = "tenant_fx"
TODAY = date(2026, 12, 1)  # rates may not be dated after the day they are loaded; the tests pass their own "today"


@dataclass
class World:
    pool: asyncpg.Pool
    reader: RevenueReader
    mrr: dict[str, dict[str, Fraction]]  # month -> currency -> MRR (minor units) from the simulator's subscriptions
    daily: dict[str, dict[str, dict[str, int]]]  # the ground truth's daily revenue
    rates: dict[tuple[str, str], Decimal]  # (month-end day, currency) -> usd per unit, as loaded

    async def rows(self, sql: str) -> list[dict[str, Any]]:
        return await self.reader.run_sql(TENANT, Level.SUMMARY, sql)


def month_end_days(labels: list[str]) -> list[date]:
    out = []
    for label in labels:
        first = date.fromisoformat(label + "-01")
        out.append((first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1))
    return out


@pytest.fixture(scope="module")
async def world(platform: Platform, clean_database: str) -> AsyncIterator[World]:
    pool = await asyncpg.create_pool(clean_database, min_size=1, max_size=3)
    async with SimServer(seed=515, clock=pinned_sim_clock()) as sim:
        account = sim.create_account(api_version=CURRENT_VERSION, customers=60, months=12, currencies=("usd", "eur", "jpy"))
        await apply_all(PostgresProjectionStore(pool, "fx-test"), history_envelopes(sim, account.id, TENANT))
        store = sim.state.accounts[account.id].store(False)
        daily = sim.ground_truth(account.id)["daily"]
    subs = list(store.objects["subscription"].values())
    mrr: dict[str, dict[str, Fraction]] = {}
    for label, at in month_ends(min(s["created"] for s in subs), SIM_NOW):
        per: dict[str, Fraction] = defaultdict(Fraction)
        for sub in subs:
            state = store.state_at(sub["id"], at)
            if state is not None:
                per[state["currency"]] += subscription_mrr(state)
        mrr[label] = dict(per)
    # A rate per month end that moves every month (EUR up, JPY down); JPY's March and April rates left out, so
    # April has no JPY rate within 31 days of its end (February's is 61 days older).
    rates: dict[tuple[str, str], Decimal] = {}
    for i, day in enumerate(month_end_days(sorted(mrr))):
        rates[(day.isoformat(), "eur")] = Decimal("1.05") + Decimal(i) / 100
        if day.strftime("%Y-%m") not in ("2026-03", "2026-04"):
            rates[(day.isoformat(), "jpy")] = Decimal("0.0068") - Decimal(i) / 100000
    text = "date,currency,reporting_currency,rate\n" + "".join(
        f"{day},{cur},usd,{rate}\n" for (day, cur), rate in sorted(rates.items()))
    await load_rates(pool, parse_rates(text, TODAY))
    reader = RevenueReader(ReaderSettings(dsn=postgres.reader_dsn(platform.cluster, TEST_DATABASE)),  # type: ignore[arg-type]
                           reader_credentials(pool))
    yield World(pool, reader, mrr, daily, rates)
    await reader.close()
    await pool.close()


def factor(world: World, currency: str, as_of: date) -> Fraction | None:
    """Minor units of usd per minor unit of `currency`: the latest rate on or before `as_of`, at most 31 days older."""
    if currency == "usd":
        return Fraction(1)
    dated = [(date.fromisoformat(d), r) for (d, c), r in world.rates.items() if c == currency]
    valid = [(d, r) for d, r in dated if as_of - timedelta(days=31) <= d <= as_of]
    if not valid:
        return None
    return Fraction(max(valid)[1]) * Fraction(10) ** (2 - decimals(currency))


def half_up(amount: Fraction) -> int:
    """Whole minor units, a half rounded away from zero (PostgreSQL's round(numeric)); amounts here are >= 0."""
    return math.floor(amount + Fraction(1, 2))


def close(ours: Any, truth: Fraction, places: int = 6) -> bool:
    return abs(Fraction(Decimal(str(ours))) - truth) <= Fraction(1, 10**places) * 3


async def test_mrr_converts_at_month_end_rates_and_the_fx_effect_is_apart_from_the_movements(world: World) -> None:
    ours = {r["month"][:7]: r for r in await world.rows(
        "SELECT * FROM analytics.mrr_reporting WHERE NOT livemode AND reporting_currency = 'usd'")}
    labels = sorted(world.mrr)
    ends = month_end_days(labels)
    checked = fx_seen = 0
    for i, label in enumerate(labels[1:], start=1):
        row = ours[label]
        now, before = world.mrr[label], world.mrr[labels[i - 1]]
        moved = {c for c, v in (*now.items(), *before.items()) if v}
        missing = sorted({c for c in moved if factor(world, c, ends[i]) is None}
                         | {c for c, v in before.items() if v and factor(world, c, ends[i - 1]) is None})
        assert row["missing_rates"] == missing, label
        if missing:
            assert row["mrr"] is None and row["fx_effect"] is None and row["opening_mrr"] is None
            continue
        closing = sum((v * factor(world, c, ends[i]) for c, v in now.items()), Fraction(0))  # type: ignore[operator]
        opening = sum((v * factor(world, c, ends[i - 1]) for c, v in before.items()), Fraction(0))  # type: ignore[operator]
        # what exchange rates alone did: each currency's opening MRR times its rate change
        fx = sum((v * (factor(world, c, ends[i]) - factor(world, c, ends[i - 1]))  # type: ignore[operator]
                  for c, v in before.items()), Fraction(0))
        assert close(row["mrr"], closing) and close(row["opening_mrr"], opening), label
        assert abs(Fraction(Decimal(str(row["fx_effect"]))) - fx) <= Fraction(1, 10**5), label
        moves = sum(Fraction(Decimal(str(row[k]))) for k in ("new_mrr", "expansion_mrr", "contraction_mrr", "churned_mrr",
                                                         "reactivation_mrr"))
        assert Fraction(Decimal(str(row["opening_mrr"]))) + moves + Fraction(Decimal(str(row["fx_effect"]))) == Fraction(
            Decimal(str(row["closing_mrr"]))), f"{label}: opening + movements + FX effect is the closing MRR exactly"
        assert row["mrr"] == row["closing_mrr"] and close(row["arr"], 12 * Fraction(Decimal(str(row["mrr"]))))
        checked += 1
        fx_seen += fx != 0
    assert checked >= 6 and fx_seen >= 6
    assert ours["2026-03"]["missing_rates"] == [], "February's rate is 31 days before March's end: still in force"
    assert ours["2026-04"]["missing_rates"] == ["jpy"] and ours["2026-04"]["mrr"] is None
    assert ours["2026-05"]["missing_rates"] == ["jpy"], "May's opening MRR needs April's JPY rate"
    assert ours["2026-08"]["missing_rates"] == ["eur", "jpy"], "no rate within 31 days of August's end"


async def test_daily_revenue_converts_at_each_days_rate_and_a_day_without_one_is_not_converted(world: World) -> None:
    ours = {r["day"]: r for r in await world.rows(
        "SELECT * FROM analytics.daily_revenue_reporting WHERE NOT livemode AND reporting_currency = 'usd'")}
    assert set(ours) == set(world.daily)
    converted = 0
    for day, per_currency in world.daily.items():
        row = ours[day]
        factors = {c: factor(world, c, date.fromisoformat(day)) for c in per_currency}
        missing = sorted(c for c, f in factors.items() if f is None)
        assert row["missing_rates"] == missing, day
        if missing:
            assert (row["gross"], row["refunded"], row["net"]) == (None, None, None)
            continue
        gross = sum((v["gross"] * factors[c] for c, v in per_currency.items()), Fraction(0))  # type: ignore[operator]
        refunded = sum((v["refunded"] * factors[c] for c, v in per_currency.items()), Fraction(0))  # type: ignore[operator]
        assert (row["gross"], row["refunded"]) == (half_up(gross), half_up(refunded)), day
        assert row["net"] == row["gross"] - row["refunded"]
        converted += 1
    assert converted > 100 and any(ours[d]["missing_rates"] for d in ours), "some days precede every rate"


async def test_without_rates_for_a_currency_pair_nothing_is_converted_to_it(world: World) -> None:
    assert await world.rows("SELECT * FROM analytics.mrr_reporting WHERE reporting_currency = 'sek'") == []
    per_currency = await world.rows("SELECT * FROM analytics.mrr_by_month WHERE NOT livemode")
    assert {r["currency"] for r in per_currency} == {"usd", "eur", "jpy"}, "per-currency figures stay as they were"


def test_a_rates_file_is_checked_whole_and_each_bad_line_is_named() -> None:
    good = "date,currency,reporting_currency,rate\n2026-03-31,EUR,usd,1.0823\n2026-03-31,jpy,usd,0.0068\n"
    rates = parse_rates(good, TODAY)
    assert [(r.currency, r.reporting_currency, str(r.rate)) for r in rates] == [("eur", "usd", "1.0823"),
                                                                               ("jpy", "usd", "0.0068")]
    bad_lines = {
        "2026-02-30,eur,usd,1.1": "is not YYYY-MM-DD", "2027-01-01,eur,usd,1.1": "not between",
        "2026-03-01,euro,usd,1.1": "three-letter", "2026-03-01,usd,usd,1": "are both",
        "2026-03-01,eur,usd,0": "positive", "2026-03-01,eur,usd,-1.2": "plain decimal",
        "2026-03-01,eur,usd,NaN": "plain decimal", "2026-03-01,eur,usd,Infinity": "plain decimal",
        "2026-03-01,eur,usd,1e20": "plain decimal",
        "2026-03-01,eur,usd,1.0000000000001": "plain decimal", "2026-03-01,eur,usd,one": "plain decimal",
        "2026-03-01,eur,usd,1_0823": "plain decimal", "2026-03-01,eur,usd,١٫٠٨": "plain decimal",
        "20260331,eur,usd,1.08": "YYYY-MM-DD", "2026-W13-2,eur,usd,1.08": "YYYY-MM-DD",
        "2026-03-01,eur,usd": "expected 4 fields", "2026-03-01,eur,usd,1.1,extra": "expected 4 fields",
    }
    for line, words in bad_lines.items():
        with pytest.raises(RatesFileError, match=words) as caught:
            parse_rates(good + line + "\n", TODAY)
        assert "line 4" in str(caught.value) and "nothing loaded" in str(caught.value)
    with pytest.raises(RatesFileError, match=r"line 4: eur→usd on 2026-03-31 again \(first on line 2\)"):
        parse_rates(good + "2026-03-31,eur,usd,1.09\n", TODAY)
    with pytest.raises(RatesFileError, match="header"):
        parse_rates("day,from,to,rate\n2026-03-31,eur,usd,1.08\n", TODAY)
    with pytest.raises(RatesFileError, match="no rates"):
        parse_rates("date,currency,reporting_currency,rate\n", TODAY)


async def test_ingestor_fx_load_replaces_corrections_and_a_bad_file_changes_nothing(
    clean_database: str, tmp_path: Path
) -> None:
    env = {"INGESTOR_POSTGRES__DSN": clean_database, "PATH": os.environ["PATH"]}
    cli = [str(Path(sys.executable).with_name("ingestor")), "fx", "load"]
    first = tmp_path / "rates.csv"
    first.write_text("date,currency,reporting_currency,rate\n2026-01-31,eur,chf,0.94\n2026-02-28,eur,chf,0.95\n")
    done = subprocess.run([*cli, str(first)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "loaded 2 rate(s) from 2026-01-31 to 2026-02-28 for eur→chf: 2 new, 0 replaced" in done.stdout
    corrected = tmp_path / "corrected.csv"
    corrected.write_text("date,currency,reporting_currency,rate\n2026-02-28,eur,chf,0.951\n2026-03-31,eur,chf,0.96\n")
    done = subprocess.run([*cli, str(corrected)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "1 new, 1 replaced" in done.stdout, done.stdout + done.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("date,currency,reporting_currency,rate\n2026-04-30,eur,chf,0.97\n2026-05-31,eur,chf,-1\n")
    done = subprocess.run([*cli, str(bad)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "line 3" in done.stderr and "nothing loaded" in done.stderr
    conn = await asyncpg.connect(clean_database)
    try:
        stored = await conn.fetch("SELECT rate_date, rate FROM fx_rates WHERE reporting_currency = 'chf' ORDER BY rate_date")
        audit = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'fx_rates.loaded' "
                                    "AND detail->'pairs' ? 'eur→chf'")
    finally:
        await conn.close()
    assert [(r["rate_date"].isoformat(), str(r["rate"].normalize())) for r in stored] == [
        ("2026-01-31", "0.94"), ("2026-02-28", "0.951"), ("2026-03-31", "0.96")], "the bad file's good line is not there"
    assert audit == 2


def test_rates_may_not_be_dated_in_the_future() -> None:
    tomorrow = datetime.now(timezone.utc).date() + timedelta(days=1)
    with pytest.raises(RatesFileError, match="not between"):
        parse_rates(f"date,currency,reporting_currency,rate\n{tomorrow},eur,usd,1.1\n", datetime.now(timezone.utc).date())


async def test_a_months_converted_total_is_unknown_when_a_day_of_it_had_no_rate(world: World) -> None:
    """query_metric's month total of net revenue in usd: the sum of the days when every day was converted, NULL
    (not the sum of the days that were) when one was not."""
    metric = next(m for m in load_catalog() if m.name == "net_revenue_in_reporting_currency")
    query = metric_sql(metric, livemode=False, group_by="month", params={"reporting_currency": "usd"})
    months = {r["month"][:7]: r for r in await world.reader.run_sql(TENANT, Level.SUMMARY, query.sql, *query.args)}
    days = await world.rows("SELECT * FROM analytics.daily_revenue_reporting WHERE NOT livemode "
                            "AND reporting_currency = 'usd'")
    by_month: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in days:
        by_month[d["day"][:7]].append(d)
    assert set(months) == set(by_month)
    for label, rows in by_month.items():
        complete = all(r["net"] is not None for r in rows)
        assert months[label]["net"] == (sum(r["net"] for r in rows) if complete else None), label
    assert any(v["net"] is None for v in months.values()) and any(v["net"] is not None for v in months.values())
