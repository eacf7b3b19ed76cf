"""The read layer over HTTP: the common questions, read-only, JSON out, for the tenant's own token.

`GET /api/tenants/{tenant_id}/questions` lists the questions; `GET …/questions/{name}?level=…&mode=…`
answers one with its parameters from the query string. Authentication is the caller's (the web
process passes the control API's token check in), so this module knows nothing of tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from aiohttp import web

from plumbing.postgres import create_pool
from plumbing.settings import Settings
from projections.read.client import QUESTIONS, Level, QuestionRefusedError, RevenueReader, UnknownQuestionError

# Returns the tenant the request may read ("*" for an operator), or None when not authenticated.
Authenticate = Callable[[web.Request], Awaitable[str | None]]
READER = web.AppKey("revenue_reader", RevenueReader)
AUTHENTICATE = web.AppKey("read_authenticate", object)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def _authorised(request: web.Request) -> web.Response | None:
    authenticate: Authenticate = request.app[AUTHENTICATE]  # type: ignore[assignment]
    allowed = await authenticate(request)
    if allowed is None:
        return _error(401, "unauthorized", "send Authorization: Bearer <tenant API token>")
    if allowed != "*" and allowed != request.match_info["tenant_id"]:
        return _error(404, "not_found", "no such tenant")
    return None


async def _list(request: web.Request) -> web.Response:
    if (refused := await _authorised(request)) is not None:
        return refused
    return web.json_response({"questions": [
        {"name": q.name, "description": q.description, "min_level": q.min_level.name.lower(), "params": list(q.params)}
        for q in QUESTIONS.values()
    ]})


async def _answer(request: web.Request) -> web.Response:
    if (refused := await _authorised(request)) is not None:
        return refused
    query = dict(request.query)
    try:
        level = Level[query.pop("level", "summary").upper()]
    except KeyError:
        return _error(400, "invalid_level", "level is summary, standard or full")
    mode = query.pop("mode", "live")
    if mode not in ("live", "test"):
        return _error(400, "invalid_mode", 'mode is "live" or "test"')
    try:
        rows = await request.app[READER].ask(request.match_info["tenant_id"], level, request.match_info["question"],
                                             livemode=mode == "live", **query)
    except QuestionRefusedError as exc:
        return _error(403, "level_too_low", str(exc))
    except UnknownQuestionError as exc:
        return _error(400, "invalid_question", str(exc))
    return web.json_response({"question": request.match_info["question"], "level": level.name.lower(),
                              "mode": mode, "rows": rows})


def add_read_routes(app: web.Application, settings: Settings, authenticate: Authenticate) -> None:
    """Adds the read API (and the reader pools it needs) to the web application."""
    app[AUTHENTICATE] = authenticate

    async def reader(app: web.Application) -> AsyncIterator[None]:
        owner_pool: asyncpg.Pool = await create_pool(settings.postgres)
        app[READER] = RevenueReader(settings.reader, owner_pool)
        yield
        await app[READER].close()
        await owner_pool.close()

    app.cleanup_ctx.append(reader)
    app.router.add_get("/api/tenants/{tenant_id}/questions", _list)
    app.router.add_get("/api/tenants/{tenant_id}/questions/{question}", _answer)
