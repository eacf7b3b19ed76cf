"""The read API under /v1: request ids, injected faults, keys, rate limits, then list/retrieve.

Every response carries a `Request-Id` header. Requests whose key resolves to an account are
counted per account and per path+query, so tests can assert that no page was fetched twice.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Awaitable, Callable

import orjson
from aiohttp import web

from stripe_sim.auth import authenticate, authorize, key_from_header
from stripe_sim.errors import StripeError
from stripe_sim.ids import new_id
from stripe_sim.listing import KINDS, list_objects, retrieve_object
from stripe_sim.model import ApiKey, Obj, Store
from stripe_sim.render import expand_customer_discount, expand_discounts, expand_item_discounts, expand_tiers, render

if TYPE_CHECKING:
    from stripe_sim.server import SimServer

SIM: web.AppKey["SimServer"] = web.AppKey("sim")
KEY: web.RequestKey[ApiKey] = web.RequestKey("stripe_sim_key", ApiKey)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_req_rng = random.Random()


@web.middleware
async def stripe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Wrap /v1 requests in Stripe's request id, faults, auth, rate limit and counting."""
    request_id = new_id(_req_rng, "req")
    if not request.path.startswith("/v1/"):
        response = await handler(request)
        response.headers["Request-Id"] = request_id
        return response
    sim = request.app[SIM]
    raw = key_from_header(request.headers.get("Authorization"))
    known = sim.state.keys.get(raw or "")
    status = 500
    try:
        response = await _guarded(request, handler, sim, request_id)
        status = response.status
        return response
    finally:
        if known is not None:
            sim.state.count_request(known.account_id, request.method, request.path_qs, status)


async def _guarded(request: web.Request, handler: Handler, sim: "SimServer",
                   request_id: str) -> web.StreamResponse:
    livemode = False
    try:
        latency, fault = sim.faults.pick(request.path)
        if fault is None:
            # Stripe checks the key and counts the request against its limits as it arrives (a 401 or a 429 comes
            # back at once); the added latency is the time it takes to serve it. Counted after that latency, the
            # limit saw this process's timers, late in bunches while it served pages, not the client's sends.
            key = authenticate(sim.state, request.headers.get("Authorization"))
            livemode = key.livemode
            sim.limiter.check(key, _endpoint(request))
            request[KEY] = key
        if latency:
            await asyncio.sleep(latency / 1000)
        if fault is not None and fault.kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError()
        if fault is not None:
            headers = {}
            if fault.should_retry is not None:
                headers["Stripe-Should-Retry"] = str(fault.should_retry).lower()
            raise StripeError(fault.status, "An unknown error occurred", type_="api_error",
                              headers=headers)
        response = await handler(request)
    except StripeError as err:
        response = err.response(request_id, livemode)
    response.headers["Request-Id"] = request_id
    return response


def _version(request: web.Request, key: ApiKey, default: str) -> str:
    return request.headers.get("Stripe-Version") or default


def _json(obj: Obj) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type="application/json")


async def list_handler(request: web.Request) -> web.Response:
    """GET /v1/{resource}: one page of a list."""
    sim, key, resource = request.app[SIM], request[KEY], request.match_info["resource"]
    authorize(key, resource)
    account = sim.state.accounts[key.account_id]
    page = list_objects(account.store(key.livemode), resource, request.query,
                        sim.state.clock.now())
    version = _version(request, key, account.api_version)
    expand = _expand(request)
    page["data"] = [_expanded(key, account.store(key.livemode), o, render(o, version), version, expand, "data.")
                    for o in page["data"]]
    return _json(page)


MAX_EXPANSION_LEVELS = 4  # Stripe's: on a list, `data.` is one of them (data.payment_intent.customer.default_source)


def _expand(request: web.Request) -> set[str]:
    expand = {v for k, v in request.query.items() if k == "expand" or k.startswith("expand[")}  # expand[] or [0]
    for path in expand:
        if path.count(".") >= MAX_EXPANSION_LEVELS:
            raise StripeError(400, f"You cannot expand more than {MAX_EXPANSION_LEVELS} levels of a property: {path}",
                              param="expand")
    return expand


