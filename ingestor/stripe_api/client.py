"""Reads from Stripe through the official `stripe` library, within one rate budget per account.

Everything the poller, the importer and the key test ask of Stripe goes through `StripeReader`:
list pages and single reads. The key test gets the library's `ListObject`s; the importer and the
poller, which only forward the JSON, get `RawPage`s: the same request through the library's
requestor (auth, headers, URL encoding, error interpretation), with the body decoded by `orjson`
into plain dicts, skipping the library's costly conversion into `StripeObject`s. A `StripeClient`
retries nothing unless told, and never a plain 429, so the reader adds its own backoff with jitter
for 429, 5xx and network errors, and translates the library's errors into ours where they enter:
401 → KeyInvalidError, 403 → PermissionMissingError naming the permission, the rest →
StripeUnavailableError. Error texts never include the key.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import orjson
import stripe
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from ingestor.errors import (
    CursorGoneError,
    IngestError,
    KeyInvalidError,
    ObjectMissingError,
    PermissionMissingError,
    StripeRateLimitedError,
    StripeUnavailableError,
)
from ingestor.stripe_api.request_budget import AccountBudget, Priority

# Our resource name → the StripeClient service attribute that lists/retrieves it.
RESOURCES: Mapping[str, str] = {
    "customers": "customers",
    "charges": "charges",
    "subscriptions": "subscriptions",
    "invoices": "invoices",
    "payment_intents": "payment_intents",
    "events": "events",
    "coupons": "coupons",
    # Asked for one by one, only for a tiered price's tiers when its subscription has left it (`discounts.py`); the
    # key's Prices permission ("rak_plan_read": a plan is a price) is optional, so the key test does not read it.
    "prices": "prices",
}
# Our resource name → the list endpoint's path, for the raw page path.
LIST_PATHS: Mapping[str, str] = {name: f"/v1/{name}" for name in RESOURCES}


def list_endpoint(resource: str) -> str:
    """The endpoint a list of `resource` counts against in Stripe's limits (and our budget): "GET /v1/charges"."""
    return f"GET {LIST_PATHS[resource]}"
PERMISSION_PATTERN = re.compile(r"'(rak_[a-z_]+)'")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently retriable Stripe failures are retried."""

    attempts: int = 8
    initial_wait_s: float = 0.5
    max_wait_s: float = 30.0


@dataclass(frozen=True, slots=True)
class RawPage:
    """One list page as plain JSON: the objects (newest first) and whether more follow."""

    objects: list[dict[str, Any]]
    has_more: bool
    latency_s: float = 0.0  # from sending the request to its page (not the wait for the budget)


@dataclass(frozen=True, slots=True)
class PageBody:
    """One list page as Stripe sent it, and how long it took (from sending the request to its whole body)."""

    body: bytes
    latency_s: float


_Page = TypeVar("_Page", RawPage, PageBody)
NOT_A_LIST = "Stripe answered a list request with a body that is not a list"


def page_body(body: bytes, latency_s: float) -> PageBody:
    """Returns a list page's body, unparsed; raises StripeUnavailableError (retriable) if it is not a whole JSON
    object — an HTML error page, a body cut short — without parsing it (the importer's page pool does, and refuses
    the rest)."""
    if body[:64].lstrip()[:1] != b"{" or body[-64:].rstrip()[-1:] != b"}":
        raise StripeUnavailableError(NOT_A_LIST)
    return PageBody(body, latency_s)


def raw_page(body: bytes) -> RawPage:
    """Returns the page in a list response's JSON body; raises StripeUnavailableError if it is not one."""
    try:
        decoded = orjson.loads(body)
        return RawPage(list(decoded["data"]), bool(decoded["has_more"]))
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise StripeUnavailableError(NOT_A_LIST) from exc


async def _read_all(stream: Any) -> bytes:
    """The whole body of a streamed answer (aiohttp's reader in one call; any other client's chunks joined)."""
    if isinstance(stream, aiohttp.StreamReader):
        return await stream.read()
    return b"".join([chunk async for chunk in stream])


