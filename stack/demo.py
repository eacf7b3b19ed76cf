"""The main job, one command: the whole local stack against the Stripe simulator, with demo data.

Kafka and Postgres come up, then the Stripe simulator (a 12-month demo account and live activity),
the web process (receiver, control API, read API, connector page), the worker (poller, importer) and
the projector. A demo tenant is connected through the same control API a person would use — Test →
Connect → webhook secret → quick test → import — and once the import is projected, a revenue
summary is read through the read layer and checked against the simulator's ground truth. Ctrl-C
stops everything; running it again resumes with the data kept.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

import aiohttp
import asyncpg

from ingestor.connections.vault import generate_master_key
from plumbing.kafka import topic_end_offsets
from plumbing.settings import KafkaSettings, PostgresSettings, Settings, load_settings
from service.admin import prepare
from stack import STATE_DIR, postgres
from stack.processes import Services
from stack.progress import say
from stack.up import start_platform
from stripe_sim import CURRENT_VERSION

SIM_PORT, WEB_PORT, METRICS_PORT, WEB_METRICS_PORT = 12111, 8080, 9464, 9465
DEMO_STATE = STATE_DIR / "demo.json"
MASTER_KEYS = STATE_DIR / "master.keys"


def _secret_file(path: Any, make: Any) -> str:
    """Returns the content of a local secret file, creating it (mode 0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(make())
        os.chmod(path, 0o600)
    return str(path.read_text().strip())


def service_env(cluster: postgres.Cluster, admin_token: str) -> dict[str, str]:
    """The settings every demo process gets, as environment variables."""
    _secret_file(MASTER_KEYS, lambda: generate_master_key("demo1") + "\n")
    return {
        "INGESTOR_POSTGRES__DSN": postgres.dsn(cluster, "ingestor"),
        "INGESTOR_VAULT__MASTER_KEYS_FILE": str(MASTER_KEYS),
        "INGESTOR_CONTROL__ADMIN_TOKEN": admin_token,
        "INGESTOR_STRIPE__API_BASE": f"http://127.0.0.1:{SIM_PORT}",
        "INGESTOR_HTTP__PORT": str(WEB_PORT),
        "INGESTOR_HTTP__PUBLIC_BASE_URL": f"http://127.0.0.1:{WEB_PORT}",
        "INGESTOR_POLLER__INTERVAL_S": "20",
        "INGESTOR_POLLER__UNVERIFIED_INTERVAL_S": "10",
        "INGESTOR_PROJECTOR__METRICS_PORT": str(METRICS_PORT),
        "INGESTOR_READER__DSN": postgres.reader_dsn(cluster),
    }


class ControlClient:
    """The control API, called as the connector page calls it."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str):
        self.http, self.base, self.token = http, base, token

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None, ok: tuple[int, ...] = (200, 201, 202)) -> Any:
        async with self.http.request(method, self.base + path, json=body,
                                     headers={"Authorization": f"Bearer {self.token}"}) as resp:
            data = await resp.json(content_type=None)
            if resp.status not in ok:
                raise RuntimeError(f"{method} {path} → {resp.status}: {data}")
            return data


async def wait_until(what: str, check: Any, timeout_s: float, services: Services, every_s: float = 0.5) -> Any:
    """Polls `check()` until it returns something truthy; fails after `timeout_s` or if a service died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        services.check_alive()
        try:
            result = await check()
        except (aiohttp.ClientError, OSError):
            result = None
        if result:
            return result
        await asyncio.sleep(every_s)
    raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")


async def connect_demo_tenant(http: aiohttp.ClientSession, sim: dict[str, Any], admin_token: str,
                              services: Services) -> dict[str, str]:
    """Creates (or reuses) the demo tenant and connects it like a person on the connector page would."""
    base = f"http://127.0.0.1:{WEB_PORT}"
    state = json.loads(DEMO_STATE.read_text()) if DEMO_STATE.exists() else None
    if state is None:
        tenant = await ControlClient(http, base, admin_token).call("POST", "/api/tenants", {"name": "Demo Co"})
        state = {"tenant_id": tenant["tenant_id"], "token": tenant["api_token"]}
        DEMO_STATE.write_text(json.dumps(state))
        os.chmod(DEMO_STATE, 0o600)
        say(f"created demo tenant {state['tenant_id']}")
    api = ControlClient(http, base, state["token"])
    t = f"/api/tenants/{state['tenant_id']}"
    if "reader_token" not in state:  # what the tenant hands its assistant: a token bound to one level
        issued = await api.call("POST", f"{t}/reader-tokens", {"level": "standard", "name": "demo assistant"})
        state["reader_token"] = issued["token"]
        DEMO_STATE.write_text(json.dumps(state))
    key = sim["account"]["restricted_key"]
    verdict = await api.call("POST", f"{t}/key-tests", {"key": key})
    say(f"key test: {verdict['outcome']} — {verdict['summary']}")
    existing = await api.call("GET", f"{t}/connections/test", ok=(200, 404))
    ok = (200, 201, 202, 422)  # 422 key_for_another_account: the simulated account changed since the last run
    if existing.get("status") in (None, "disconnected") or "error" in existing:
        connection = await api.call("POST", f"{t}/connections", {"key": key}, ok=ok)
    else:
        connection = await api.call("PUT", f"{t}/connections/test/key", {"key": key}, ok=ok)
    if (connection.get("error") or {}).get("code") == "key_for_another_account":
        say("the simulated Stripe account is not the one the demo tenant's data came from (another --customers or "
            "--api-version than last time): purging that data and connecting again")
        await api.call("DELETE", f"{t}/connections/test?purge=true")
        connection = await api.call("POST", f"{t}/connections", {"key": key})
    elif "error" in connection:
        raise RuntimeError(f"connecting the demo key was refused: {connection['error']}")
    webhook_url = connection["webhook"]["url"] if "webhook" in connection else (
        await api.call("GET", f"{t}/connections/test"))["webhook"]["url"]
    sim_admin = sim["base_url"]
    async with http.post(f"{sim_admin}/_sim/accounts/{sim['account']['id']}/webhook_endpoints",
                         json={"url": webhook_url, "livemode": False}) as resp:
        endpoint = await resp.json()
    await api.call("PUT", f"{t}/connections/test/webhook-secret", {"secret": endpoint["secret"]})
    say("webhook endpoint registered in Stripe (simulator) and its signing secret stored")
    async with http.post(f"{sim_admin}/_sim/webhook_endpoints/{endpoint['id']}/test", json={}) as resp:
        await resp.read()

    async def verified() -> Any:
        view = await api.call("GET", f"{t}/connections/test")
        return view["webhook"]["test_delivery_received_at"]
    say(f"quick test: test webhook received at {await wait_until('the test webhook', verified, 60, services)}")
    await api.call("POST", f"{t}/connections/test/import", {})
    last_shown = -1

    async def imported() -> bool:
        nonlocal last_shown
        progress = (await api.call("GET", f"{t}/connections/test/import"))
        pct = 100 if progress["state"] == "done" else int(progress.get("covered", 0) * 100)
        if pct != last_shown:
            say(f"import: {pct:3d}% of 12 months, {progress.get('objects_published', 0):,} objects published")
            last_shown = pct
        return bool(progress["state"] == "done")
    await wait_until("the history import", imported, 900, services, every_s=1.0)
    return state


async def wait_projected(settings: Settings, pool: asyncpg.Pool, services: Services) -> None:
    """Waits until the projector has applied everything published so far."""
    target = sum((await topic_end_offsets(settings.kafka, settings.kafka.raw_topic)).values())

    async def caught_up() -> bool:
        done = await pool.fetchval("SELECT coalesce(sum(next_offset), 0) FROM projection.consumer_positions "
                                   "WHERE consumer_group = $1", settings.kafka.projector_group)
        return bool(done >= target)
    await wait_until(f"the projector to apply {target:,} records", caught_up, 600, services)
    say(f"projected {target:,} records")


async def summary(state: dict[str, str], sim: dict[str, Any], http: aiohttp.ClientSession) -> list[str]:
    """Reads the revenue summary through the read API, as an assistant with the tenant's reader token
    would, and checks last month against the ground truth."""
    today = datetime.now(timezone.utc).date()
    last_month_end = today.replace(day=1) - timedelta(days=1)
    last_month = last_month_end.replace(day=1)
    reader = ControlClient(http, f"http://127.0.0.1:{WEB_PORT}", state["reader_token"])
    questions = f"/api/tenants/{state['tenant_id']}/questions"
    mrr = (await reader.call("GET", f"{questions}/mrr?mode=test"))["rows"]
    revenue = (await reader.call("GET", f"{questions}/revenue?mode=test&from={last_month}&to={last_month_end}"))["rows"]
    moves = (await reader.call("GET", f"{questions}/movements?mode=test&month={last_month}"))["rows"]
    kpis = (await reader.call("GET", f"{questions}/kpis?mode=test&month={last_month:%Y-%m}"))["rows"]
    async with http.get(f"{sim['base_url']}/_sim/accounts/{sim['account']['id']}/ground_truth") as resp:
        truth = await resp.json()
    lines = ["", "Revenue summary (test mode, minor units → shown in major units):"]
    now_month = max((r["month"] for r in mrr), default=None)
    for r in mrr:
        if r["month"] == now_month:
            lines.append(f"  MRR now           {r['currency'].upper()} {fmt(float(r['mrr']), r['currency'])}  ({r['subscribers']} subscribers)")
    truth_net: dict[str, int] = {}
    for day, per in truth["daily"].items():
        if last_month <= date.fromisoformat(day) <= last_month_end:
            for cur, v in per.items():
                truth_net[cur] = truth_net.get(cur, 0) + v["net"]
    ours_net = {r["currency"]: r["net"] for r in revenue}
    for cur, net in sorted(ours_net.items()):
        lines.append(f"  Net revenue {last_month:%b %Y}  {cur.upper()} {fmt(net, cur)}")
    for m in moves:
        c = m["currency"]
        lines.append(f"  MRR movements {last_month:%b %Y} {c.upper()}: opening {fmt(float(m['opening_mrr']), c)}, "
                     f"new +{fmt(float(m['new_mrr']), c)}, expansion +{fmt(float(m['expansion_mrr']), c)}, "
                     f"contraction {fmt(float(m['contraction_mrr']), c)}, churn {fmt(float(m['churned_mrr']), c)}, "
                     f"reactivation +{fmt(float(m['reactivation_mrr']), c)}, closing {fmt(float(m['closing_mrr']), c)}")
    month_key = last_month.strftime("%Y-%m")
    for k in kpis:
        c = k["currency"]
        lines.append(f"  KPIs {last_month:%b %Y} {c.upper()}: ARR {fmt(float(k['arr']), c)}, "
                     f"net MRR retention {percent(k['net_mrr_retention'])}, quick ratio {ratio_text(k['quick_ratio'])}")
    lines += kpi_checks(kpis, truth.get("kpis", {}).get(month_key, {}))
    truth_mrr = {c: v for c, v in truth["mrr"].get(month_key, {}).items() if v}
    ours_mrr = {m["currency"]: round(float(m["closing_mrr"]), 2) for m in moves if float(m["closing_mrr"])}
    net_ok = ours_net == truth_net
    lines.append(f"  Check against the simulator's ground truth for {last_month:%B %Y}:")
    lines.append("    net revenue: " + ("matches to the cent in every currency" if net_ok
                                       else f"MISMATCH ours={ours_net} truth={truth_net}"))
    for cur in sorted(set(truth_mrr) | set(ours_mrr)):
        ours_v, truth_v = ours_mrr.get(cur, 0.0), truth_mrr.get(cur, 0.0)
        verdict = "matches" if abs(ours_v - truth_v) < 0.01 else (
            f"differs by {fmt(ours_v - truth_v, cur)} (subscription changes older than Stripe's 30-day events "
            "window are rebuilt from snapshots; see docs/metrics.md)")
        lines.append(f"    MRR {cur.upper()} at month end: {fmt(ours_v, cur)} vs {fmt(truth_v, cur)} — {verdict}")
    return lines


def percent(value: Any) -> str:
    """A ratio as a percentage with one decimal, or "n/a" when it is undefined (no base)."""
    return "n/a" if value is None else f"{float(value) * 100:.1f}%"


def ratio_text(value: Any) -> str:
    """A ratio with two decimals, or "n/a (no MRR lost)" when undefined."""
    return "n/a (no MRR lost)" if value is None else f"{float(value):.2f}"


def kpi_checks(kpis: list[dict[str, Any]], truth: dict[str, dict[str, Any]]) -> list[str]:
    """ARR, net MRR retention and quick ratio against the simulator's ground truth, per currency."""
    lines = []
    ours = {k["currency"]: k for k in kpis}
    for currency in sorted(set(ours) | set(truth)):
        mine, expected = ours.get(currency, {}), truth.get(currency, {})
        same = all(
            (mine.get(n) is None and expected.get(n) is None)
            or (mine.get(n) is not None and expected.get(n) is not None
                and abs(float(mine[n]) - float(expected[n])) <= (0.01 if n == "arr" else 1e-6))
            for n in ("arr", "net_mrr_retention", "quick_ratio"))
        differs = (f"ours ARR {mine.get('arr')}, NRR {mine.get('net_mrr_retention')}, quick ratio "
                   f"{mine.get('quick_ratio')} vs {expected.get('arr')}, {expected.get('net_mrr_retention')}, "
                   f"{expected.get('quick_ratio')} — the previous month end is older than Stripe's 30-day events "
                   "window, where subscription changes are rebuilt from snapshots (docs/metrics.md)")
        lines.append(f"    ARR, NRR, quick ratio {currency.upper()}: " + ("match the ground truth" if same else differs))
    return lines


def mcp_lines(env: dict[str, str], reader_token: str) -> list[str]:
    """How to plug an assistant into the demo tenant over MCP (docs/ai.md): stdio and HTTP."""
    needed = ("INGESTOR_POSTGRES__DSN", "INGESTOR_READER__DSN", "INGESTOR_VAULT__MASTER_KEYS_FILE")
    settings = " ".join(f"{name}='{env[name]}'" for name in needed)
    return [
        f"  AI assistant (MCP, docs/ai.md): stdio: INGESTOR_READER_TOKEN='{reader_token}' {settings} .venv/bin/ingestor mcp",
        f"                   HTTP: http://127.0.0.1:{WEB_PORT}/mcp with 'Authorization: Bearer {reader_token}'",
    ]


def fmt(minor: float, currency: str) -> str:
    """Formats minor units in the currency's major unit."""
    if currency.lower() in ("jpy", "krw", "vnd", "clp"):
        return f"{minor:,.0f}"
    return f"{minor / 100:,.2f}"


async def run_demo(customers: int, live_rate: float, api_version: str = CURRENT_VERSION) -> None:
    """Brings everything up, connects the demo tenant, prints where to look, runs until Ctrl-C."""
    started = time.monotonic()
    platform = start_platform()
    say(await prepare(KafkaSettings(bootstrap_servers=platform.kafka.bootstrap_servers),
                      PostgresSettings(dsn=platform.postgres_dsn("ingestor"))))  # type: ignore[arg-type]
    admin_token = _secret_file(STATE_DIR / "admin.token", lambda: "adm_" + secrets.token_urlsafe(24))
    env = service_env(platform.cluster, admin_token)
    settings = load_settings({k: v for k, v in env.items()})
    services = Services()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    pool = await asyncpg.create_pool(postgres.dsn(platform.cluster, "ingestor"), min_size=1, max_size=3)
    try:
        sim_proc = services.start("stripe-simulator", ["-m", "stripe_sim", "--port", str(SIM_PORT), "--seed", "7",
                                                       "--customers", str(customers), "--live-rate", str(live_rate),
                                                       "--api-version", api_version, "--customer-coupons"], {})
        assert sim_proc.stdout is not None
        line = await asyncio.wait_for(loop.run_in_executor(None, sim_proc.stdout.readline), 120)
        if not line:
            raise RuntimeError("the Stripe simulator did not start; see .stack/logs/stripe-simulator.log")
        sim = json.loads(line)
        say(f"Stripe simulator ready at {sim['base_url']} (account {sim['account']['id']}, {customers} customers, 12 months, some customers with discounts of their own)")
        services.start("web", ["-m", "service", "web"], env)
        services.start("worker", ["-m", "service", "worker"], env)
        services.start("projector", ["-m", "service", "projector"], env)
        async with aiohttp.ClientSession() as http:
            async def ready() -> bool:
                async with http.get(f"http://127.0.0.1:{WEB_PORT}/readyz") as resp:
                    return resp.status == 200
            await wait_until("the web process", ready, 60, services)
            state = await connect_demo_tenant(http, sim, admin_token, services)
            await wait_projected(settings, pool, services)
            lines = await summary(state, sim, http)
        page = f"http://127.0.0.1:{WEB_PORT}/#tenant={state['tenant_id']}&token={state['token']}"
        print("\n".join([
            "", f"READY in {time.monotonic() - started:.0f}s.",
            f"  Connector page:  {page}",
            f"  Revenue page:    http://127.0.0.1:{WEB_PORT}/revenue (same sign-in, in the same tab)",
            f"  Read API:        curl -H 'Authorization: Bearer {state['reader_token']}' "
            f"'http://127.0.0.1:{WEB_PORT}/api/tenants/{state['tenant_id']}/questions/mrr?mode=test'",
            f"  Ask from the CLI: .venv/bin/ingestor ask {state['tenant_id']} mrr --mode test",
            *mcp_lines(env, state["reader_token"]),
            f"  Metrics:         http://127.0.0.1:{WEB_METRICS_PORT}/ (web), http://127.0.0.1:{METRICS_PORT}/ (projector)",
            "  Logs:            .stack/logs/*.log, Kafka: .stack/kafka/kafka.log",
            *lines, "", "Live activity keeps flowing (webhooks, polls). Ctrl-C stops everything.",
        ]), flush=True)
        while not stop.is_set():
            services.check_alive()
            try:
                await asyncio.wait_for(stop.wait(), 2.0)
            except asyncio.TimeoutError:
                pass
    finally:
        say("stopping…")
        await pool.close()
        services.stop()
