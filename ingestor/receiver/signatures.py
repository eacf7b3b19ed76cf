"""Stripe webhook signature checks, with the `stripe` library, against every active signing secret.

While a secret is being rolled Stripe signs each delivery once per active secret (one `v1` each),
so a delivery is authentic if any of the connection's secrets verifies it. The library's timestamp
check is one-sided (it accepts any future time); we also refuse timestamps too far ahead.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import stripe

from ingestor.errors import IngestError

DEFAULT_TOLERANCE_S = 300  # Stripe's libraries' default


class BadSignatureError(IngestError):
    """The Stripe-Signature header is missing, malformed, wrong, or out of the time tolerance."""

    code = "invalid_signature"


def _timestamp(header: str) -> int | None:
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def verify_signature(
    payload: str, header: str | None, signing_secrets: Sequence[str], now: float, tolerance_s: int = DEFAULT_TOLERANCE_S
) -> None:
    """Raises BadSignatureError unless one of `signing_secrets` signed `payload` within the tolerance."""
    if not header:
        raise BadSignatureError("the Stripe-Signature header is missing", "missing_signature")
    if not header.isascii():  # the stripe library's constant-time compare raises TypeError on non-ASCII text
        raise BadSignatureError("the Stripe-Signature header is malformed (not ASCII)", "malformed_signature")
    timestamp = _timestamp(header)
    if timestamp is None:
        raise BadSignatureError("the Stripe-Signature header has no valid t= timestamp", "malformed_signature")
    if timestamp > now + tolerance_s:
        raise BadSignatureError(
            f"the signature timestamp is more than {tolerance_s}s in the future", "timestamp_in_future"
        )
    stale = False
    for secret in signing_secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance_s)
            return
        except stripe.SignatureVerificationError as exc:
            message = str(exc)
            if "expected scheme" in message:
                raise BadSignatureError("the Stripe-Signature header has no v1 signature", "missing_signature") from None
            if "Unable to extract" in message:
                raise BadSignatureError("the Stripe-Signature header is malformed", "malformed_signature") from None
            if "tolerance" in message:
                stale = True
    if stale:
        raise BadSignatureError(
            f"the signature timestamp is more than {tolerance_s}s old (a replayed or delayed delivery)",
            "timestamp_too_old",
        )
    raise BadSignatureError(
        "no signature matches this connection's webhook signing secret", "invalid_signature"
    )


def spend_verification_time(payload: str, header: str | None) -> None:
    """Does the work of one signature check with a throwaway secret and discards the result.

    Used for unknown webhook tokens, so the response time does not tell whether a token exists.
    """
    decoy = "whsec_" + secrets.token_hex(16)
    try:
        usable = header if header and header.isascii() else "t=0,v1=0"
        stripe.WebhookSignature.verify_header(payload, usable, decoy, None)
    except stripe.SignatureVerificationError:
        pass
