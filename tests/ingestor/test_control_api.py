"""The control API against the Stripe simulator: key Test verdicts, Connect, rotation, secrets, isolation, disconnect."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import asyncpg
import pytest

from ingestor.envelope.snapshots import snapshot_envelope
from ingestor.stripe_api.catalog import EVENT_TYPES
from projections.handlers.writes import writes_for
from projections.projector.store import PostgresProjectionStore
from stripe_sim import CURRENT_VERSION, SimServer
from stripe_sim.render import render
from tests.helpers import wait_for
from tests.ingestor.conftest import ControlClient

pytestmark = pytest.mark.integration

FIVE = {"customers", "charges", "subscriptions", "invoices", "payment_intents"}


@pytest.fixture
def account(sim: SimServer) -> str:
    info = sim.create_account(customers=4)
    sim.set_rate_limit(info.id, 1000)
    return info.id


def no_requests_since(sim: SimServer, account: str, before: dict[str, int]) -> bool:
    return sim.request_counts(account) == before


async def test_a_key_with_every_read_permission_is_green_and_not_stored(
    control: ControlClient, sim: SimServer, account: str, pg: asyncpg.Connection
) -> None:
    tenant, token = await control.tenant()
    key = sim.create_restricted_key(account)
    status, body = await control.call("POST", f"/api/tenants/{tenant}/key-tests", token, {"key": key})
    assert status == 200
    assert (body["outcome"], body["green"]) == ("green", True)
    assert set(body["resources"]) == FIVE | {"events", "coupons"}
    assert all(v["verdict"] == "ok" for v in body["resources"].values())
    assert body["key"]["masked"] == f"rk_test_…{key[-4:]}"
    assert await pg.fetchval("SELECT count(*) FROM stripe_connections WHERE tenant_id = $1", tenant) == 0


async def test_a_partial_key_names_exactly_what_to_add(control: ControlClient, sim: SimServer, account: str) -> None:
    tenant, token = await control.tenant()
    key = sim.create_restricted_key(account, permissions={"customers", "events", "invoices"})
    status, body = await control.call("POST", f"/api/tenants/{tenant}/key-tests", token, {"key": key})
    assert status == 200 and body["outcome"] == "partial" and not body["green"]
    missing = {r: v for r, v in body["resources"].items() if v["verdict"] == "permission_missing"}
    assert set(missing) == {"charges", "subscriptions", "payment_intents", "coupons"}
    assert missing["charges"]["permission"] == "rak_charge_read"
    assert '"Charges" to "Read"' in missing["charges"]["fix"]
    assert "Charges, Subscriptions, PaymentIntents, Coupons" in body["summary"] and '"Read"' in body["summary"]
    assert body["resources"]["invoices"]["verdict"] == "ok"


async def test_a_revoked_key_is_invalid_with_the_fix(control: ControlClient, sim: SimServer, account: str) -> None:
    tenant, token = await control.tenant()
    key = sim.create_restricted_key(account)
    sim.revoke_key(key)
    status, body = await control.call("POST", f"/api/tenants/{tenant}/key-tests", token, {"key": key})
    assert status == 200 and body["outcome"] == "key_invalid"
    assert {v["verdict"] for v in body["resources"].values()} == {"key_invalid"}
    assert "rotated or revoked" in body["resources"]["customers"]["message"]
    assert "Create restricted key" in body["summary"]


@pytest.mark.parametrize("make_key,code,words", [
    (lambda sim, acct: sim.secret_key(acct), "secret_key_refused", "restricted key"),
    (lambda sim, acct: "pk_test_" + "a" * 30, "publishable_key_refused", "publishable key"),
    (lambda sim, acct: "rk_test_ab cd", "malformed_key", "incomplete"),
    (lambda sim, acct: "hello", "malformed_key", "not a Stripe API key"),
], ids=["sk", "pk", "truncated-rk", "garbage"])
async def test_keys_that_are_not_restricted_keys_are_refused_before_any_request(
    control: ControlClient, sim: SimServer, account: str, make_key: Callable[[SimServer, str], str], code: str, words: str
) -> None:
    tenant, token = await control.tenant()
    before = sim.request_counts(account)
    key = make_key(sim, account)
    status, body = await control.call("POST", f"/api/tenants/{tenant}/key-tests", token, {"key": key})
    assert status == 200 and body["outcome"] == "refused" and body["key"]["code"] == code
    assert words in body["summary"]
    if code == "secret_key_refused":
        assert "Customers, Charges, Subscriptions, Invoices, PaymentIntents, Events and Coupons" in body["summary"]
    assert no_requests_since(sim, account, before)
    status, body = await control.call("POST", f"/api/tenants/{tenant}/connections", token, {"key": key})
    assert status == 422 and body["error"]["code"] == "key_refused"
    assert body["error"]["docs"] == "docs/operating.md#key_refused"


async def test_a_rate_limited_account_says_so(control: ControlClient, sim: SimServer) -> None:
    acct = sim.create_account(customers=1).id
    tenant, token = await control.tenant()
    key = sim.create_restricted_key(acct)
    sim.set_rate_limit(acct, 0.01)
    status, body = await control.call("POST", f"/api/tenants/{tenant}/key-tests", token, {"key": key})
    assert status == 200 and body["outcome"] == "rate_limited"
    assert "rate_limited" in {v["verdict"] for v in body["resources"].values()}
    assert "Test again in a minute" in body["summary"]


async def test_connect_stores_the_key_gives_the_webhook_url_and_shows_the_test_delivery(
    control: ControlClient, sim: SimServer, account: str
) -> None:
    tenant, token = await control.tenant()
    key = sim.create_restricted_key(account)
    status, body = await control.call("POST", f"/api/tenants/{tenant}/connections", token, {"key": key})
    assert status == 201, body
    conn = body["connection"]
    assert conn["mode"] == "test" and conn["status"] == "polling_only"
    assert conn["key"]["hint"] == f"rk_test_…{key[-4:]}"
    url = conn["webhook"]["url"]
    assert url.startswith("http://127.0.0.1:8080/webhooks/stripe/") and len(url.rsplit("/", 1)[1]) >= 40
    # What the poller asks for, a customer's own discount's changes among them.
    assert conn["webhook"]["event_types"] == list(EVENT_TYPES) and "customer.discount.deleted" in EVENT_TYPES
    assert conn["import"]["state"] == "running" and set(conn["import"]["resources"]) == FIVE

    endpoint, secret = sim.add_webhook_endpoint(account, str(control.server.make_url(control.url_path(url))))
    status, body = await control.call("PUT", f"/api/tenants/{tenant}/connections/test/webhook-secret", token,
                                      {"secret": "not-a-secret"})
    assert status == 422 and body["error"]["code"] == "malformed_webhook_secret"
    status, body = await control.call("PUT", f"/api/tenants/{tenant}/connections/test/webhook-secret", token,
                                      {"secret": secret})
    assert status == 200 and body["connection"]["status"] == "webhook_unverified"
    assert body["connection"]["webhook"]["secret_hints"] == [f"whsec_…{secret[-4:]}"]
    assert body["connection"]["webhook"]["test_delivery_received_at"] is None

    sim.send_test_webhook(endpoint)

    async def verified() -> bool:
        _, view = await control.call("GET", f"/api/tenants/{tenant}/connections/test", token)
        return bool(view["webhook"]["test_delivery_received_at"]) and view["status"] == "connected"

    await wait_for(verified, 10, "the test delivery to show")


async def test_rotation_tests_then_swaps_and_a_failing_key_changes_nothing(
    control: ControlClient, sim: SimServer, account: str, pg: asyncpg.Connection
) -> None:
    tenant, token = await control.tenant()
    old, new = sim.create_restricted_key(account), sim.create_restricted_key(account)
    partial = sim.create_restricted_key(account, permissions={"customers"})
    assert (await control.call("POST", f"/api/tenants/{tenant}/connections", token, {"key": old}))[0] == 201
    conn_id = await pg.fetchval("SELECT connection_id FROM stripe_connections WHERE tenant_id = $1", tenant)

    status, body = await control.call("PUT", f"/api/tenants/{tenant}/connections/test/key", token, {"key": partial})
    assert status == 422 and body["error"]["code"] == "key_test_failed" and body["key_test"]["outcome"] == "partial"
    assert (await control.store.load_key(conn_id))[0] == old  # type: ignore[index]

    status, body = await control.call("PUT", f"/api/tenants/{tenant}/connections/test/key", token, {"key": new})
    assert status == 200 and body["connection"]["key"]["hint"] == f"rk_test_…{new[-4:]}"
    assert await control.store.load_key(conn_id) == (new, 2)
    status, body = await control.call("PUT", f"/api/tenants/{tenant}/connections/live/key", token, {"key": new})
    assert status == 422 and body["error"]["code"] == "mode_mismatch"

    _, audit = await control.call("GET", f"/api/tenants/{tenant}/audit", token)
    actions = [e["action"] for e in audit["entries"]]
    assert actions == ["key.rotated", "key.refused", "connection.connected", "tenant.created"]
    assert all(e["actor"] == f"tenant:{tenant}" for e in audit["entries"][:3]) and audit["entries"][3]["actor"] == "admin"
    assert new not in str(audit) and old not in str(audit)


async def test_a_key_of_another_stripe_account_is_refused_while_the_tenant_holds_the_first_ones_data(
    control: ControlClient, sim: SimServer, account: str
) -> None:
    """A rotation (or a reconnection that kept the data) to a key of another Stripe account mixed its objects with
    the first one's in the same tables: every figure silently wrong. A restricted key cannot read its account's id;
    objects the tables hold are retrieved with it instead."""
    tenant, token = await control.tenant()
    first = sim.create_restricted_key(account)
    assert (await control.call("POST", f"/api/tenants/{tenant}/connections", token, {"key": first}))[0] == 201
    connection = await control.store.find_connection(tenant, False)
    assert connection is not None
    stored = sim.state.accounts[account].store(False)
    held = (stored.all("charge") or stored.all("customer"))[:3]
    assert held
    envelopes = [snapshot_envelope(render(obj, CURRENT_VERSION), tenant, False, CURRENT_VERSION,
                                   datetime.now(timezone.utc)) for obj in held]  # as the import projected them
    await PostgresProjectionStore(control.pool, "another-account-test").apply(
        [(e.tenant_id, e.event_id, writes_for(e)) for e in envelopes], {})
    other = sim.create_account(customers=4)
    sim.set_rate_limit(other.id, 1000)

    retrieves = f"/v1/{'charges' if stored.all('charge') else 'customers'}/"  # not the key test's lists
    sim.set_faults({"kind": "status", "status": 503, "rate": 1.0, "path_prefix": retrieves})
    try:
        status, body = await control.call("PUT", f"/api/tenants/{tenant}/connections/test/key", token,
                                          {"key": sim.create_restricted_key(account)})
    finally:
        sim.set_faults()
    assert status == 503 and body["error"]["code"] == "stripe_unavailable", body  # cannot tell: nothing stored
    assert (await control.store.load_key(connection.connection_id))[0] == first  # type: ignore[index]
    status, body = await control.call("PUT", f"/api/tenants/{tenant}/connections/test/key", token,
                                      {"key": other.restricted_key})
    assert status == 422 and body["error"]["code"] == "key_for_another_account", body
    assert held[0]["id"] in body["error"]["message"] and other.restricted_key not in str(body)
    assert (await control.store.load_key(connection.connection_id))[0] == first  # type: ignore[index]
    status, body = await control.call("PUT", f"/api/tenants/{tenant}/connections/test/key", token,
                                      {"key": sim.create_restricted_key(account)})
    assert status == 200, body  # another key of the same account
    status, _ = await control.call("DELETE", f"/api/tenants/{tenant}/connections/test?purge=true", token)
    assert status == 200
    status, body = await control.call("POST", f"/api/tenants/{tenant}/connections", token,
                                      {"key": other.restricted_key})
    assert status in (200, 201), body  # the data gone, the other account may be connected


async def test_a_second_signing_secret_rolls_the_first_with_a_grace_period(
    control: ControlClient, sim: SimServer, account: str
) -> None:
    tenant, token = await control.tenant()
    await control.call("POST", f"/api/tenants/{tenant}/connections", token, {"key": sim.create_restricted_key(account)})
    first, second = "whsec_" + "a" * 32, "whsec_" + "b" * 32
    await control.call("PUT", f"/api/tenants/{tenant}/connections/test/webhook-secret", token, {"secret": first})
    status, body = await control.call("PUT", f"/api/tenants/{tenant}/connections/test/webhook-secret", token,
                                      {"secret": second})
    assert status == 200 and body["connection"]["webhook"]["secret_hints"] == ["whsec_…bbbb", "whsec_…aaaa"]
    token_ = body["connection"]["webhook"]["url"].rsplit("/", 1)[1]
    target = await control.store.webhook_target(token_, datetime.now(timezone.utc))
    assert target is not None and target.signing_secrets == (second, first)
    _, audit = await control.call("GET", f"/api/tenants/{tenant}/audit", token)
    rolled = audit["entries"][0]
    assert rolled["action"] == "webhook_secret.rolled" and rolled["detail"]["grace_s"] == 86400


async def test_a_new_webhook_url_ends_the_old_one_at_once_and_keeps_the_secrets(
    control: ControlClient, sim: SimServer, account: str
) -> None:
    """Anyone holding a connection's webhook URL can spend its share of the receiver: the tenant can replace it."""
    tenant, token = await control.tenant()
    _, connected = await control.call("POST", f"/api/tenants/{tenant}/connections", token,
                                      {"key": sim.create_restricted_key(account)})
    await control.call("PUT", f"/api/tenants/{tenant}/connections/test/webhook-secret", token,
                       {"secret": "whsec_" + "a" * 32})
    old_url = connected["connection"]["webhook"]["url"]
    status, body = await control.call("POST", f"/api/tenants/{tenant}/connections/test/webhook-url", token)
    new_url = body["connection"]["webhook"]["url"]
    assert status == 200 and new_url != old_url and new_url.rsplit("/", 2)[0] == old_url.rsplit("/", 2)[0]
    now = datetime.now(timezone.utc)
    assert await control.store.webhook_target(old_url.rsplit("/", 1)[1], now) is None
    target = await control.store.webhook_target(new_url.rsplit("/", 1)[1], now)
    assert target is not None and target.signing_secrets == ("whsec_" + "a" * 32,)
    _, view = await control.call("GET", f"/api/tenants/{tenant}/connections/test", token)
    assert view["webhook"]["url"] == new_url
    _, audit = await control.call("GET", f"/api/tenants/{tenant}/audit", token)
    assert audit["entries"][0]["action"] == "webhook_url.rotated"


ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/tenants/{t}", None),
    ("GET", "/api/tenants/{t}/audit", None),
    ("POST", "/api/tenants/{t}/key-tests", {"key": "rk_test_" + "x" * 24}),
    ("POST", "/api/tenants/{t}/connections", {"key": "rk_test_" + "x" * 24}),
    ("GET", "/api/tenants/{t}/connections/test", None),
    ("DELETE", "/api/tenants/{t}/connections/test?purge=true", None),
    ("PUT", "/api/tenants/{t}/connections/test/key", {"key": "rk_test_" + "x" * 24}),
    ("POST", "/api/tenants/{t}/connections/test/test", None),
    ("PUT", "/api/tenants/{t}/connections/test/webhook-secret", {"secret": "whsec_" + "x" * 32}),
    ("POST", "/api/tenants/{t}/connections/test/webhook-url", None),
    ("POST", "/api/tenants/{t}/connections/test/import", {}),
    ("GET", "/api/tenants/{t}/connections/test/import", None),
]


