"""The read path's errors: one base, subclasses named for what the caller must do."""

from __future__ import annotations


class ProjectionError(Exception):
    """Base of the read path's errors."""

    retriable = False


class UnknownObjectError(ProjectionError):
    """The record is about an object type no projection handles: dead-letter it."""


class PoisonRecordError(ProjectionError):
    """The record cannot be applied (malformed payload, handler bug): dead-letter it, with its event id."""

    def __init__(self, message: str, event_id: str = ""):
        super().__init__(message)
        self.event_id = event_id


class PositionGapError(ProjectionError):
    """A batch starts after the stored position: seek back to the stored position and fetch again.

    Not `retriable`: applying the same batch again would meet the same gap; the consumer seeks instead.
    """
