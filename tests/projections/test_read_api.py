"""The read layer over HTTP, served by the web process: tenant token only, read-only, JSON out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from ingestor.connections.store import PostgresConnectionStore
from ingestor.connections.tenant_store import PostgresTenantStore
from ingestor.connections.vault import MasterKeyring, generate_master_key
from plumbing.settings import Settings, VaultSettings
from projections.handlers.writes import writes_for
from projections.projector.store import PostgresProjectionStore
from service.web import build_web_app
from tests.projections.test_order_and_duplicates import CHARGE, T, event

pytestmark = pytest.mark.integration


@pytest.fixture
async def served(make_settings: Callable[..., Settings], clean_database: str) -> AsyncIterator[dict[str, Any]]:
    master = generate_master_key("k1")
    settings = make_settings().model_copy(update={"vault": VaultSettings(master_keys=master)})  # type: ignore[arg-type]
    pool = await asyncpg.create_pool(clean_database, min_size=1, max_size=2)
    store = PostgresConnectionStore(pool, MasterKeyring.from_setting(master))
    tenant_a, token_a = await PostgresTenantStore(pool).create_tenant("A")
    tenant_b, token_b = await PostgresTenantStore(pool).create_tenant("B")
    projection = PostgresProjectionStore(pool, "read-api")
    for tenant in (tenant_a, tenant_b):
        envelope = event(CHARGE | {"status": "succeeded", "customer": "cus_1"}, "charge.succeeded", f"evt_{tenant}", T, tenant)
        await projection.apply([(tenant, envelope.event_id, writes_for(envelope))], {})
    server = TestServer(build_web_app(settings), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        yield {"server": server, "http": http, "a": (tenant_a, token_a), "b": (tenant_b, token_b)}
    await server.close()
    await pool.close()


async def get(served: dict[str, Any], path: str, token: str | None, **query: str) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with served["http"].get(served["server"].make_url(path), params=query, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_a_tenant_reads_its_own_revenue_as_json(served: dict[str, Any]) -> None:
    tenant, token = served["a"]
    status, body = await get(served, f"/api/tenants/{tenant}/questions/revenue", token,
                             mode="test", **{"from": "2025-10-01", "to": "2025-10-31"})
    assert status == 200
    assert body["rows"] == [{"currency": "usd", "gross": 5000, "refunded": 0, "net": 5000}]
    status, body = await get(served, f"/api/tenants/{tenant}/questions/payment_history", token,
                             mode="test", level="standard", customer="cus_1")
    assert status == 200 and [r["charge_id"] for r in body["rows"]] == ["ch_1"]
    status, body = await get(served, f"/api/tenants/{tenant}/questions", token)
    assert status == 200 and {q["name"] for q in body["questions"]} >= {"revenue", "mrr", "top_customers"}


async def test_other_tenants_and_missing_tokens_are_refused(served: dict[str, Any]) -> None:
    tenant_a, token_a = served["a"]
    tenant_b, _ = served["b"]
    assert (await get(served, f"/api/tenants/{tenant_b}/questions/mrr", token_a))[0] == 404
    assert (await get(served, f"/api/tenants/{tenant_a}/questions/mrr", None))[0] == 401
    assert (await get(served, f"/api/tenants/{tenant_a}/questions/mrr", "tt_forged"))[0] == 401


async def test_bad_questions_and_levels_get_clear_errors(served: dict[str, Any]) -> None:
    tenant, token = served["a"]
    status, body = await get(served, f"/api/tenants/{tenant}/questions/top_customers", token,
                             level="summary", currency="usd", limit="3")
    assert status == 403 and "needs the standard permission level" in body["error"]["message"]
    status, body = await get(served, f"/api/tenants/{tenant}/questions/revenue", token, **{"from": "yesterday", "to": "x"})
    assert status == 400 and body["error"]["code"] == "invalid_question"
    assert (await get(served, f"/api/tenants/{tenant}/questions/mrr", token, level="root"))[0] == 400