def _expanded(key: ApiKey, store: Store, stored: Obj, rendered: Obj, version: str, expand: set[str],
              prefix: str) -> Obj:
    """The rendered object with the expansions asked for (`prefix` is "data." for a list); expanding
    discounts needs the coupon permission too (their coupons come with them)."""
    if rendered.get("object") == "charge" and f"{prefix}refunds" in expand:
        return _with_refunds(store, rendered)
    if rendered.get("object") == "coupon" and f"{prefix}applies_to" in expand:
        return {**rendered, "applies_to": stored.get("applies_to")}
    if rendered.get("object") == "price" and f"{prefix}tiers" in expand and "tiers" in stored:
        return {**rendered, "tiers": stored["tiers"]}
    if rendered.get("object") == "customer":
        return _customer_expanded(key, stored, rendered, version, expand, prefix)
    if rendered.get("object") != "subscription":
        return rendered
    if f"{prefix}discounts" in expand | {e.rsplit(".source.coupon", 1)[0] for e in expand}:
        authorize(key, "coupons")
        rendered = expand_discounts(stored, rendered, version, f"{prefix}discounts.source.coupon" in expand,
                                    f"{prefix}discounts.source.coupon.applies_to" in expand)
    if f"{prefix}items.data.discounts" in expand:
        authorize(key, "coupons")
        rendered = expand_item_discounts(stored, rendered, version)
    tiered = [name for name in ("price", "plan") if f"{prefix}items.data.{name}.tiers" in expand]
    return expand_tiers(stored, rendered, tiered) if tiered else rendered


def _customer_expanded(key: ApiKey, stored: Obj, rendered: Obj, version: str, expand: set[str], prefix: str) -> Obj:
    """The customer with its discount's coupon expanded (`discount.source.coupon`, and its `.applies_to`)."""
    coupon_path = f"{prefix}discount.source.coupon"
    if not any(e == coupon_path or e.startswith(f"{coupon_path}.") for e in expand):
        return rendered
    authorize(key, "coupons")
    return expand_customer_discount(stored, rendered, version, f"{coupon_path}.applies_to" in expand)


REFUNDS_BY_CHARGE = ("refund", "charge")
LISTED_GROUPS = (REFUNDS_BY_CHARGE,)  # the (kind, field) indexes a page uses, built as an account is created


def _with_refunds(store: Store, charge: Obj) -> Obj:
    """The charge with its refunds expanded, as `expand[]=data.refunds` gives it on Stripe."""
    refunds = store.grouped(*REFUNDS_BY_CHARGE, charge["id"])
    return {**charge, "refunds": {"object": "list", "data": refunds, "has_more": False,
                                  "total_count": len(refunds), "url": f"/v1/charges/{charge['id']}/refunds"}}


async def retrieve_handler(request: web.Request) -> web.Response:
    """GET /v1/{resource}/{id}: one object, rendered in the request's API version."""
    sim, key, resource = request.app[SIM], request[KEY], request.match_info["resource"]
    authorize(key, resource)
    account = sim.state.accounts[key.account_id]
    obj = retrieve_object(account.store(key.livemode), resource, request.match_info["id"],
                          sim.state.clock.now())
    version = _version(request, key, account.api_version)
    return _json(_expanded(key, account.store(key.livemode), obj, render(obj, version), version, _expand(request), ""))


async def unknown_handler(request: web.Request) -> web.Response:
    """Any other /v1 path: Stripe's 404 for an unrecognised URL."""
    raise StripeError(404, f"Unrecognized request URL ({request.method}: {request.path}). "
                      "Please see https://stripe.com/docs or we can help at "
                      "https://support.stripe.com/.")


def _endpoint(request: web.Request) -> str:
    """Stripe's endpoint of a request, as its rate limit counts them: "GET /v1/charges", "GET /v1/charges/{id}"."""
    route = request.match_info.route.resource
    if route is None:
        return f"{request.method} {request.path}"
    return f"{request.method} {route.canonical}".replace("{resource}", request.match_info.get("resource", ""))


def add_routes(app: web.Application) -> None:
    """Register the read API routes."""
    resources = "|".join(KINDS)
    app.router.add_get(f"/v1/{{resource:{resources}}}", list_handler)
    app.router.add_get(f"/v1/{{resource:{resources}}}/{{id}}", retrieve_handler)
    app.router.add_route("*", "/v1/{tail:.*}", unknown_handler)
