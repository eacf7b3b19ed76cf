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