@pytest.mark.parametrize("method,path,body", ROUTES, ids=[f"{m} {p[14:] or '/'}" for m, p, _ in ROUTES])
async def test_tenant_a_cannot_read_or_change_tenant_b(
    control: ControlClient, sim: SimServer, account: str, pg: asyncpg.Connection,
    method: str, path: str, body: dict[str, Any] | None,
) -> None:
    _, token_a = await control.tenant("A")
    tenant_b, token_b = await control.tenant("B")
    await control.call("POST", f"/api/tenants/{tenant_b}/connections", token_b, {"key": sim.create_restricted_key(account)})
    before = await pg.fetchrow("SELECT * FROM stripe_connections WHERE tenant_id = $1", tenant_b)
    audit_before = await pg.fetchval("SELECT count(*) FROM audit_log WHERE tenant_id = $1", tenant_b)
    status, answer = await control.call(method, path.format(t=tenant_b), token_a, body)
    assert (status, answer["error"]["code"]) == (404, "not_found")
    assert await pg.fetchrow("SELECT * FROM stripe_connections WHERE tenant_id = $1", tenant_b) == before
    assert await pg.fetchval("SELECT count(*) FROM audit_log WHERE tenant_id = $1", tenant_b) == audit_before
    # And without a token, or with a made-up one, nothing at all.
    for bad in (None, "tt_made_up"):
        status, answer = await control.call(method, path.format(t=tenant_b), bad, body)
        assert (status, answer["error"]["code"]) == (401, "unauthorized")