def translate_stripe_error(exc: stripe.StripeError) -> IngestError:
    """Returns our error for a `stripe` library error (without the key in any text)."""
    if isinstance(exc, stripe.AuthenticationError):
        expired = getattr(exc, "code", None) == "api_key_expired"
        return KeyInvalidError(
            "Stripe refused the key: it was rotated or revoked" if expired
            else "Stripe refused the key: it is invalid, rotated or revoked"
        )
    if isinstance(exc, stripe.PermissionError):
        found = PERMISSION_PATTERN.search(exc.user_message or str(exc))
        permission = found.group(1) if found else None
        return PermissionMissingError(
            f"the restricted key lacks the '{permission}' read permission" if permission
            else "the restricted key lacks a read permission this request needs",
            permission,
        )
    if isinstance(exc, stripe.RateLimitError):
        headers = exc.headers or {}
        retry_after = headers.get("Retry-After") or headers.get("retry-after")
        reason = headers.get("Stripe-Rate-Limited-Reason") or headers.get("stripe-rate-limited-reason")
        error = StripeRateLimitedError("Stripe is rate-limiting this account (429)"
                                       + (f": {reason}" if reason else ""))
        try:
            error.retry_after_s = float(retry_after) if retry_after is not None else None
        except ValueError:
            error.retry_after_s = None
        error.reason = reason
        return error
    if isinstance(exc, stripe.APIConnectionError):
        return StripeUnavailableError("Stripe could not be reached (network error)")
    if isinstance(exc, stripe.InvalidRequestError) and exc.code == "resource_missing" and exc.param == "starting_after":
        return CursorGoneError("the list's starting_after object no longer exists at Stripe (deleted since)")
    if isinstance(exc, stripe.InvalidRequestError) and exc.code == "resource_missing" and exc.http_status == 404:
        return ObjectMissingError(f"Stripe has no such object (404): {exc.user_message or 'resource_missing'}")
    status = exc.http_status or 0
    if status >= 500 or isinstance(exc, stripe.APIError):
        return StripeUnavailableError(f"Stripe failed with HTTP {status or 'error'}")
    return IngestError(f"Stripe refused the request (HTTP {status}): {exc.user_message or type(exc).__name__}",
                       "stripe_request_refused")


