"""Admin HTTP API under /_sim/ — the same operations as `SimServer`'s methods, for other processes.

All bodies are JSON. Errors answer 400/404 with `{"error": "..."}`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from stripe_sim.server import SimServer

Handler = Callable[[web.Request], Awaitable[web.Response]]


def _sim(request: web.Request) -> "SimServer":
    from stripe_sim.api import SIM
    return request.app[SIM]


def _ok(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    data = await request.json(loads=orjson.loads)
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}',
                                 content_type="application/json")
    return data


def _guard(fn: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await fn(request)
        except KeyError as exc:
            return _ok({"error": f"not found: {exc}"}, 404)
        except (TypeError, ValueError) as exc:
            return _ok({"error": str(exc)}, 400)
    return wrapped


async def create_account(request: web.Request) -> web.Response:
    """POST /_sim/accounts {api_version, customers, months, currencies, seed, live_customers, migrated_customers,
    live_migrated_customers, migration_s, migration_at, customer_coupons}."""
    body = await _body(request)
    info = _sim(request).create_account(**body)
    return _ok(info.to_dict(), 201)


async def list_accounts(request: web.Request) -> web.Response:
    """GET /_sim/accounts: ids and API versions."""
    accounts = _sim(request).state.accounts.values()
    return _ok([{"id": a.id, "api_version": a.api_version} for a in accounts])


async def create_key(request: web.Request) -> web.Response:
    """POST /_sim/accounts/{acct}/keys {livemode, permissions, restricted=true}."""
    body, sim = await _body(request), _sim(request)
    acct = request.match_info["acct"]
    sim.state.accounts[acct]
    if body.get("restricted", True):
        key = sim.create_restricted_key(acct, bool(body.get("livemode", False)),
                                        body.get("permissions", sim_resources()))
    else:
        key = sim.state.add_key(acct, bool(body.get("livemode", False)), False,
                                frozenset(sim_resources())).key
    return _ok({"key": key}, 201)


def sim_resources() -> list[str]:
    """Return every readable resource name."""
    from stripe_sim.model import RESOURCES
    return list(RESOURCES)


async def revoke_key(request: web.Request) -> web.Response:
    """POST /_sim/keys/{key}/revoke."""
    _sim(request).revoke_key(request.match_info["key"])
    return _ok({"revoked": True})


async def rate_limit(request: web.Request) -> web.Response:
    """POST /_sim/accounts/{acct}/rate_limit {per_second, livemode?, endpoint_per_second?}."""
    body = await _body(request)
    acct = request.match_info["acct"]
    _sim(request).state.accounts[acct]
    endpoint = body.get("endpoint_per_second")
    _sim(request).set_rate_limit(acct, float(body["per_second"]), body.get("livemode"),
                                 None if endpoint is None else float(endpoint))
    return _ok({"ok": True})


async def add_endpoint(request: web.Request) -> web.Response:
    """POST /_sim/accounts/{acct}/webhook_endpoints {url, livemode}."""
    body = await _body(request)
    ep_id, secret = _sim(request).add_webhook_endpoint(
        request.match_info["acct"], body["url"], bool(body.get("livemode", False)))
    return _ok({"id": ep_id, "secret": secret}, 201)


async def roll_secret(request: web.Request) -> web.Response:
    """POST /_sim/webhook_endpoints/{ep}/roll {grace_seconds}."""
    body = await _body(request)
    secret = _sim(request).roll_webhook_secret(request.match_info["ep"],
                                               int(body.get("grace_seconds", 86400)))
    return _ok({"secret": secret})


async def send_test(request: web.Request) -> web.Response:
    """POST /_sim/webhook_endpoints/{ep}/test {type}."""
    body = await _body(request)
    delivery = _sim(request).send_test_webhook(request.match_info["ep"],
                                               body.get("type", "charge.succeeded"))
    return _ok(delivery.to_dict(), 202)


async def deliveries(request: web.Request) -> web.Response:
    """GET /_sim/deliveries?endpoint=we_…: the delivery log with attempts."""
    found = _sim(request).deliveries(request.query.get("endpoint"))
    return _ok([d.to_dict() for d in found])


async def wait_deliveries(request: web.Request) -> web.Response:
    """POST /_sim/deliveries/wait {timeout}: return when no delivery is pending (408 if not)."""
    body = await _body(request)
    try:
        await _sim(request).wait_deliveries_idle(float(body.get("timeout", 10)))
    except TimeoutError:
        return _ok({"idle": False}, 408)
    return _ok({"idle": True})


async def set_delivery(request: web.Request) -> web.Response:
    """POST /_sim/delivery {duplicates, shuffle, backoff, timeout, shuffle_window}."""
    _sim(request).set_delivery(**(await _body(request)))
    return _ok(_sim(request).hub.config.__dict__)


async def set_faults(request: web.Request) -> web.Response:
    """POST /_sim/faults: a fault spec or {"faults": [...], "clear": bool}; adds by default."""
    body = await _body(request)
    specs = body.get("faults", [body] if body else [])
    _sim(request).set_faults(*specs, clear=bool(body.get("clear", False)) if "faults" in body
                             else False)
    return await get_faults(request)


async def get_faults(request: web.Request) -> web.Response:
    """GET /_sim/faults: the active fault specs with their remaining counts."""
    return _ok([f.to_dict() for f in _sim(request).faults.active])


async def clear_faults(request: web.Request) -> web.Response:
    """DELETE /_sim/faults: switch every fault off."""
    _sim(request).set_faults()
    return _ok([])


async def live(request: web.Request) -> web.Response:
    """POST /_sim/live {rate_per_second} starts live activity; DELETE stops it."""
    if request.method == "DELETE":
        await _sim(request).stop_live_activity()
        return _ok({"running": False})
    body = await _body(request)
    _sim(request).start_live_activity(float(body.get("rate_per_second", 1.0)))
    return _ok({"running": True})


async def clock(request: web.Request) -> web.Response:
    """GET /_sim/clock; POST {freeze: ts|null, advance: seconds, unfreeze: true}."""
    c = _sim(request).clock
    if request.method == "POST":
        body = await _body(request)
        if "freeze" in body:
            c.freeze(body["freeze"])
        if "advance" in body:
            c.advance(float(body["advance"]))
        if body.get("unfreeze"):
            c.unfreeze()
    return _ok({"now": c.now(), "frozen": c.frozen})


async def ground_truth(request: web.Request) -> web.Response:
    """GET /_sim/accounts/{acct}/ground_truth?livemode=false."""
    livemode = request.query.get("livemode", "false") == "true"
    return _ok(_sim(request).ground_truth(request.match_info["acct"], livemode))


async def requests(request: web.Request) -> web.Response:
    """GET /_sim/accounts/{acct}/requests: request counts by method, path and query."""
    return _ok(_sim(request).request_counts(request.match_info["acct"]))


async def request_rate(request: web.Request) -> web.Response:
    """GET /_sim/accounts/{acct}/request_rate?livemode=false: requests, 429s, busiest second, mean rate."""
    livemode = request.query.get("livemode", "false") == "true"
    return _ok(_sim(request).request_rate(request.match_info["acct"], livemode))


def add_routes(app: web.Application) -> None:
    """Register the admin routes."""
    r = app.router
    for method, path, fn in (
            ("POST", "/_sim/accounts", create_account), ("GET", "/_sim/accounts", list_accounts),
            ("POST", "/_sim/accounts/{acct}/keys", create_key),
            ("POST", "/_sim/keys/{key}/revoke", revoke_key),
            ("POST", "/_sim/accounts/{acct}/rate_limit", rate_limit),
            ("GET", "/_sim/accounts/{acct}/request_rate", request_rate),
            ("POST", "/_sim/accounts/{acct}/webhook_endpoints", add_endpoint),
            ("POST", "/_sim/webhook_endpoints/{ep}/roll", roll_secret),
            ("POST", "/_sim/webhook_endpoints/{ep}/test", send_test),
            ("GET", "/_sim/deliveries", deliveries),
            ("POST", "/_sim/deliveries/wait", wait_deliveries),
            ("POST", "/_sim/delivery", set_delivery),
            ("POST", "/_sim/faults", set_faults), ("GET", "/_sim/faults", get_faults),
            ("DELETE", "/_sim/faults", clear_faults),
            ("POST", "/_sim/live", live), ("DELETE", "/_sim/live", live),
            ("GET", "/_sim/clock", clock), ("POST", "/_sim/clock", clock),
            ("GET", "/_sim/accounts/{acct}/ground_truth", ground_truth),
            ("GET", "/_sim/accounts/{acct}/requests", requests)):
        r.add_route(method, path, _guard(fn))
