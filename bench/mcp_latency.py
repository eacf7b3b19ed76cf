"""Read-layer latency on a 1,000-customer, 12-month tenant: `query_metric` and `explain` through the MCP server
over streamable HTTP (the web process's `/mcp`, the SDK's own client), and the Revenue page's one data call
(target: p99 < 300 ms), each against the same SQL statements run directly on a connection of the same reader
role in the same run (the baseline).

Run: `.venv/bin/python -m bench.mcp_latency [--customers 1000] [--calls 200] [--database ingestor_bench]`
(the database is dropped and re-migrated: give each concurrent user their own).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import httpx2
from aiohttp.test_utils import TestServer
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.common import BENCH_DATABASE, bench_settings, platform
from bench.results import BenchResult, Figure, Target, own_peak_rss_mib, write_result
from ingestor.connections.tenant_store import PostgresTenantStore
from ingestor.connections.vault import MasterKeyring, generate_master_key
from plumbing.settings import ControlSettings, ReaderSettings, VaultSettings
from projections.handlers.writes import writes_for
from projections.projector.store import PostgresProjectionStore
from projections.read.catalog import load_catalog
from projections.read.client import Level
from projections.read.lineage import ExplainRequest, explain
from projections.read.metric_queries import metric_sql, parse_day
from projections.read.revenue_page import SERIES as PAGE_SERIES
from service.web import build_web_app
from stack import postgres
from stack.progress import say
from stripe_sim import CURRENT_VERSION, SimServer
from tests.projections.support import history_envelopes


def percentile(samples: list[float], share: float) -> float:
    """Returns the nearest-rank percentile of `samples` (ms)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


async def timed(calls: int, one: Callable[[], Awaitable[Any]]) -> list[float]:
    """Runs `one` `calls` times after a tenth as many warm-up calls; returns each call's ms."""
    for _ in range(max(5, calls // 10)):
        await one()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        await one()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def run(customers: int, calls: int, database: str) -> None:
    plat = platform()
    settings = await bench_settings(plat, database)
    master = generate_master_key("bench")
    settings = settings.model_copy(update={
        "reader": ReaderSettings(dsn=postgres.reader_dsn(plat.cluster, database)),  # type: ignore[arg-type]
        "vault": VaultSettings(master_keys=master),  # type: ignore[arg-type]
        "control": ControlSettings(admin_token="adm_" + master[-12:]),  # type: ignore[arg-type]
    })
    pool = await asyncpg.create_pool(settings.postgres.dsn.get_secret_value(), min_size=1, max_size=3)
    tenants = PostgresTenantStore(pool, MasterKeyring.from_setting(master), settings.reader)
    tenant, tenant_token = await tenants.create_tenant("bench")
    _, token = await tenants.issue_reader_token(tenant, "standard", "bench")
    store = PostgresProjectionStore(pool, "bench-mcp")
    async with SimServer(seed=31337) as sim:
        account = sim.create_account(api_version=CURRENT_VERSION, customers=customers, months=12)
        envelopes = history_envelopes(sim, account.id, tenant)
    for start in range(0, len(envelopes), 1000):
        chunk = envelopes[start:start + 1000]
        await store.apply([(e.tenant_id, e.event_id, writes_for(e)) for e in chunk], {})
        say(f"projected {start + len(chunk):,}/{len(envelopes):,} events")
    role, password = await tenants.reader_credentials(tenant, "standard")
    direct = await asyncpg.connect(settings.reader.dsn.get_secret_value(), user=role, password=password)
    months = [r["month"] for r in await direct.fetch(
        "SELECT month FROM analytics.mrr_movements WHERE NOT livemode AND churned_mrr < 0 ORDER BY churned_mrr LIMIT 1")]
    month = months[0].isoformat()[:7] if months else None
    catalog = {m.name: m for m in load_catalog()}
    query_args = {"metric": "net_revenue", "group_by": "month", "mode": "test"}
    query = metric_sql(catalog["net_revenue"], livemode=False, group_by="month")
    explain_args = {"metric": "mrr_movements", "month": month, "movement": "churn", "mode": "test", "limit": 100}
    recorded: list[tuple[str, tuple[Any, ...]]] = []

    async def record(sql: str, *args: Any) -> list[dict[str, Any]]:
        recorded.append((sql, args))
        return [dict(r) for r in await direct.fetch(sql, *args)]

    await explain(record, Level.STANDARD, ExplainRequest("mrr_movements", False, parse_day("month", month),
                                                         movement="churn", limit=100))

    async def direct_query() -> None:
        async with direct.transaction(readonly=True):
            await direct.fetch(query.sql, *query.args)

    async def direct_explain() -> None:
        async with direct.transaction(readonly=True):
            for sql, args in recorded:
                await direct.fetch(sql, *args)

    async def direct_page() -> None:  # the same statements, one after another on one connection
        async with direct.transaction(readonly=True):
            for name, sql in PAGE_SERIES.items():
                await direct.fetch(sql, *(() if name == "settings" else (False,)))

    server = TestServer(build_web_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            async with Client(streamable_http_client(str(server.make_url("/mcp")), http_client=http)) as client:
                async def mcp_query() -> None:
                    assert not (await client.call_tool("query_metric", query_args)).is_error

                async def mcp_explain() -> None:
                    result = await client.call_tool("explain", explain_args)
                    assert not result.is_error and result.structured_content["adds_up"]

                say(f"timing {calls} calls each (query_metric, explain; over MCP and direct)")
                samples = {"query_metric": await timed(calls, mcp_query), "query_metric_direct": await timed(calls, direct_query),
                           "explain": await timed(calls, mcp_explain), "explain_direct": await timed(calls, direct_explain)}
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {tenant_token}"}) as web_client:
            async def page_call() -> None:
                async with web_client.get(str(server.make_url(f"/api/tenants/{tenant}/revenue")),
                                          params={"mode": "test"}) as resp:
                    assert resp.status == 200
                    await resp.read()

            say(f"timing {calls} calls of the Revenue page's data (over HTTP and direct)")
            samples["revenue_page"] = await timed(calls, page_call)
            samples["revenue_page_direct"] = await timed(calls, direct_page)
    finally:
        await server.close()
        await direct.close()
        await pool.close()
    figures = []
    for tool in ("query_metric", "explain", "revenue_page"):
        for name, share in (("p50", 0.50), ("p99", 0.99)):
            over = "HTTP (the page's one data call)" if tool == "revenue_page" else "MCP/HTTP"
            figures.append(Figure(
                f"{tool} latency {name} over {over}", round(percentile(samples[tool], share), 2), "ms",
                target=Target(at_most=300) if (tool, name) == ("revenue_page", "p99") else None,
                baseline_name=f"same SQL direct {name}", baseline_value=round(percentile(samples[f"{tool}_direct"], share), 2),
                notes=f"{customers} customers × 12 months, {len(envelopes):,} events; {calls} sequential calls; "
                      f"mean {statistics.mean(samples[tool]):.1f} ms"))
    write_result(BenchResult("mcp_latency", figures, {"bench (client + web in-process)": own_peak_rss_mib()},
                             notes="The MCP path includes the HTTP round trip, bearer-token lookup, the SDK's "
                                   "JSON-RPC handling and the reader pool; the baseline runs only the statements."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--database", default=BENCH_DATABASE)
    args = parser.parse_args()
    asyncio.run(run(args.customers, args.calls, args.database))


if __name__ == "__main__":
    main()
