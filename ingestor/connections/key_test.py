"""The restricted-key Test: one read per resource, and a per-resource verdict in plain words with the fix.

Place in the flow: the control API calls `test_key` when a user pastes a key (before Connect and
before a rotation swaps keys) and when a stored key is re-tested. The format check
(`key_formats.classify_key`) comes first and a refused key never reaches Stripe. The reads are
`limit=1` list calls made concurrently through `StripeReader` (so within the account's budget);
the verdicts are built by pure functions. Nothing here stores the key or puts it in a message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ingestor.connections.key_formats import KeyCheck
from ingestor.errors import IngestError, KeyInvalidError, PermissionMissingError, StripeRateLimitedError
from ingestor.stripe_api.catalog import OPTIONAL_READ_ACCESS, READ_ACCESS, TESTED, Resource
from ingestor.stripe_api.client import StripeReader

OK: Final = "ok"
PERMISSION_MISSING: Final = "permission_missing"
KEY_INVALID: Final = "key_invalid"
RATE_LIMITED: Final = "rate_limited"
UNAVAILABLE: Final = "stripe_unavailable"

KEY_INVALID_FIX: Final = (
    "The key was rotated or revoked: create a fresh restricted key in the Stripe Dashboard "
    f"(Developers → API keys → Create restricted key, Read access to {READ_ACCESS}, and {OPTIONAL_READ_ACCESS}) "
    "and enter it here."
)


@dataclass(frozen=True, slots=True)
class ResourceVerdict:
    """The outcome of reading one resource with the key."""

    resource: str
    verdict: str
    message: str
    fix: str | None = None
    permission: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Returns the verdict as JSON-ready data."""
        return {"verdict": self.verdict, "message": self.message, "fix": self.fix, "permission": self.permission}


@dataclass(frozen=True, slots=True)
class KeyTestResult:
    """The format check and the per-resource verdicts; green when every read passed."""

    check: KeyCheck
    verdicts: tuple[ResourceVerdict, ...] = ()
    requests: int = 0  # made of Stripe (a read per resource, and any retry of one)

    @property
    def green(self) -> bool:
        """Tells whether the key is accepted and can read everything we need."""
        return self.check.accepted and bool(self.verdicts) and all(v.verdict == OK for v in self.verdicts)

    @property
    def outcome(self) -> str:
        """Returns green, refused (format), key_invalid, partial (permissions), rate_limited or stripe_unavailable."""
        if not self.check.accepted:
            return "refused"
        if self.green:
            return "green"
        found = {v.verdict for v in self.verdicts}
        for verdict in (KEY_INVALID, PERMISSION_MISSING, RATE_LIMITED, UNAVAILABLE):
            if verdict in found:
                return "partial" if verdict == PERMISSION_MISSING else verdict
        return "stripe_unavailable"

    def summary(self) -> str:
        """Returns one paragraph for the user: what passed and exactly what to change."""
        if not self.check.accepted:
            return self.check.message
        if self.green:
            return f"The key {self.check.masked} can read everything we need. You can connect it."
        outcome = self.outcome
        if outcome == KEY_INVALID:
            return f"Stripe refused the key {self.check.masked}. {KEY_INVALID_FIX}"
        if outcome == "partial":
            missing = [v for v in self.verdicts if v.verdict == PERMISSION_MISSING]
            labels = ", ".join(_label(v.resource) for v in missing)
            return (
                f"The key {self.check.masked} works but cannot read {labels}. In the Stripe Dashboard open "
                f"Developers → API keys, edit this restricted key, set {labels} to \"Read\", save, and test again."
            )
        if outcome == RATE_LIMITED:
            return "Stripe is rate-limiting this account right now, so the key could not be fully tested. Test again in a minute."
        return "Stripe could not be reached or failed, so the key could not be fully tested. Test again in a minute."

    def to_json(self) -> dict[str, Any]:
        """Returns the result as JSON-ready data (the key appears only masked)."""
        return {
            "outcome": self.outcome,
            "green": self.green,
            "key": {"code": self.check.code, "accepted": self.check.accepted, "mode": self.check.mode,
                    "masked": self.check.masked, "message": self.check.message},
            "resources": {v.resource: v.to_json() for v in self.verdicts},
            "summary": self.summary(),
        }


def _label(resource: str) -> str:
    return next(r.dashboard_label for r in TESTED if r.name == resource)


def verdict_for(resource: Resource, error: IngestError | None) -> ResourceVerdict:
    """Returns the verdict for one resource read that succeeded (None) or failed with `error`."""
    if error is None:
        return ResourceVerdict(resource.name, OK, f"{resource.dashboard_label}: can read.")
    if isinstance(error, KeyInvalidError):
        return ResourceVerdict(resource.name, KEY_INVALID, "Stripe refused the key: it is invalid, rotated or revoked.",
                               KEY_INVALID_FIX)
    if isinstance(error, PermissionMissingError):
        return ResourceVerdict(
            resource.name, PERMISSION_MISSING,
            f"{resource.dashboard_label}: the key has no read permission ({error.permission or resource.permission}).",
            f'In the Stripe Dashboard (Developers → API keys) edit this restricted key and set '
            f'"{resource.dashboard_label}" to "Read".',
            error.permission or resource.permission,
        )
    if isinstance(error, StripeRateLimitedError):
        return ResourceVerdict(resource.name, RATE_LIMITED, "Stripe is rate-limiting this account (429).",
                               "Wait a minute and test again.")
    return ResourceVerdict(resource.name, UNAVAILABLE, f"Stripe could not be asked: {error}.",
                           "Check that Stripe is reachable and test again in a minute.")


async def test_key(check: KeyCheck, reader: StripeReader | None, resources: Sequence[Resource] = TESTED) -> KeyTestResult:
    """Reads one object of every resource concurrently; returns the verdicts. Never raises IngestError.

    `reader` may be None only for a refused key (no request is made). Cancellation cancels the reads.
    """
    if not check.accepted or reader is None:
        return KeyTestResult(check)

    async def one(resource: Resource) -> ResourceVerdict:
        try:
            await reader.list_page(resource.name, {"limit": 1})
        except IngestError as exc:
            return verdict_for(resource, exc)
        return verdict_for(resource, None)

    verdicts = await asyncio.gather(*(one(r) for r in resources))
    return KeyTestResult(check, tuple(verdicts), reader.requests_made)


test_key.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite the name