async def test_only_operators_create_tenants(control: ControlClient) -> None:
    _, token = await control.tenant()
    status, body = await control.call("POST", "/api/tenants", token, {"name": "Mallory"})
    assert (status, body["error"]["code"]) == (403, "forbidden")


@pytest.mark.parametrize("purge", [False, True], ids=["keep", "purge"])
async def test_disconnect_deletes_secrets_and_keeps_or_purges_the_data(
    control: ControlClient, sim: SimServer, account: str, pg: asyncpg.Connection, purge: bool
) -> None:
    await pg.execute("CREATE TABLE IF NOT EXISTS purge_probe (tenant_id text NOT NULL, n int)")
    tenant, token = await control.tenant("Leaving")
    other, other_token = await control.tenant("Staying")
    for t, tok in ((tenant, token), (other, other_token)):
        _, body = await control.call("POST", f"/api/tenants/{t}/connections", tok, {"key": sim.create_restricted_key(account)})
        await control.call("PUT", f"/api/tenants/{t}/connections/test/webhook-secret", tok, {"secret": "whsec_" + "c" * 32})
        await pg.execute("INSERT INTO purge_probe VALUES ($1, 1), ($1, 2)", t)
    url_path = control.url_path(body["connection"]["webhook"]["url"])
    _, view = await control.call("GET", f"/api/tenants/{tenant}/connections/test", token)
    leaving_path = control.url_path(view["webhook"]["url"])
    conn_id = view["connection_id"]

    status, body = await control.call("DELETE", f"/api/tenants/{tenant}/connections/test?purge={str(purge).lower()}", token)
    assert status == 200 and body["data"] == ("purged" if purge else "kept")
    assert await pg.fetchval("SELECT count(*) FROM webhook_secrets WHERE connection_id = $1", conn_id) == 0
    async with control.http.post(control.server.make_url(leaving_path), data="{}",
                                 headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 404
    assert await pg.fetchval("SELECT count(*) FROM purge_probe WHERE tenant_id = $1", tenant) == (0 if purge else 2)
    assert await pg.fetchval("SELECT count(*) FROM purge_probe WHERE tenant_id = $1", other) == 2
    assert await pg.fetchval("SELECT count(*) FROM tenants WHERE tenant_id = $1", tenant) == 1
    assert await pg.fetchval("SELECT count(*) FROM audit_log WHERE tenant_id = $1", tenant) > 0
    if purge:
        assert body["rows_deleted"]["purge_probe"] == 2
        assert await pg.fetchval("SELECT count(*) FROM stripe_connections WHERE tenant_id = $1", tenant) == 0
    else:
        row = await pg.fetchrow("SELECT status, key_ciphertext FROM stripe_connections WHERE connection_id = $1", conn_id)
        assert row["status"] == "disconnected" and row["key_ciphertext"] is None
        assert conn_id not in await control.checkpoints.connections_with_pending_imports()
    async with control.http.post(control.server.make_url(url_path), data="{}",
                                 headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400  # the other tenant's endpoint still answers (unsigned body → 400)


async def test_a_tenant_sets_its_time_zone_and_bad_zones_change_nothing(control: ControlClient) -> None:
    tenant, token = await control.tenant()
    other, other_token = await control.tenant("Other")
    _, body = await control.call("GET", f"/api/tenants/{tenant}", token)
    assert body["time_zone"] == "UTC"
    status, body = await control.call("PUT", f"/api/tenants/{tenant}/time-zone", token, {"time_zone": "America/New_York"})
    assert (status, body) == (200, {"tenant_id": tenant, "time_zone": "America/New_York"})
    for bad in ("UTC+5", "+02:00", "Mars/Olympus_Mons", "right/Europe/Paris", "posix/Europe/Paris", "", "Europe/Paris; DROP",
                "CET", "EST", "MET", "localtime", "Factory", "US/Pacific", "GB", "Europe/Not_A_City", "a" * 200, 5, None):
        status, body = await control.call("PUT", f"/api/tenants/{tenant}/time-zone", token, {"time_zone": bad})
        assert status in (400, 422) and body["error"]["code"] in ("invalid_time_zone", "invalid_request"), (bad, body)
    # another tenant's token cannot set (or see) this tenant's zone
    status, _ = await control.call("PUT", f"/api/tenants/{tenant}/time-zone", other_token, {"time_zone": "Asia/Tokyo"})
    assert status == 404
    _, body = await control.call("GET", f"/api/tenants/{tenant}", token)
    assert body["time_zone"] == "America/New_York"
    _, body = await control.call("GET", f"/api/tenants/{other}", other_token)
    assert body["time_zone"] == "UTC"
    _, audit = await control.call("GET", f"/api/tenants/{tenant}/audit", token)
    entry = next(e for e in audit["entries"] if e["action"] == "tenant.time_zone_set")
    assert entry["detail"] == {"time_zone": "America/New_York", "previous": "UTC"}
