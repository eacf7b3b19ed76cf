"""The write path's errors: one base, subclasses named for what the caller must do."""

from __future__ import annotations


class IngestError(Exception):
    """Base of the write path's errors; `code` is stable and safe to show, the message has no secret."""

    retriable = False
    code = "ingest_error"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class BadEventError(IngestError):
    """The body is not a Stripe event we can read: refuse it, change nothing."""

    code = "invalid_event"


class KeyInvalidError(IngestError):
    """Stripe answered 401: the key was rotated, revoked or never existed. Stop and ask for a new key."""

    code = "key_invalid"


class PermissionMissingError(IngestError):
    """Stripe answered 403: the restricted key lacks a read permission (named in `permission`)."""

    code = "permission_missing"

    def __init__(self, message: str, permission: str | None):
        super().__init__(message)
        self.permission = permission


class CursorGoneError(IngestError):
    """A list's `starting_after` names an object Stripe no longer has (deleted since: a draft invoice, a plan):
    Stripe answers 400 `resource_missing` with `param: starting_after`. Retried as it is, it fails for ever."""

    code = "stripe_cursor_gone"


class ObjectMissingError(IngestError):
    """Stripe has no object of that id (404 `resource_missing`): deleted since it was named (a coupon deleted after
    it was applied, say). Asked again, it is still missing."""

    code = "stripe_object_missing"


class StripeUnavailableError(IngestError):
    """Stripe rate-limited us, failed (5xx) or could not be reached; retry later with backoff."""

    retriable = True
    code = "stripe_unavailable"


class StripeEmptyPageError(StripeUnavailableError):
    """Stripe listed no objects and said there were more (`has_more`): taken for the list's end, the rest of the
    range would never be read. Tried again, as a 5xx is, and shown in the connection's health: it may not go away
    (something between us and Stripe that cuts bodies short, say)."""

    code = "stripe_empty_page"


class StripeCursorIgnoredError(StripeUnavailableError):
    """A page asked for after the import's cursor listed the cursor's object again (or newer ones): the cursor was
    not followed. Published, the same objects would go to the topic again at every request, and a second holding more
    than a page of objects would be paged for ever. Nothing of the page is kept; tried again at the next pass, and
    shown in the connection's health."""

    code = "stripe_cursor_ignored"


class StripeRateLimitedError(StripeUnavailableError):
    """Stripe answered 429 for this account (with its Retry-After and Stripe-Rate-Limited-Reason, if sent)."""

    code = "rate_limited"
    retry_after_s: float | None = None
    reason: str | None = None

