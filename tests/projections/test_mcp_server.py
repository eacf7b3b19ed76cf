"""The AI query layer over MCP, driven by the SDK's own client over stdio (`ingestor mcp`) and over
streamable HTTP (the web process's `/mcp`): every tool and its schema, a refusal for each guard, and an
`explain` of a month's churn whose events exist in the simulator and whose amounts add up to the cent."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import asyncpg
import httpx2
import pytest
from aiohttp.test_utils import TestServer
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from ingestor.connections.tenant_store import PostgresTenantStore
from ingestor.connections.vault import MasterKeyring, generate_master_key
from plumbing.settings import ControlSettings, PostgresSettings, ReaderSettings, Settings, VaultSettings
from projections.projector.store import PostgresProjectionStore
from service.web import build_web_app
from stack import postgres
from stack.up import Platform
from stripe_sim import CURRENT_VERSION, SimServer
from stripe_sim.ground_truth import month_ends, subscription_mrr
from tests.conftest import TEST_DATABASE
from tests.helpers import SIM_NOW, pinned_sim_clock
from tests.projections.support import apply_all, history_envelopes

pytestmark = pytest.mark.integration
TOOLS = {"list_metrics", "describe_metric", "query_metric", "explain", "run_sql"}
REPO = Path(__file__).resolve().parents[2]
SQL_MAX_ROWS = 50
SQL_MAX_BYTES = 2048


@dataclass
class World:
    """Tenant A (a simulated account's year, projected) and tenant B, the web app, and the tokens."""

    server: TestServer
    tenant_a: str
    tenant_b: str
    tokens: dict[str, str]  # "a:summary", "a:standard", "a:full", "b:full"
    env: dict[str, str]  # what `ingestor mcp` needs besides its token
    sim_events: set[str]
    churn: dict[str, dict[str, Fraction]]  # month → currency → churned MRR (negative), from the simulator
    b_charge: str
    b_charges: int
    tenants: PostgresTenantStore


def _churn_by_month(store: Any) -> dict[str, dict[str, Fraction]]:
    """The simulator's own churned MRR per month and currency: customers whose MRR went from > 0 to 0."""
    subs = list(store.objects["subscription"].values())
    ends = month_ends(min(s["created"] for s in subs), SIM_NOW)
    previous: dict[tuple[str, str], Fraction] = {}
    churn: dict[str, dict[str, Fraction]] = {}
    for label, at in ends:
        current: dict[tuple[str, str], Fraction] = defaultdict(Fraction)
        for sub in subs:
            state = store.state_at(sub["id"], at)
            if state is not None and subscription_mrr(state):
                current[(state["customer"], state["currency"])] += subscription_mrr(state)
        month: dict[str, Fraction] = defaultdict(Fraction)
        for (customer, currency), opening in previous.items():
            if opening > 0 and not any(v > 0 for (c, _), v in current.items() if c == customer):
                month[currency] -= opening
        churn[label] = dict(month)
        previous = dict(current)
    return churn


@pytest.fixture(scope="module")
async def world(platform: Platform, clean_database: str) -> AsyncIterator[World]:
    master = generate_master_key("k1")
    reader_dsn = postgres.reader_dsn(platform.cluster, TEST_DATABASE)
    settings = Settings(postgres=PostgresSettings(dsn=clean_database),  # type: ignore[arg-type]
                        reader=ReaderSettings(dsn=reader_dsn, sql_max_rows=SQL_MAX_ROWS,  # type: ignore[arg-type]
                                              sql_max_bytes=SQL_MAX_BYTES),
                        vault=VaultSettings(master_keys=master),  # type: ignore[arg-type]
                        control=ControlSettings(admin_token="adm_" + master[-12:]))  # type: ignore[arg-type]
    pool = await asyncpg.create_pool(clean_database, min_size=1, max_size=3)
    tenants = PostgresTenantStore(pool, MasterKeyring.from_setting(master), settings.reader)
    tenant_a, _ = await tenants.create_tenant("A")
    tenant_b, _ = await tenants.create_tenant("B")
    tokens = {f"a:{level}": (await tenants.issue_reader_token(tenant_a, level, level))[1]
              for level in ("summary", "standard", "full")}
    tokens["b:full"] = (await tenants.issue_reader_token(tenant_b, "full", "full"))[1]
    store = PostgresProjectionStore(pool, "mcp-test")
    async with SimServer(seed=2718, clock=pinned_sim_clock()) as sim:
        for tenant, customers in ((tenant_a, 40), (tenant_b, 5)):
            account = sim.create_account(api_version=CURRENT_VERSION, customers=customers, months=12)
            envelopes = history_envelopes(sim, account.id, tenant)
            await apply_all(store, envelopes)
            sim_store = sim.state.accounts[account.id].store(False)
            if tenant == tenant_a:
                sim_events = {e["id"] for e in sim_store.all("event")}
                churn = _churn_by_month(sim_store)
            else:
                b_charge = next(iter(sim_store.objects["charge"]))
                b_charges = len(sim_store.objects["charge"])
    server = TestServer(build_web_app(settings), host="127.0.0.1")
    await server.start_server()
    env = {"INGESTOR_POSTGRES__DSN": clean_database, "INGESTOR_READER__DSN": reader_dsn,
           "INGESTOR_VAULT__MASTER_KEYS": master, "PATH": os.environ["PATH"]}
    yield World(server, tenant_a, tenant_b, tokens, env, sim_events, churn, b_charge, b_charges, tenants)
    await server.close()
    await pool.close()


@asynccontextmanager
async def over_http(world: World, token: str | None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(str(world.server.make_url("/mcp")), http_client=http)) as client:
            yield client


@asynccontextmanager
async def over_stdio(world: World, token: str) -> AsyncIterator[Client]:
    command = StdioServerParameters(command=sys.executable, args=["-m", "service", "mcp"], cwd=str(REPO),
                                    env={**world.env, "INGESTOR_READER_TOKEN": token})
    async with Client(command) as client:
        yield client


def answer(result: Any) -> dict[str, Any]:
    """The tool's JSON answer; fails the test on a tool error."""
    assert not result.is_error, result.content[0].text
    return result.structured_content or json.loads(result.content[0].text)


def refusal(result: Any) -> str:
    """The tool's refusal text; fails the test when the call succeeded."""
    assert result.is_error, f"expected a refusal, got {result.structured_content}"
    return str(result.content[0].text)


async def test_every_tool_has_a_schema_and_a_description_for_a_model(world: World) -> None:
    async with over_http(world, world.tokens["a:summary"]) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        resources = {str(r.uri) for r in (await client.list_resources()).resources}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert len(tool.description or "") > 80 and tool.input_schema["type"] == "object"
    query = tools["query_metric"].input_schema
    assert query["required"] == ["metric"] and query["properties"]["group_by"]["anyOf"][0]["enum"] == ["day", "month", "total"]
    assert not {"tenant", "tenant_id", "level"} & {p for t in tools.values() for p in t.input_schema["properties"]}
    assert resources == {"revenue://catalog", "revenue://views"}


async def test_metrics_are_listed_described_and_queried_with_their_definition(world: World) -> None:
    async with over_http(world, world.tokens["a:summary"]) as client:
        listed = answer(await client.call_tool("list_metrics", {}))
        described = answer(await client.call_tool("describe_metric", {"name": "net_revenue"}))
        monthly = answer(await client.call_tool("query_metric", {"metric": "net_revenue", "group_by": "month",
                                                                 "mode": "test", "start": "2026-01", "end": "2026-03"}))
        daily = answer(await client.call_tool("query_metric", {"metric": "net_revenue", "mode": "test",
                                                               "start": "2026-01-01", "end": "2026-03-31", "limit": 1000}))
        mrr = answer(await client.call_tool("query_metric", {"metric": "mrr", "mode": "test", "start": "2026-05"}))
    assert listed["level"] == "summary"
    by_name = {m["name"]: m for m in listed["metrics"]}
    assert by_name["net_revenue"]["allowed"] and not by_name["customer_revenue"]["allowed"]
    assert described["definition"].startswith("Gross revenue minus refunded revenue")
    assert described["group_by"] == ["day", "month", "total"] and described["unit"] == "minor units of currency"
    assert monthly["definition"] == described["definition"] and {r["month"] for r in monthly["rows"]} == {
        "2026-01-01", "2026-02-01", "2026-03-01"}
    for row in monthly["rows"]:  # a month is the sum of its days, per currency, to the minor unit
        days = [d for d in daily["rows"] if d["day"][:7] == row["month"][:7] and d["currency"] == row["currency"]]
        assert row["net"] == sum(d["net"] for d in days) and isinstance(row["net"], int)
    assert [r["month"] for r in mrr["rows"]][:1] == ["2026-05-01"] and all("currency" in r for r in mrr["rows"])


async def test_explain_a_months_churn_names_real_stripe_events_and_adds_up_to_the_cent(world: World) -> None:
    month, by_currency = max(world.churn.items(), key=lambda kv: -sum(kv[1].values()))
    assert by_currency, "the simulated year has a month with churn"
    async with over_http(world, world.tokens["a:standard"]) as client:
        explained = answer(await client.call_tool("explain", {"metric": "mrr_movements", "month": month,
                                                              "movement": "churn", "mode": "test", "limit": 500}))
    assert explained["adds_up"] and not explained["truncated"]
    rows = explained["contributions"]
    assert rows and all(r["movement"] == "churn" for r in rows)
    assert {r["event_id"] for r in rows} <= world.sim_events, "every event id is one Stripe (the simulator) sent"
    assert all(r["source"] == "stripe_event" and r["event_id"].startswith("evt_") for r in rows)
    for currency, truth in by_currency.items():
        total = sum(Decimal(r["change"]) for r in rows if r["currency"] == currency)
        figure = next(f for f in explained["figures"] if f["currency"] == currency)
        assert total == Decimal(figure["churned_mrr"]), "the rows add up to the movement the metric shows"
        assert abs(Fraction(total) - truth) < Fraction(1, 100), f"{currency}: {total} vs the simulator's {float(truth)}"


async def test_explain_a_days_revenue_adds_up_and_summary_gets_counts_only(world: World) -> None:
    async with over_http(world, world.tokens["a:standard"]) as client:
        days = answer(await client.call_tool("query_metric", {"metric": "net_revenue", "mode": "test",
                                                              "start": "2026-03-01", "end": "2026-03-31"}))["rows"]
        day = max(days, key=lambda r: r["gross"])["day"]
        detailed = answer(await client.call_tool("explain", {"metric": "net_revenue", "start": day, "mode": "test"}))
    async with over_http(world, world.tokens["a:summary"]) as client:
        summary = answer(await client.call_tool("explain", {"metric": "net_revenue", "start": day, "mode": "test"}))
    assert detailed["adds_up"] and summary["adds_up"] and detailed["totals"] == summary["totals"]
    assert {r["kind"] for r in detailed["contributions"]} <= {"charge", "refund"}
    charges = [r for r in detailed["contributions"] if r["kind"] == "charge"]
    assert charges and all(r["event_id"] in world.sim_events for r in charges)
    assert summary["contributions"] is None and "standard" in summary["note"]
    assert "cus_" not in json.dumps(summary) and "evt_" not in json.dumps(summary)


async def test_run_sql_reads_the_analytics_views_as_the_tenant_and_caps_rows(world: World) -> None:
    async with over_http(world, world.tokens["a:summary"]) as client:
        result = answer(await client.call_tool("run_sql", {
            "sql": "select currency, sum(net) as net from analytics.daily_revenue where not livemode group by 1"}))
        capped = answer(await client.call_tool("run_sql", {"sql": "select * from analytics.daily_revenue"}))
    async with over_http(world, world.tokens["b:full"]) as client:
        other = answer(await client.call_tool("run_sql", {"sql": "select count(*) as n from analytics.charges"}))
    assert result["rows"] and result["sql"].startswith("SELECT currency, sum(net)")
    assert capped["truncated"] and 0 < len(capped["rows"]) <= SQL_MAX_ROWS, "a year of days is cut at a cap"
    assert sum(len(str(v)) for row in capped["rows"] for v in row.values()) <= SQL_MAX_BYTES, "…and at the byte cap"
    assert other["rows"] == [{"n": world.b_charges}], "tenant B counts its own charges, not A's"


async def test_run_sql_refuses_what_could_build_a_huge_value_before_it_runs(world: World) -> None:
    """From a hostile review: ARRAY(SELECT …) over cross-joined VALUES lists made one 50 MB value (500 MB with
    longer strings) that Postgres held and the web process read whole before its byte cap; a chain of CTEs each
    repeating the one below grows tenfold a level. Both are refused by the guard; a row that passes the guard but
    not the byte cap is refused when Postgres announces it, and the tenant's next call works."""
    values = "(values " + ", ".join(f"({i})" for i in range(100)) + ")"
    array_of_rows = (f"select array(select '{'x' * 1000}' from {values} a, {values} b, "
                     "(values (1), (2), (3), (4), (5)) c)")
    chain = "with l0 as (select 'xxxxxxxxxx' as v)" + "".join(
        f", l{i} as (select {' || '.join(['v'] * 10)} as v from l{i - 1})" for i in range(1, 9)) + " select v from l8"
    wide = f"select '{'x' * 3000}' || '{'y' * 3000}' as v"
    async with over_http(world, world.tokens["a:summary"]) as client:
        by_rows = refusal(await client.call_tool("run_sql", {"sql": array_of_rows}))
        by_chain = refusal(await client.call_tool("run_sql", {"sql": chain}))
        by_wire = refusal(await client.call_tool("run_sql", {"sql": wide}))
        after = answer(await client.call_tool("run_sql", {"sql": "select 1 as one"}))
    assert "refused: ARRAY(SELECT …) is not allowed" in by_rows
    assert "refused: the values this query could build" in by_chain and "MiB" in by_chain
    assert f"at most {SQL_MAX_BYTES:,} bytes" in by_wire and "a row of the answer is 6,0" in by_wire
    assert after["rows"] == [{"one": 1}]


@pytest.mark.parametrize("sql, reason", [
    ("select 1; select 2", "one statement only"),
    ("drop view analytics.daily_revenue", "only SELECT"),
    ("with d as (delete from analytics.daily_revenue returning *) select * from d", "DELETE"),
    ("select pg_sleep(5)", "function pg_sleep() is not allowed"),
    ("select current_setting('app.tenant_id')", "function current_setting() is not allowed"),
    ("select * from projection.charges", "only the analytics views"),
    ("select * from pg_catalog.pg_authid", "only the analytics views"),
    ("select * from (with charges as (select 1) select * from charges) a, charges", "charges is not one"),
    ("select * from analytics.daily_revenue for update", "FOR UPDATE"),
])
async def test_run_sql_refuses_each_guard_with_the_reason(world: World, sql: str, reason: str) -> None:
    async with over_http(world, world.tokens["a:full"]) as client:
        text = refusal(await client.call_tool("run_sql", {"sql": sql}))
    assert "refused:" in text and reason in text


async def test_a_higher_level_or_another_tenant_cannot_be_reached_through_arguments(world: World) -> None:
    async with over_http(world, world.tokens["a:summary"]) as client:
        by_level = refusal(await client.call_tool("query_metric", {"metric": "customer_revenue", "params": {"currency": "usd"},
                                                                   "mode": "test"}))
        by_sql = refusal(await client.call_tool("run_sql", {"sql": "select * from analytics.charge_cards"}))
        lineage = refusal(await client.call_tool("run_sql", {"sql": "select * from analytics.mrr_changes"}))
        extra = await client.call_tool("query_metric", {"metric": "net_revenue", "tenant_id": world.tenant_b,
                                                        "level": "full", "mode": "test", "group_by": "total"})
        own = answer(await client.call_tool("query_metric", {"metric": "net_revenue", "mode": "test", "group_by": "total"}))
    async with over_http(world, world.tokens["a:full"]) as client:
        foreign = answer(await client.call_tool("query_metric", {"metric": "card_on_charge", "mode": "test",
                                                                 "params": {"charge": world.b_charge}}))
    assert "needs the standard level" in by_level and "grants summary" in by_level
    assert "cannot read that" in by_sql and "cannot read that" in lineage
    assert extra.is_error or answer(extra)["rows"] == own["rows"], "extra arguments change nothing"
    assert foreign["rows"] == [], "tenant B's charge is invisible to tenant A's full reader"


async def test_http_without_a_valid_reader_token_is_refused_before_any_tool(world: World) -> None:
    async with httpx2.AsyncClient(timeout=10) as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        for headers in ({}, {"Authorization": "Bearer rdr_sum_not-a-token"}):
            resp = await http.post(str(world.server.make_url("/mcp")), json=body,
                                   headers={**headers, "Accept": "application/json, text/event-stream"})
            assert resp.status_code == 401 and "www-authenticate" in resp.headers
        metadata = await http.get(str(world.server.make_url("/.well-known/oauth-protected-resource/mcp")))
    assert metadata.status_code == 200 and metadata.json()["resource"].endswith("/mcp")


async def test_errors_name_the_problem(world: World) -> None:
    async with over_http(world, world.tokens["a:standard"]) as client:
        unknown = refusal(await client.call_tool("query_metric", {"metric": "mrr_forecast"}))
        grouping = refusal(await client.call_tool("query_metric", {"metric": "mrr", "group_by": "day"}))
        bad_day = refusal(await client.call_tool("query_metric", {"metric": "net_revenue", "start": "2026-13-01"}))
        no_month = refusal(await client.call_tool("explain", {"metric": "mrr_movements"}))
        not_explainable = refusal(await client.call_tool("explain", {"metric": "customer_revenue", "month": "2026-01"}))
    assert "unknown metric 'mrr_forecast'" in unknown and "net_revenue" in unknown
    assert "mrr can be grouped by: month" in grouping
    assert "from must be a date" in bad_day
    assert "give month" in no_month and "explain knows" in not_explainable


async def test_stdio_serves_the_same_tools_as_the_token_in_its_environment(world: World) -> None:
    async with over_stdio(world, world.tokens["a:summary"]) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        revenue = answer(await client.call_tool("query_metric", {"metric": "gross_revenue", "group_by": "total",
                                                                 "mode": "test"}))
        refused = refusal(await client.call_tool("run_sql", {"sql": "select * from analytics.customers"}))
        views = await client.read_resource("revenue://views")
    async with over_http(world, world.tokens["a:summary"]) as client:
        same = answer(await client.call_tool("query_metric", {"metric": "gross_revenue", "group_by": "total",
                                                              "mode": "test"}))
    assert tools == TOOLS and revenue["rows"] == same["rows"] and revenue["rows"]
    assert "cannot read that" in refused
    text = views.contents[0].text
    assert "## analytics.daily_revenue" in text and "analytics.customers" not in text, "summary sees summary views"


async def test_stdio_refuses_to_start_without_a_live_token(world: World) -> None:
    import subprocess

    for token in ("", "rdr_sum_revoked-or-made-up"):
        done = subprocess.run([sys.executable, "-m", "service", "mcp"], cwd=REPO, capture_output=True, text=True,
                              env={**world.env, "INGESTOR_READER_TOKEN": token}, timeout=60)
        assert done.returncode == 2 and "INGESTOR_READER_TOKEN" in done.stderr and done.stdout == ""


async def test_lineage_adds_up_to_every_figure_of_the_simulated_year(world: World) -> None:
    """Every day's revenue and every month's movements equal the sum of their contributing rows."""
    revenue = """
        select count(*) as mismatches, (select count(*) from analytics.daily_revenue where not livemode) as days
          from (select day, currency, sum(amount) filter (where kind = 'charge') as gross,
                       sum(amount) filter (where kind = 'refund') as refunded,
                       sum(amount) filter (where kind = 'failed_charge') as failed
                  from analytics.revenue_contributions where not livemode group by 1, 2) c
          full join (select * from analytics.daily_revenue where not livemode) d using (day, currency)
         where coalesce(c.gross, 0) <> coalesce(d.gross, 0) or coalesce(c.refunded, 0) <> coalesce(d.refunded, 0)
            or coalesce(c.failed, 0) <> coalesce(d.failed_amount, 0)"""
    movements = """
        select count(*) as mismatches, (select count(*) from analytics.mrr_changes where not livemode) as changes
          from (select month, currency,
                       coalesce(sum(change) filter (where movement = 'new'), 0) as new_mrr,
                       coalesce(sum(change) filter (where movement = 'expansion'), 0) as expansion_mrr,
                       coalesce(sum(change) filter (where movement = 'contraction'), 0) as contraction_mrr,
                       coalesce(sum(change) filter (where movement = 'churn'), 0) as churned_mrr,
                       coalesce(sum(change) filter (where movement = 'reactivation'), 0) as reactivation_mrr
                  from analytics.mrr_changes where not livemode group by 1, 2) c
          full join (select * from analytics.mrr_movements where not livemode) m using (month, currency)
         where coalesce(c.new_mrr, 0) <> coalesce(m.new_mrr, 0)
            or coalesce(c.expansion_mrr, 0) <> coalesce(m.expansion_mrr, 0)
            or coalesce(c.contraction_mrr, 0) <> coalesce(m.contraction_mrr, 0)
            or coalesce(c.churned_mrr, 0) <> coalesce(m.churned_mrr, 0)
            or coalesce(c.reactivation_mrr, 0) <> coalesce(m.reactivation_mrr, 0)"""
    async with over_http(world, world.tokens["a:standard"]) as client:
        by_day = answer(await client.call_tool("run_sql", {"sql": revenue}))["rows"][0]
        by_month = answer(await client.call_tool("run_sql", {"sql": movements}))["rows"][0]
    assert by_day["days"] > 100 and by_day["mismatches"] == 0
    assert by_month["changes"] > 20 and by_month["mismatches"] == 0


async def test_logs_name_the_call_but_never_the_querys_literals(world: World, caplog: pytest.LogCaptureFixture) -> None:
    from structlog.testing import capture_logs

    secret = "cus_SECRET_LITERAL_42"
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        async with over_http(world, world.tokens["a:standard"]) as client:
            answer(await client.call_tool("run_sql", {"sql": f"select count(*) from analytics.charges where customer_id = '{secret}'"}))
            refusal(await client.call_tool("run_sql", {"sql": f"select '{secret}' from pg_catalog.pg_roles"}))
            refusal(await client.call_tool("run_sql", {"sql": f"selec '{secret}'"}))
    calls = [e for e in logs if e.get("event") == "mcp tool" and e.get("tool") == "run_sql"]
    assert [e["outcome"] for e in calls] == ["ok", "refused", "refused"]
    assert "customer_id = $1" in calls[0]["query"] and calls[0]["fingerprint"]
    assert secret not in repr(logs), "structlog lines carry no literal"
    assert secret not in caplog.text, "nor do the SDK's or any library's stdlib log records"


async def test_the_cli_prints_money_in_major_units_and_takes_a_month(world: World) -> None:
    """`ingestor ask`, the operator's view of the same read layer: `-p month=2026-03` works (it used to fail with
    "Invalid isoformat string") and amounts read as money (€43.50, ¥98,402), not fractional minor units."""
    import subprocess

    from projections.read.money import format_money

    def ask(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "service", "ask", world.tenant_a, *args, "--mode", "test"],
                              cwd=REPO, capture_output=True, text=True, env=world.env, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    churn = ask("churn", "-p", "month=2026-03")
    mrr = ask("mrr")
    async with over_http(world, world.tokens["a:summary"]) as client:
        rows = answer(await client.call_tool("query_metric", {"metric": "mrr", "mode": "test", "start": "2026-03",
                                                              "end": "2026-03"}))["rows"]
    assert "2026-03-01" in churn
    assert rows and all(format_money(r["mrr"], r["currency"]) in mrr for r in rows)
    assert ".000000" not in mrr


async def test_a_huge_request_is_refused_while_it_is_read(world: World) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "run_sql", "arguments": {"sql": "select 1 -- " + "x" * 200_000}}}
    async with httpx2.AsyncClient(timeout=10) as http:
        resp = await http.post(str(world.server.make_url("/mcp")), json=body,
                               headers={"Authorization": f"Bearer {world.tokens['a:summary']}",
                                        "Accept": "application/json, text/event-stream"})
    assert resp.status_code == 413


