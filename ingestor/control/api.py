"""The control API: JSON over HTTP for tenants and their Stripe connections, in the web process.

Place in the flow: the connector page (and operators) call these routes; each handler
authenticates the caller, checks that a tenant token touches only its own tenant, parses the
JSON body and calls `ConnectionService`. Like `ingestor/receiver/webhook.py` for deliveries, this is the edge that
turns errors into HTTP answers: `{"error": {"code", "message", "docs"}}`, the docs link pointing
into docs/operating.md. No response ever carries a key or a signing secret, only their hints.

Callers authenticate with `Authorization: Bearer <token>`: the operators' admin token (from
INGESTOR_CONTROL__ADMIN_TOKEN) may do everything; a tenant's API token (given once at creation)
may use the tenant routes of that tenant only — any other tenant id answers 404, as if it did not exist.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ingestor.connections.service import (
    ConnectionService,
    ControlError,
    KeyNotAcceptedError,
    NotFoundError,
    RefusedInputError,
)
from ingestor.connections.status import docs_link
from ingestor.connections.tenant_store import PostgresTenantStore
from plumbing.logs import get_logger
from plumbing.postgres import DatabaseUnavailableError
from plumbing.settings import ControlSettings

log = get_logger(__name__)

MODES = ("test", "live")
Handler = Callable[["ControlApi", web.Request, str], Awaitable[web.Response]]


def json_response(data: Any, status: int = 200) -> web.Response:
    """Returns a JSON response (orjson, datetimes as ISO strings)."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class ControlApi:
    """Authentication, authorisation and request parsing in front of `ConnectionService`."""

    def __init__(self, service: ConnectionService, tenants: PostgresTenantStore, settings: ControlSettings):
        self.service = service
        self._tenants = tenants
        self._settings = settings

    def error(self, status: int, code: str, message: str, **extra: Any) -> web.Response:
        """Returns the JSON error answer, with the link to the recovery steps."""
        body = {"error": {"code": code, "message": message, "docs": docs_link(self._settings.docs_url, code)}, **extra}
        return json_response(body, status)

    async def actor(self, request: web.Request) -> tuple[str, str | None] | None:
        """Returns ("admin", None) or ("tenant:<id>", <id>) for the bearer token, or None."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        admin = self._settings.admin_token
        if admin is not None and hmac.compare_digest(token.encode(), admin.get_secret_value().encode()):
            return "admin", None
        tenant_id = await self._tenants.tenant_for_token(token)
        return (f"tenant:{tenant_id}", tenant_id) if tenant_id else None


async def _body(request: web.Request, *required: str) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        raise ControlError("the body is not valid JSON", "invalid_request") from None
    if not isinstance(body, dict):
        raise ControlError("the body must be a JSON object", "invalid_request")
    for name in required:
        if not isinstance(body.get(name), str):
            raise ControlError(f'"{name}" is required and must be a string', "invalid_request")
    return body


def _mode(request: web.Request) -> str:
    mode = request.match_info["mode"]
    if mode not in MODES:
        raise NotFoundError('the mode is "test" or "live"')
    return mode


def _route(handler: Handler, admin_only: bool = False) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Wraps a handler with authentication, tenant isolation and error answers."""

    async def wrapped(request: web.Request) -> web.Response:
        api = request.app[CONTROL]
        try:
            return await authorised(api, request)
        except DatabaseUnavailableError:
            response = api.error(503, "temporarily_unavailable", "the database is unavailable; try again shortly")
            response.headers["Retry-After"] = "2"
            return response

    async def authorised(api: ControlApi, request: web.Request) -> web.Response:
        who = await api.actor(request)
        if who is None:
            return api.error(401, "unauthorized", "send Authorization: Bearer <admin or tenant API token>")
        actor, own_tenant = who
        if admin_only and own_tenant is not None:
            return api.error(403, "forbidden", "only operators may do this")
        tenant_id = request.match_info.get("tenant_id", "")
        if own_tenant is not None and tenant_id != own_tenant:
            return api.error(404, "not_found", "no such tenant")
        try:
            return await handler(api, request, actor)
        except KeyNotAcceptedError as exc:
            return api.error(exc.status, exc.code, str(exc), key_test=exc.result.to_json())
        except ControlError as exc:
            return api.error(exc.status, exc.code, str(exc))

    return wrapped


