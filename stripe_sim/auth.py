"""Keys, permissions and per-account rate limits, answering with Stripe's 401/403/429 errors."""

from __future__ import annotations

import base64
import time
from typing import Any

from stripe_sim.errors import StripeError, mask_key
from stripe_sim.model import ApiKey, SimState

# Stripe's default request rate limits per account (requests per second), and per endpoint ("API endpoints
# have a default limit of 25 requests per second", docs.stripe.com/rate-limits), both per mode.
LIVE_RATE = 100.0
TEST_RATE = 25.0
ENDPOINT_RATE = 25.0

# The restricted-key permission each read resource needs.
PERMISSIONS = {"customers": "rak_customer_read", "charges": "rak_charge_read",
               "subscriptions": "rak_subscription_read", "invoices": "rak_invoice_read",
               "payment_intents": "rak_payment_intent_read", "events": "rak_event_read",
               # Coupons, also needed to expand a subscription's discounts (their coupons come with them).
               "coupons": "rak_coupon_read",
               # Prices: the Dashboard's row is "Prices", its permission still named for plans.
               "prices": "rak_plan_read"}


def key_from_header(header: str | None) -> str | None:
    """Extract the API key from a Bearer or Basic Authorization header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value).decode().split(":", 1)[0] or None
        except ValueError:
            return None
    return None


def authenticate(state: SimState, header: str | None) -> ApiKey:
    """Return the key a request uses, or raise Stripe's 401."""
    raw = key_from_header(header)
    if raw is None:
        raise StripeError(401, "You did not provide an API key. You need to provide your API key "
                          "in the Authorization header, using Bearer auth (e.g. 'Authorization: "
                          "Bearer YOUR_SECRET_KEY').")
    key = state.keys.get(raw)
    if key is None:
        raise StripeError(401, f"Invalid API Key provided: {mask_key(raw)}")
    if key.expired:
        raise StripeError(401, f"Expired API Key provided: {mask_key(raw)}",
                          code="api_key_expired")
    if key.requests_left is not None:
        key.requests_left -= 1
        key.expired = key.requests_left <= 0  # this request is served; the next ones are refused
    return key


def authorize(key: ApiKey, resource: str) -> None:
    """Raise Stripe's 403 if a restricted key lacks read permission for the resource."""
    if not key.restricted or resource in key.permissions:
        return
    raise StripeError(403, (
        f"The provided key '{mask_key(key.key)}' does not have the required permissions for "
        f"this endpoint on account '{key.account_id}'. Having the '{PERMISSIONS[resource]}' "
        "permission would allow this request to continue."))


class RateLimiter:
    """Token buckets per (account, mode) and per (account, mode, endpoint), refilled in real time."""

    def __init__(self) -> None:
        self._limits: dict[tuple[str, bool], float] = {}
        self._endpoint_limits: dict[tuple[str, bool], float] = {}
        self._buckets: dict[tuple[str, bool, str], tuple[float, float]] = {}
        self._arrivals: dict[tuple[str, bool], list[float]] = {}  # when each request reached the limit
        self._endpoint_arrivals: dict[tuple[str, bool], dict[str, list[float]]] = {}
        self._limited: dict[tuple[str, bool], dict[str, int]] = {}

    def set_limit(self, account_id: str, per_second: float, livemode: bool | None = None,
                  endpoint_per_second: float | None = None) -> None:
        """Set an account's limit for one mode, or both when `livemode` is None; its per-endpoint limit is
        `endpoint_per_second`, or else raised to `per_second` if that is higher (a limit out of the way)."""
        endpoint = endpoint_per_second if endpoint_per_second is not None else max(ENDPOINT_RATE, per_second)
        for mode in ((False, True) if livemode is None else (livemode,)):
            self._limits[(account_id, mode)] = per_second
            self._endpoint_limits[(account_id, mode)] = endpoint
            for slot in [s for s in self._buckets if s[:2] == (account_id, mode)]:
                del self._buckets[slot]

    def check(self, key: ApiKey, endpoint: str) -> None:
        """Take one token of the account's and one of `endpoint`'s bucket, or raise Stripe's 429 (with the
        reason header Stripe sends: `global-rate` or `endpoint-rate`)."""
        slot = (key.account_id, key.livemode)
        now = time.monotonic()
        self._arrivals.setdefault(slot, []).append(now)
        self._endpoint_arrivals.setdefault(slot, {}).setdefault(endpoint, []).append(now)
        buckets = (((*slot, ""), self._limits.get(slot, LIVE_RATE if key.livemode else TEST_RATE), "global-rate"),
                   ((*slot, endpoint), self._endpoint_limits.get(slot, ENDPOINT_RATE), "endpoint-rate"))
        refilled = []
        for bucket, rate, reason in buckets:
            tokens, last = self._buckets.get(bucket, (rate, now))
            tokens = min(rate, tokens + (now - last) * rate)
            self._buckets[bucket] = (tokens, now)
            if tokens < 1:
                limited = self._limited.setdefault(slot, {})
                limited[reason] = limited.get(reason, 0) + 1
                raise StripeError(429, "Request rate limit exceeded. You can learn more about rate "
                                  "limits here https://stripe.com/docs/rate-limits.",
                                  code="rate_limit", headers={"Stripe-Rate-Limited-Reason": reason})
            refilled.append((bucket, tokens))
        for bucket, tokens in refilled:
            self._buckets[bucket] = (tokens - 1, now)

    def arrivals(self, account_id: str, livemode: bool) -> list[float]:
        """When each of an account's requests in a mode reached the limit (monotonic seconds, in order)."""
        return list(self._arrivals.get((account_id, livemode), []))

    def observed(self, account_id: str, livemode: bool) -> dict[str, Any]:
        """What the limit saw of an account's mode: requests, how many were refused (429), the busiest
        second (most requests in any one-second window, in all and per endpoint), the mean rate from
        the first request to the last, and per endpoint the requests in each second from the first."""
        arrivals = self._arrivals.get((account_id, livemode), [])
        span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
        limited = self._limited.get((account_id, livemode), {})
        by_endpoint = self._endpoint_arrivals.get((account_id, livemode), {})
        return {"requests": len(arrivals), "rate_limited": sum(limited.values()),
                "rate_limited_endpoint": limited.get("endpoint-rate", 0),
                "busiest_second": _busiest_second(arrivals),
                "busiest_second_by_endpoint": {e: _busiest_second(times) for e, times in sorted(by_endpoint.items())},
                "mean_per_second": (len(arrivals) - 1) / span if span else 0.0,
                "per_second_by_endpoint": {e: _per_second(times, arrivals[0])
                                           for e, times in sorted(by_endpoint.items())}}


def _per_second(arrivals: list[float], start: float) -> list[int]:
    """How many of these (sorted) times fell in each whole second from `start`: the rate over time."""
    counts: list[int] = []
    for at in arrivals:
        second = int(at - start)
        counts.extend([0] * (second + 1 - len(counts)))
        counts[second] += 1
    return counts


def _busiest_second(arrivals: list[float]) -> int:
    """The most of these (sorted) times in any one-second window."""
    busiest, first = 0, 0
    for last, at in enumerate(arrivals):
        while at - arrivals[first] >= 1.0:
            first += 1
        busiest = max(busiest, last - first + 1)
    return busiest
