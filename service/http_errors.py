"""The web process's answers that no handler writes: every error is the JSON shape the API documents.

aiohttp answers some requests itself (no such route, wrong method, body over the size limit) in plain
text, and an unexpected exception would be a plain-text 500. This middleware turns those into
`{"error": {"code", "message"}}`, maps Postgres being away (or a tenant's reader connections all busy)
to 503 with Retry-After, and marks every `/api/` answer `Cache-Control: no-store` (one carries a new
API token; none may sit in a cache). A 500 says nothing of the exception; the log has it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from plumbing.errors import is_retriable
from plumbing.logs import get_logger

log = get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RETRY_AFTER_S = "2"
CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
         413: "body_too_large", 415: "unsupported_media_type", 431: "headers_too_large"}


def json_error(status: int, code: str, message: str) -> web.Response:
    """Returns the API's JSON error answer."""
    response = web.json_response({"error": {"code": code, "message": message}}, status=status)
    if status == 503:
        response.headers["Retry-After"] = RETRY_AFTER_S
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answers aiohttp's own errors and unexpected failures in the JSON error shape; /api/ is never cached."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        response = json_error(exc.status, CODES.get(exc.status, "http_error"), exc.reason)
    except Exception as exc:  # noqa: BLE001 - the last line: nothing unexpected leaves as text or a trace
        if is_retriable(exc):
            response = json_error(503, "temporarily_unavailable", "a dependency is unavailable; try again shortly")
        else:
            log.exception("unexpected error answering a request", path=request.path, error_type=type(exc).__name__)
            response = json_error(500, "internal_error", "something went wrong on our side; it is logged")
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"
    return response