async def _create_tenant(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    body = await _body(request, "name")
    return json_response(await api.service.create_tenant(actor, body["name"]), 201)


async def _tenant(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    return json_response(await api.service.tenant(request.match_info["tenant_id"]))


async def _time_zone(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    body = await _body(request, "time_zone")
    return json_response(await api.service.set_time_zone(actor, request.match_info["tenant_id"], body["time_zone"]))


async def _audit(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    return json_response({"entries": await api.service.audit_log(request.match_info["tenant_id"])})


async def _test_key(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    body = await _body(request, "key")
    result = await api.service.test_key(actor, request.match_info["tenant_id"], body["key"])
    return json_response(result.to_json())


async def _connect(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    body = await _body(request, "key")
    return json_response(await api.service.connect(actor, request.match_info["tenant_id"], body["key"]), 201)


async def _connection(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    return json_response(await api.service.status(request.match_info["tenant_id"], _mode(request)))


async def _rotate_key(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    mode, body = _mode(request), await _body(request, "key")
    if not body["key"].strip().startswith(f"rk_{mode}_") and body["key"].strip().startswith(("rk_live_", "rk_test_")):
        raise RefusedInputError(f"this is not a {mode}-mode key; a {mode}-mode connection needs an rk_{mode}_ key",
                           "mode_mismatch")
    answer = await api.service.connect(actor, request.match_info["tenant_id"], body["key"], rotate_only=True)
    return json_response(answer)


async def _retest(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    return json_response(await api.service.retest(actor, request.match_info["tenant_id"], _mode(request)))


async def _webhook_secret(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    mode, body = _mode(request), await _body(request, "secret")
    return json_response(await api.service.set_webhook_secret(actor, request.match_info["tenant_id"], mode, body["secret"]))


async def _rotate_webhook_url(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    return json_response(await api.service.rotate_webhook_url(actor, request.match_info["tenant_id"], _mode(request)))


async def _start_import(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    mode, body = _mode(request), await _body(request)
    months = body.get("months")
    if months is not None and (not isinstance(months, int) or isinstance(months, bool) or not 1 <= months <= 120):
        raise ControlError('"months" must be a whole number from 1 to 120', "invalid_request")
    return json_response(await api.service.request_import(actor, request.match_info["tenant_id"], mode, months), 202)


async def _import_progress(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    return json_response(await api.service.import_progress(request.match_info["tenant_id"], _mode(request)))


async def _disconnect(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    purge = request.query.get("purge", "false").lower()
    if purge not in ("true", "false"):
        raise ControlError('"purge" is true or false', "invalid_request")
    answer = await api.service.disconnect(actor, request.match_info["tenant_id"], _mode(request), purge == "true")
    return json_response(answer)


async def _start_reconcile(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    mode, body = _mode(request), await _body(request)
    months = body.get("months")
    if months is not None and (not isinstance(months, int) or isinstance(months, bool) or not 1 <= months <= 120):
        raise ControlError('"months" must be a whole number from 1 to 120', "invalid_request")
    return json_response(await api.service.start_reconcile(actor, request.match_info["tenant_id"], mode, months), 202)


async def _reconcile_status(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    return json_response(await api.service.reconcile_status(request.match_info["tenant_id"], _mode(request)))


async def _delete_tenant(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    return json_response(await api.service.delete_tenant(actor, request.match_info["tenant_id"]))


async def _issue_reader_token(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    body = await _body(request, "level")
    answer = await api.service.issue_reader_token(actor, request.match_info["tenant_id"], body["level"], body.get("name"),
                                                  body.get("mode", "all"))
    return json_response(answer, 201)


async def _reader_tokens(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    return json_response({"reader_tokens": await api.service.reader_tokens(request.match_info["tenant_id"])})


async def _revoke_reader_token(api: ControlApi, request: web.Request, actor: str) -> web.Response:
    answer = await api.service.revoke_reader_token(actor, request.match_info["tenant_id"], request.match_info["token_id"])
    return json_response(answer)


CONTROL: web.AppKey[ControlApi] = web.AppKey("control", ControlApi)


def add_routes(app: web.Application) -> None:
    """Registers the control API routes (the app must hold a ControlApi under CONTROL)."""
    tenant = "/api/tenants/{tenant_id}"
    connection = tenant + "/connections/{mode}"
    app.router.add_post("/api/tenants", _route(_create_tenant, admin_only=True))
    app.router.add_get(tenant, _route(_tenant))
    app.router.add_delete(tenant, _route(_delete_tenant, admin_only=True))
    app.router.add_post(tenant + "/reader-tokens", _route(_issue_reader_token))
    app.router.add_get(tenant + "/reader-tokens", _route(_reader_tokens))
    app.router.add_delete(tenant + "/reader-tokens/{token_id}", _route(_revoke_reader_token))
    app.router.add_get(tenant + "/audit", _route(_audit))
    app.router.add_put(tenant + "/time-zone", _route(_time_zone))
    app.router.add_post(tenant + "/key-tests", _route(_test_key))
    app.router.add_post(tenant + "/connections", _route(_connect))
    app.router.add_get(connection, _route(_connection))
    app.router.add_delete(connection, _route(_disconnect))
    app.router.add_put(connection + "/key", _route(_rotate_key))
    app.router.add_post(connection + "/test", _route(_retest))
    app.router.add_put(connection + "/webhook-secret", _route(_webhook_secret))
    app.router.add_post(connection + "/webhook-url", _route(_rotate_webhook_url))
    app.router.add_post(connection + "/import", _route(_start_import))
    app.router.add_get(connection + "/import", _route(_import_progress))
    app.router.add_post(connection + "/reconcile", _route(_start_reconcile))
    app.router.add_get(connection + "/reconcile", _route(_reconcile_status))
