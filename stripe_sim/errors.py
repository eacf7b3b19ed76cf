"""Stripe-shaped error bodies and the exception the HTTP layer turns into them."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

DOCS = "https://stripe.com/docs/error-codes"


class StripeError(Exception):
    """An API error to answer with Stripe's status code and `error` body."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self, request_id: str, livemode: bool = False) -> dict[str, Any]:
        """Return the JSON body Stripe would send for this error."""
        err: dict[str, Any] = {"message": self.message, "type": self.type,
                               "request_log_url": (
                                   f"https://dashboard.stripe.com/{'' if livemode else 'test/'}"
                                   f"logs/{request_id}")}
        if self.code:
            err["code"] = self.code
            err["doc_url"] = f"{DOCS}/{self.code.replace('_', '-')}"
        if self.param:
            err["param"] = self.param
        return {"error": err}

    def response(self, request_id: str, livemode: bool = False) -> web.Response:
        """Return the aiohttp response for this error."""
        return web.Response(status=self.status, body=orjson.dumps(self.body(request_id, livemode)),
                            content_type="application/json", headers=self.headers)


def missing(kind: str, obj_id: str, param: str = "id") -> StripeError:
    """Return the 404 Stripe answers for an unknown object id."""
    return StripeError(404, f"No such {kind}: '{obj_id}'", code="resource_missing", param=param)


def invalid(message: str, param: str) -> StripeError:
    """Return a 400 for a bad request parameter."""
    return StripeError(400, message, param=param)


def mask_key(key: str) -> str:
    """Mask a key the way Stripe quotes it in errors: prefix, stars, last four."""
    parts = key.split("_", 2)
    prefix = f"{parts[0]}_{parts[1]}_" if len(parts) == 3 else ""
    hidden = max(0, len(key) - len(prefix) - 4)
    return prefix + "*" * hidden + key[-4:]