class StripeReader:
    """Read-only access to one Stripe account with one restricted key."""

    def __init__(
        self,
        api_key: str,
        budget: AccountBudget,
        api_base: str | None = None,
        retry: RetryPolicy = RetryPolicy(),
        timeout_s: float = 30.0,
        on_error: Callable[[IngestError], None] | None = None,
        priority: Priority = Priority.INTERACTIVE,
    ):
        self._http = stripe.AIOHTTPClient(timeout=timeout_s)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=0,  # retries are ours (below), with jitter and the budget
            http_client=self._http,
        )
        self._budget = budget
        self._priority = priority
        self._retry = retry
        self._on_error = on_error
        self.requests_made = 0

    def __repr__(self) -> str:  # never show the key
        return f"StripeReader(requests_made={self.requests_made})"

    async def _call(self, endpoint: str, fn: Callable[[], Any]) -> Any:
        """Runs one request to `endpoint` within the budget, retrying retriable failures with backoff."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(lambda e: isinstance(e, IngestError) and e.retriable),
            wait=wait_random_exponential(multiplier=self._retry.initial_wait_s, max=self._retry.max_wait_s),
            stop=stop_after_attempt(self._retry.attempts),
            reraise=True,
        ):
            with attempt:
                await self._budget.acquire(self._priority, endpoint)
                self.requests_made += 1
                try:
                    return await fn()
                except stripe.StripeError as exc:
                    error = translate_stripe_error(exc)
                except (aiohttp.ClientError, asyncio.TimeoutError):  # a body read fails outside the library
                    error = StripeUnavailableError("Stripe could not be reached (network error)")
                if isinstance(error, StripeRateLimitedError):  # every process waits it out, not only this one
                    await self._budget.rate_limited(endpoint, error.reason, error.retry_after_s)
                if self._on_error is not None:
                    self._on_error(error)
                raise error from None
        raise StripeUnavailableError("no attempt was made")  # unreachable: tenacity reraises

    async def list_page(self, resource: str, params: Mapping[str, Any]) -> stripe.ListObject[Any]:
        """Returns one page of `resource` (newest first). Raises IngestError subclasses."""
        service = getattr(self._client.v1, RESOURCES[resource])
        page: stripe.ListObject[Any] = await self._call(list_endpoint(resource),
                                                        lambda: service.list_async(dict(params)))
        return page

    async def list_raw_page(self, resource: str, params: Mapping[str, Any]) -> RawPage:
        """Returns one page of `resource` (newest first) as plain dicts. Raises IngestError subclasses."""

        def parsed(body: bytes, latency_s: float) -> RawPage:
            page = raw_page(body)
            return RawPage(page.objects, page.has_more, latency_s)

        return await self._list(resource, params, parsed)

    async def list_page_body(self, resource: str, params: Mapping[str, Any]) -> PageBody:
        """Returns one page of `resource` as the body Stripe sent, unparsed: the importer parses it in its page
        pool (`ingestor/sources/page_pool.py`). Raises IngestError subclasses."""
        return await self._list(resource, params, page_body)

    async def _list(self, resource: str, params: Mapping[str, Any], answer: Callable[[bytes, float], _Page]) -> _Page:
        """GETs one list page of `resource` within the budget; `answer` makes the result of its body and latency."""
        async def request() -> _Page:
            sent = time.monotonic()
            body = await self._get_body(LIST_PATHS[resource], dict(params))
            return answer(body, time.monotonic() - sent)

        page: _Page = await self._call(list_endpoint(resource), request)
        return page

    async def retrieve_raw(self, resource: str, object_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Returns one object of `resource` as a plain dict. Raises IngestError subclasses."""
        path = f"{LIST_PATHS[resource]}/{quote(object_id, safe='')}"

        async def request() -> dict[str, Any]:
            body = await self._get_body(path, dict(params))
            try:
                found = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise StripeUnavailableError("Stripe answered a retrieve with a body that is not JSON") from exc
            if not isinstance(found, dict):
                raise StripeUnavailableError("Stripe answered a retrieve with something that is not an object")
            return found

        found: dict[str, Any] = await self._call(f"GET {LIST_PATHS[resource]}/{{id}}", request)
        return found

    async def _get_body(self, path: str, params: dict[str, Any]) -> bytes:
        """GETs `path` through the library's requestor; a non-2xx answer raises the library's error for it.

        Streamed, then read whole here: for a buffered answer the library formats the entire body into a
        debug log line before its logger drops it (`log_debug("API response body", ...)`), which cost
        about 7 µs per object imported; a stream is logged as its type name. It also keeps response
        bodies out of any debug log.
        """
        requestor = self._client._requestor
        stream, status, headers = await requestor.request_raw_async(
            "get", path, params, is_streaming=True, base_address="api", api_mode="V1", usage=["raw_read"])
        content = await _read_all(stream)
        if not 200 <= status < 300:
            requestor._interpret_response(content, status, headers, "V1")  # raises the StripeError
        return content

    async def pages(self, resource: str, params: Mapping[str, Any]) -> AsyncIterator[RawPage]:
        """Yields successive raw pages of `resource` from `params` (with `starting_after`) until the last."""
        query = dict(params)
        while True:
            page = await self.list_raw_page(resource, query)
            yield page
            if not page.has_more or not page.objects:
                return
            query["starting_after"] = page.objects[-1]["id"]

    async def close(self) -> None:
        """Closes the HTTP session of the underlying client."""
        await self._http.close_async()  # type: ignore[no-untyped-call]
