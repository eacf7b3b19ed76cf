"""What one worker knows of the tenants' read-alone marks, to follow a person clearing one without a restart.

A page that killed a page-pool process marks its tenant in the database (`pages_read_alone_since`), so every
worker reads that tenant's pages alone; `ingestor read-alone clear` removes the mark. A worker sees the mark as it
stood when a pass read its connection's row, and passes over a tenant's two connections run at once, so a row may
be older than what the worker itself stored meanwhile. Each mark seen or stored is remembered with its time and
when it was learnt; a row asked for before that is stale and changes nothing. Pure: the importer reads and writes
the marks, the page pool acts on the answer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class MarkAction(enum.Enum):
    """What the page pool does with a tenant after a pass read its mark."""

    KEEP = "keep"  # nothing new: a stale row, or no mark ever seen (a death here not yet stored stays)
    ALONE = "alone"  # marked: read its pages alone
    ANEW = "anew"  # cleared and marked again since: forget its deaths, and read its pages alone
    TOGETHER = "together"  # cleared: read its pages in the pool again, its deaths forgotten


@dataclass(frozen=True, slots=True)
class _Known:
    since: datetime  # the mark's time in the database
    learnt_at: float  # monotonic: a row asked for after this shows any change made since


class ReadAloneMarks:
    """The tenants' marks as this worker last learnt them (from a row, or by storing one)."""

    def __init__(self) -> None:
        self._known: dict[str, _Known] = {}

    def seen(self, tenant_id: str, since: datetime | None, asked_at: float) -> MarkAction:
        """A pass read the tenant's mark (`since`, None: unmarked) from a row it asked for at `asked_at`."""
        known = self._known.get(tenant_id)
        stale = known is not None and asked_at <= known.learnt_at
        if since is None:
            if known is None or stale:
                return MarkAction.KEEP
            del self._known[tenant_id]
            return MarkAction.TOGETHER
        if known is None:
            self._known[tenant_id] = _Known(since, asked_at)
            return MarkAction.ALONE
        if known.since == since or stale:
            return MarkAction.ALONE
        self._known[tenant_id] = _Known(since, asked_at)
        return MarkAction.ANEW

    def stored(self, tenant_id: str, since: datetime, stored_at: float) -> None:
        """This worker stored the tenant's mark (`since`, as the database now holds it), done by `stored_at`."""
        self._known[tenant_id] = _Known(since, stored_at)

    def knows(self, tenant_id: str) -> bool:
        """Whether the tenant's mark is stored, as far as this worker knows."""
        return tenant_id in self._known
