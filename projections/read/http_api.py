"""The read layer over HTTP: the common questions, read-only, JSON out, at the level the caller's token grants.

`GET /api/tenants/{tenant_id}/questions` lists the questions; `GET …/questions/{name}?mode=…&<params>`
answers one. Authentication is the caller's (the web process passes its token check in): it says which
tenant the token may read and the highest level it grants; a `level` asked for may lower that, never
raise it. Every parameter is checked (unknown, repeated or malformed → 400 naming the allowed ones),
and every failure is a JSON error: the tenant's connections all busy or Postgres away → 503 with
Retry-After. This module knows nothing of tokens or of how credentials are kept.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from plumbing.postgres import DatabaseUnavailableError
from plumbing.settings import Settings
from projections.read.client import (
    QUESTIONS,
    Grant,
    Level,
    QuestionRefusedError,
    ReaderBusyError,
    ReaderCredentials,
    RevenueReader,
    UnknownQuestionError,
)
from projections.read.revenue_page import UnknownReportingCurrencyError, revenue_data

RETRY_AFTER_S = "2"
MAX_PARAM_CHARS = 100
# Query parameters every question takes besides its own.
COMMON_PARAMS = ("level", "mode")


# Returns the request's grant, or None when it is not authenticated.
Authenticate = Callable[[web.Request], Awaitable[Grant | None]]
READER = web.AppKey("revenue_reader", RevenueReader)
AUTHENTICATE = web.AppKey("read_authenticate", object)


def _error(status: int, code: str, message: str, **extra: object) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if status == 503:
        headers["Retry-After"] = RETRY_AFTER_S
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status, headers=headers)


async def _grant(request: web.Request) -> Grant | web.Response:
    authenticate: Authenticate = request.app[AUTHENTICATE]  # type: ignore[assignment]
    try:
        grant = await authenticate(request)
    except DatabaseUnavailableError:
        return _error(503, "temporarily_unavailable", "the database is unavailable; try again shortly")
    if grant is None:
        return _error(401, "unauthorized", "send Authorization: Bearer <reader token of the tenant>")
    if grant.tenant_id != "*" and grant.tenant_id != request.match_info["tenant_id"]:
        return _error(404, "not_found", "no such tenant")
    return grant


async def _list(request: web.Request) -> web.Response:
    grant = await _grant(request)
    if isinstance(grant, web.Response):
        return grant
    return web.json_response({"level": grant.level.name.lower(), "questions": [
        {"name": q.name, "description": q.description, "min_level": q.min_level.name.lower(), "params": list(q.params),
         "allowed": q.min_level <= grant.level}
        for q in QUESTIONS.values()
    ]}, headers={"Cache-Control": "no-store"})


def _mode(grant: Grant, asked: str | None) -> str | web.Response:
    """The mode a request reads (the token's one mode, or live, when none is asked), or the 400/403 refusing it."""
    mode = grant.default_mode if asked is None else asked
    if mode not in ("live", "test"):
        return _error(400, "invalid_mode", 'mode is "live" or "test"')
    if not grant.allows(mode):
        return _error(403, "mode_not_granted", f"this token reads {grant.mode} mode only")
    return mode


def question_params(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str] | web.Response:
    """Returns the query parameters as a dict, or a 400 naming the problem and the allowed names."""
    names = [name for name, _ in request.query.items()]  # every occurrence, repeats included
    unknown = sorted({n for n in names if n not in allowed})
    repeated = sorted({n for n in names if names.count(n) > 1})
    if unknown or repeated:
        problem = f"unknown parameter(s): {', '.join(unknown)}" if unknown else f"repeated: {', '.join(repeated)}"
        return _error(400, "invalid_parameters", f"{problem}; this question takes: {', '.join(allowed)}",
                      allowed=list(allowed))
    values = dict(request.query)
    for name, value in values.items():
        if len(value) > MAX_PARAM_CHARS or not value.isprintable():
            return _error(400, "invalid_parameters", f"{name} must be at most {MAX_PARAM_CHARS} printable characters",
                          allowed=list(allowed))
    return values


async def _answer(request: web.Request) -> web.Response:
    grant = await _grant(request)
    if isinstance(grant, web.Response):
        return grant
    name = request.match_info["question"]
    question = QUESTIONS.get(name)
    if question is None:
        return _error(404, "unknown_question", f"unknown question {name[:60]!r}; ask one of: {', '.join(QUESTIONS)}")
    query = question_params(request, (*COMMON_PARAMS, *question.params))
    if isinstance(query, web.Response):
        return query
    asked = query.pop("level", grant.level.name.lower())
    if asked.upper() not in Level.__members__:
        return _error(400, "invalid_level", "level is summary, standard or full")
    level = Level[asked.upper()]
    if level > grant.level:
        return _error(403, "level_not_granted", f"this token grants the {grant.level.name.lower()} level; "
                      f"ask the tenant for a {level.name.lower()} reader token")
    mode = _mode(grant, query.pop("mode", None))
    if isinstance(mode, web.Response):
        return mode
    tenant_id = request.match_info["tenant_id"]
    try:
        rows = await request.app[READER].ask(tenant_id, level, name, livemode=mode == "live", mode=grant.mode, **query)
    except QuestionRefusedError as exc:
        return _error(403, "level_too_low", str(exc))
    except UnknownQuestionError as exc:
        return _error(400, "invalid_question", str(exc), allowed=list((*COMMON_PARAMS, *question.params)))
    except (ReaderBusyError, DatabaseUnavailableError) as exc:
        return _error(503, "temporarily_unavailable", str(exc) if isinstance(exc, ReaderBusyError)
                      else "the database is unavailable; try again shortly")
    return web.json_response({"question": name, "level": level.name.lower(), "mode": mode, "rows": rows},
                             headers={"Cache-Control": "no-store"})


async def _revenue(request: web.Request) -> web.Response:
    """The Revenue page's data: every series in one answer (see projections/read/revenue_page.py)."""
    grant = await _grant(request)
    if isinstance(grant, web.Response):
        return grant
    query = question_params(request, ("mode", "reporting"))
    if isinstance(query, web.Response):
        return query
    mode = _mode(grant, query.get("mode"))
    if isinstance(mode, web.Response):
        return mode
    reporting = query.get("reporting")
    if reporting is not None and not re.fullmatch(r"[a-z]{3}", reporting):
        return _error(400, "invalid_parameters", "reporting is a lower-case ISO currency code such as usd",
                      allowed=["mode", "reporting"])
    try:
        data = await revenue_data(request.app[READER], request.match_info["tenant_id"], grant.level, mode == "live",
                                  grant.mode, reporting)
    except UnknownReportingCurrencyError as exc:
        return _error(422, "unknown_reporting_currency", str(exc))
    except (ReaderBusyError, DatabaseUnavailableError) as exc:
        return _error(503, "temporarily_unavailable", str(exc) if isinstance(exc, ReaderBusyError)
                      else "the database is unavailable; try again shortly")
    return web.json_response(data, headers={"Cache-Control": "no-store"})


def add_read_routes(app: web.Application, settings: Settings, authenticate: Authenticate,
                    credentials: ReaderCredentials) -> RevenueReader:
    """Adds the read API to the web application; returns its reader (pools open on first use, closed on cleanup)."""
    app[AUTHENTICATE] = authenticate
    app[READER] = reader = RevenueReader(settings.reader, credentials)

    async def close_reader(app: web.Application) -> AsyncIterator[None]:
        yield
        await reader.close()

    app.cleanup_ctx.append(close_reader)
    app.router.add_get("/api/tenants/{tenant_id}/questions", _list)
    app.router.add_get("/api/tenants/{tenant_id}/questions/{question}", _answer)
    app.router.add_get("/api/tenants/{tenant_id}/revenue", _revenue)
    return reader
