"""Keys, permissions and per-account rate limits, answering with Stripe's 401/403/429 errors."""

from __future__ import annotations

import base64
import time

from stripe_sim.errors import StripeError, mask_key
from stripe_sim.model import ApiKey, SimState

# Stripe's default request rate limits per account (requests per second).
LIVE_RATE = 100.0
TEST_RATE = 25.0

# The restricted-key permission each read resource needs.
PERMISSIONS = {"customers": "rak_customer_read", "charges": "rak_charge_read",
               "subscriptions": "rak_subscription_read", "invoices": "rak_invoice_read",
               "payment_intents": "rak_payment_intent_read", "events": "rak_event_read",
               # Coupons, also needed to expand a subscription's discounts (their coupons come with them).
               "coupons": "rak_coupon_read"}


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
    """A token bucket per (account, mode), refilled in real time."""

    def __init__(self) -> None:
        self._limits: dict[tuple[str, bool], float] = {}
        self._buckets: dict[tuple[str, bool], tuple[float, float]] = {}

    def set_limit(self, account_id: str, per_second: float, livemode: bool | None = None) -> None:
        """Set an account's limit for one mode, or both when `livemode` is None."""
        for mode in ((False, True) if livemode is None else (livemode,)):
            self._limits[(account_id, mode)] = per_second
            self._buckets.pop((account_id, mode), None)

    def check(self, key: ApiKey) -> None:
        """Take one token or raise Stripe's 429 rate-limit error."""
        slot = (key.account_id, key.livemode)
        rate = self._limits.get(slot, LIVE_RATE if key.livemode else TEST_RATE)
        now = time.monotonic()
        tokens, last = self._buckets.get(slot, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate)
        if tokens < 1:
            self._buckets[slot] = (tokens, now)
            raise StripeError(429, "Request rate limit exceeded. You can learn more about rate "
                              "limits here https://stripe.com/docs/rate-limits.",
                              code="rate_limit",
                              headers={"Stripe-Rate-Limited-Reason": "global-rate"})
        self._buckets[slot] = (tokens - 1, now)
