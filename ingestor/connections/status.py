"""Connection health: what each status means to the user, and how Stripe errors move a connection.

Place in the flow: the poller, the importer and the key re-test report Stripe failures here;
the control API shows the status with its plain-words explanation, the recovery steps and a
link into docs/operating.md. `status_for_error` and `STATUSES` are pure; `HealthReporter` writes
through the connection store. A 401 on any path moves the connection to `key_invalid`, which
stops its polling and import until a new key passes Test.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from ingestor.connections.store import PostgresConnectionStore
from ingestor.errors import IngestError, KeyInvalidError, PermissionMissingError, StripeRateLimitedError
from ingestor.stripe_api.catalog import OPTIONAL_READ_ACCESS, READ_ACCESS
from plumbing.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class StatusInfo:
    """What a status means: a title, what the user sees, the cause and the steps to recover."""

    title: str
    meaning: str
    recovery: tuple[str, ...]
    stops_reading: bool = False


STATUSES: Final = {
    "connected": StatusInfo("Connected", "Webhooks arrive and the poller checks for anything missed.", ()),
    "webhook_unverified": StatusInfo(
        "Waiting for the webhook test",
        "The key works and the poller is reading events, but no test webhook has arrived yet.",
        ("In the Stripe Dashboard open Developers → Webhooks, pick the endpoint with your webhook URL and "
         "click \"Send test webhook\".",
         "Check that the signing secret you entered is the one shown under \"Signing secret\" for that endpoint."),
    ),
    "polling_only": StatusInfo(
        "Polling only",
        "No webhook signing secret is set, so new activity is picked up by polling (within a minute or two).",
        ("Add a webhook endpoint in Stripe with your webhook URL and the listed event types, then enter its "
         "signing secret (whsec_…) here.",),
    ),
    "key_invalid": StatusInfo(
        "Key rotated or revoked",
        "Stripe refused the key: the key was rotated or revoked. Polling and import are stopped.",
        ("Create a fresh restricted key in the Stripe Dashboard (Developers → API keys → Create restricted key) "
         f"with Read access to {READ_ACCESS} (and {OPTIONAL_READ_ACCESS}).",
         "Enter it here and press Test; when it is green, it replaces the old key and the import resumes where it "
         "stopped."),
        stops_reading=True,
    ),
    "permission_missing": StatusInfo(
        "Permission missing",
        "The key cannot read one of the resources we need. Polling and import are stopped.",
        ("In the Stripe Dashboard (Developers → API keys) edit the restricted key and set the named resource to "
         "\"Read\".",
         "Press Test again; when it is green, polling and the import resume."),
        stops_reading=True,
    ),
    "rate_limited": StatusInfo(
        "Rate-limited by Stripe",
        "Stripe is rate-limiting this account; we back off and retry on our own.",
        ("Nothing to do unless it lasts: other integrations on the same Stripe account share its rate limit.",),
    ),
    "disconnected": StatusInfo(
        "Disconnected",
        "The key and webhook secrets were deleted; nothing is read from Stripe.",
        ("Connect again with a restricted key to resume; a new import fills the gap.",),
        stops_reading=True,
    ),
}
# Statuses a successful read moves back to the healthy status.
RECOVERABLE_BY_SUCCESS: Final = ("rate_limited",)
# Statuses a green key test (or a new green key) recovers from.
RECOVERABLE_BY_TEST: Final = ("key_invalid", "permission_missing", "rate_limited")


def docs_link(docs_url: str, anchor: str) -> str:
    """Returns the link to the section of docs/operating.md about `anchor` (a status or error code)."""
    return f"{docs_url}#{anchor}"


def status_for_error(error: IngestError) -> str | None:
    """Returns the status a Stripe failure moves a connection to, or None if it only records the error."""
    if isinstance(error, KeyInvalidError):
        return "key_invalid"
    if isinstance(error, PermissionMissingError):
        return "permission_missing"
    if isinstance(error, StripeRateLimitedError):
        return "rate_limited"
    return None


def reason_for_error(error: IngestError) -> str:
    """Returns the plain-words reason shown with the status."""
    if isinstance(error, KeyInvalidError):
        return "the key was rotated or revoked: create a fresh restricted key and re-enter it"
    return str(error)


class HealthReporter:
    """Records Stripe failures and recoveries on the connection."""

    def __init__(self, store: PostgresConnectionStore):
        self._store = store

    async def failed(self, connection_id: str, key_version: int, error: IngestError, now: datetime) -> bool:
        """Records `error`; returns True if the key in use is still the stored one (so the caller must stop)."""
        status = status_for_error(error)
        current = await self._store.record_error(
            connection_id, status, error.code, reason_for_error(error), now, key_version=key_version
        )
        log.warning("Stripe read failed", connection_id=connection_id, code=error.code, status=status,
                    error=str(error), key_still_current=current)
        return current

    async def succeeded(self, connection_id: str, now: datetime) -> None:
        """A read worked: a connection that was rate-limited is healthy again."""
        await self._store.recover(connection_id, RECOVERABLE_BY_SUCCESS, now)
