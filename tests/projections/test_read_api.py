"""The read layer over HTTP, served by the web process: read-only, JSON out, at the level the token grants."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from ingestor.connections.tenant_store import PostgresTenantStore
from ingestor.connections.vault import MasterKeyring, generate_master_key
from plumbing.settings import ControlSettings, Settings, VaultSettings
from projections.handlers.writes import writes_for
from projections.projector.store import PostgresProjectionStore
from service.web import build_web_app
from tests.projections.test_order_and_duplicates import CHARGE, T, event

pytestmark = pytest.mark.integration


@pytest.fixture
async def served(make_settings: Callable[..., Settings], clean_database: str) -> AsyncIterator[dict[str, Any]]:
    master = generate_master_key("k1")
    admin = "adm_" + master[-12:]
    settings = make_settings().model_copy(update={"vault": VaultSettings(master_keys=master),  # type: ignore[arg-type]
                                                  "control": ControlSettings(admin_token=admin)})  # type: ignore[arg-type]
    pool = await asyncpg.create_pool(clean_database, min_size=1, max_size=2)
    tenants = PostgresTenantStore(pool, MasterKeyring.from_setting(master), settings.reader)
    tenant_a, token_a = await tenants.create_tenant("A")
    tenant_b, token_b = await tenants.create_tenant("B")
    readers = {level: (await tenants.issue_reader_token(tenant_a, level, level))[1] for level in ("summary", "standard", "full")}
    projection = PostgresProjectionStore(pool, "read-api")
    for tenant in (tenant_a, tenant_b):
        envelope = event(CHARGE | {"status": "succeeded", "customer": "cus_1"}, "charge.succeeded", f"evt_{tenant}", T, tenant)
        await projection.apply([(tenant, envelope.event_id, writes_for(envelope))], {})
    server = TestServer(build_web_app(settings), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        yield {"server": server, "http": http, "a": (tenant_a, token_a), "b": (tenant_b, token_b), "readers": readers,
               "master": master, "admin_token": admin}
    await server.close()
    await pool.close()


async def get(served: dict[str, Any], path: str, token: str | None, **query: str) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with served["http"].get(served["server"].make_url(path), params=query, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_a_tenant_reads_its_own_revenue_as_json(served: dict[str, Any]) -> None:
    tenant, _ = served["a"]
    summary, standard = served["readers"]["summary"], served["readers"]["standard"]
    status, body = await get(served, f"/api/tenants/{tenant}/questions/revenue", summary,
                             mode="test", **{"from": "2025-10-01", "to": "2025-10-31"})
    assert status == 200
    assert body["rows"] == [{"currency": "usd", "gross": 5000, "refunded": 0, "net": 5000}]
    status, body = await get(served, f"/api/tenants/{tenant}/questions/payment_history", standard,
                             mode="test", customer="cus_1")
    assert status == 200 and body["level"] == "standard" and [r["charge_id"] for r in body["rows"]] == ["ch_1"]
    status, body = await get(served, f"/api/tenants/{tenant}/questions", summary)
    assert status == 200 and {q["name"] for q in body["questions"]} >= {"revenue", "mrr", "top_customers"}
    assert body["level"] == "summary" and not next(q for q in body["questions"] if q["name"] == "top_customers")["allowed"]


async def test_a_level_is_granted_by_the_token_never_asked_for(served: dict[str, Any]) -> None:
    """The hole: `?level=full` with any tenant token returned card brand and last4."""
    tenant, api_token = served["a"]
    cards = f"/api/tenants/{tenant}/questions/payment_history_with_cards"
    for token in (api_token, served["readers"]["summary"], served["readers"]["standard"]):
        status, body = await get(served, cards, token, level="full", mode="test", customer="cus_1")
        assert status == 403 and body["error"]["code"] == "level_not_granted", body
        assert "card" not in str(body.get("rows", ""))
    status, body = await get(served, cards, served["readers"]["full"], mode="test", customer="cus_1")
    assert status == 200 and body["level"] == "full"
    # A higher token may ask for less.
    status, body = await get(served, f"/api/tenants/{tenant}/questions/mrr", served["readers"]["full"],
                             level="summary", mode="test")
    assert status == 200 and body["level"] == "summary"


async def test_other_tenants_and_missing_tokens_are_refused(served: dict[str, Any]) -> None:
    tenant_a, token_a = served["a"]
    tenant_b, _ = served["b"]
    assert (await get(served, f"/api/tenants/{tenant_b}/questions/mrr", token_a))[0] == 404
    assert (await get(served, f"/api/tenants/{tenant_b}/questions/mrr", served["readers"]["full"]))[0] == 404
    assert (await get(served, f"/api/tenants/{tenant_a}/questions/mrr", None))[0] == 401
    assert (await get(served, f"/api/tenants/{tenant_a}/questions/mrr", "tt_forged"))[0] == 401
    assert (await get(served, f"/api/tenants/{tenant_a}/questions/mrr", "rdr_ful_forged"))[0] == 401


async def test_bad_questions_and_levels_get_clear_errors(served: dict[str, Any]) -> None:
    tenant, _ = served["a"]
    token = served["readers"]["summary"]
    status, body = await get(served, f"/api/tenants/{tenant}/questions/top_customers", token,
                             currency="usd", limit="3")
    assert status == 403 and "needs the standard permission level" in body["error"]["message"]
    status, body = await get(served, f"/api/tenants/{tenant}/questions/revenue", token, **{"from": "yesterday", "to": "x"})
    assert status == 400 and body["error"]["code"] == "invalid_question"
    assert (await get(served, f"/api/tenants/{tenant}/questions/mrr", token, level="root"))[0] == 400


@pytest.mark.parametrize("query", [
    "tenant_id=other", "livemode=false", "mode=test&mode=live", "customer=%00", "from=2025-10-01&to=2025-10-31&x=1",
])
async def test_unknown_repeated_or_control_character_parameters_get_a_json_400(served: dict[str, Any], query: str) -> None:
    tenant, _ = served["a"]
    question = "revenue" if "from=" in query else "mrr"
    url = served["server"].make_url(f"/api/tenants/{tenant}/questions/{question}?{query}")
    async with served["http"].get(url, headers={"Authorization": f"Bearer {served['readers']['full']}"}) as resp:
        assert resp.status == 400 and resp.content_type == "application/json"
        body = await resp.json()
    assert body["error"]["code"] == "invalid_parameters" and "mode" in body["error"]["allowed"]


async def test_answers_are_never_cached(served: dict[str, Any]) -> None:
    tenant, _ = served["a"]
    async with served["http"].get(served["server"].make_url(f"/api/tenants/{tenant}/questions/mrr?mode=test"),
                                  headers={"Authorization": f"Bearer {served['readers']['summary']}"}) as resp:
        assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"


async def test_a_reader_token_can_be_bound_to_one_mode_and_a_bad_mode_changes_nothing(served: dict[str, Any]) -> None:
    tenant, tenant_token = served["a"]
    url = served["server"].make_url(f"/api/tenants/{tenant}/reader-tokens")
    headers = {"Authorization": f"Bearer {tenant_token}"}
    async with served["http"].post(url, json={"level": "summary", "mode": "sandbox"}, headers=headers) as resp:
        assert resp.status == 422 and (await resp.json())["error"]["code"] == "invalid_mode"
    async with served["http"].get(url, headers=headers) as resp:
        before = (await resp.json())["reader_tokens"]
    async with served["http"].post(url, json={"level": "summary", "mode": "test"}, headers=headers) as resp:
        issued = await resp.json()
        assert resp.status == 201 and issued["mode"] == "test"
    status, body = await get(served, f"/api/tenants/{tenant}/questions/revenue", issued["token"],
                             **{"from": "2025-10-01", "to": "2025-10-31"})
    assert status == 200 and body["mode"] == "test" and body["rows"], "a test-only token reads test mode by default"
    status, body = await get(served, f"/api/tenants/{tenant}/questions/revenue", issued["token"], mode="live",
                             **{"from": "2025-10-01", "to": "2025-10-31"})
    assert status == 403 and body["error"]["code"] == "mode_not_granted"
    async with served["http"].get(url, headers=headers) as resp:
        after = (await resp.json())["reader_tokens"]
    assert len(after) == len(before) + 1 and after[-1]["mode"] == "test"