async def test_a_revoked_token_stops_working_on_stdio_at_the_next_call(world: World) -> None:
    token_id, token = await world.tenants.issue_reader_token(world.tenant_a, "summary", "to revoke")
    async with over_stdio(world, token) as client:
        answer(await client.call_tool("list_metrics", {}))
        assert await world.tenants.revoke_reader_token(world.tenant_a, token_id)
        text = refusal(await client.call_tool("list_metrics", {}))
    assert "revoked" in text


async def test_a_mode_bound_credential_reads_its_mode_only_whatever_the_sql(world: World) -> None:
    """The credential fixes the mode too: a live-only token cannot ask for test data, and the database keeps
    test rows out of its role's reach even in free SQL (row-level security on livemode)."""
    _, live_only = await world.tenants.issue_reader_token(world.tenant_a, "standard", "live only", "live")
    _, test_only = await world.tenants.issue_reader_token(world.tenant_a, "standard", "test only", "test")
    count = {"sql": "select count(*) as n from analytics.charges where not livemode"}
    async with over_http(world, live_only) as client:
        asked = refusal(await client.call_tool("query_metric", {"metric": "net_revenue", "mode": "test"}))
        hidden = answer(await client.call_tool("run_sql", count))["rows"]
        hidden_view = answer(await client.call_tool("run_sql", {"sql": "select count(*) as n from analytics.mrr_changes"}))
    async with over_http(world, test_only) as client:
        own = answer(await client.call_tool("query_metric", {"metric": "net_revenue", "group_by": "total"}))
        seen = answer(await client.call_tool("run_sql", count))["rows"]
        refused = refusal(await client.call_tool("explain", {"metric": "net_revenue", "month": "2026-03", "mode": "live"}))
    assert "reads live mode only" in asked and "reads test mode only" in refused
    assert hidden == [{"n": 0}] and hidden_view["rows"] == [{"n": 0}], "test rows do not exist for a live-only role"
    assert seen[0]["n"] > 0 and own["mode"] == "test" and own["rows"], "a test-only token reads test data by default"
    async with httpx2.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {live_only}"}) as http:
        resp = await http.get(str(world.server.make_url(f"/api/tenants/{world.tenant_a}/questions/mrr")),
                              params={"mode": "test"})
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "mode_not_granted"
