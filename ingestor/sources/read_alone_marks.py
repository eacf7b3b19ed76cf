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
from collections.abc import Callable
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
    since: datetime | None  # the mark's time in the database; None: seen cleared
    learnt_at: float  # monotonic: a row asked for after this shows any change made since


class ReadAloneMarks:
    """The tenants' marks as this worker last learnt them (from a row, or by storing one), and the deaths here
    whose mark is not stored yet."""

    def __init__(self) -> None:
        self._known: dict[str, _Known] = {}
        self._storing: set[str] = set()  # a clear seen meanwhile must not forget the death

    def seen(self, tenant_id: str, since: datetime | None, asked_at: float) -> MarkAction:
        """A pass read the tenant's mark (`since`, None: unmarked) from a row it asked for at `asked_at`."""
        known = self._known.get(tenant_id)
        if known is not None and asked_at <= known.learnt_at:  # stale: read before what this worker knows
            return MarkAction.KEEP if known.since is None else MarkAction.ALONE
        if since is None:
            if known is None or known.since is None or tenant_id in self._storing:
                return MarkAction.KEEP
            self._known[tenant_id] = _Known(None, asked_at)
            return MarkAction.TOGETHER
        self._known[tenant_id] = _Known(since, asked_at)
        if known is None or known.since is None or known.since == since:
            return MarkAction.ALONE
        return MarkAction.ANEW

    def to_store(self, tenant_id: str, reads_alone: bool, died_since: Callable[[float], bool],
                 pass_started: float) -> bool:
        """Whether a pass that ended must store the tenant's mark: its pages are read alone here, and the database
        may not say so (never stored, a store that failed, seen cleared) or a page died after this worker learnt
        the mark (a person may have cleared it since). A death before then, in a pass over its other connection
        that stored it, is not one: storing it again would undo a clear made since."""
        if not reads_alone:
            return False
        known = self._known.get(tenant_id)
        if tenant_id in self._storing or known is None or known.since is None:
            return True
        return died_since(max(pass_started, known.learnt_at))

    def storing(self, tenant_id: str) -> None:
        """The pass is storing the tenant's mark (until `stored`: a failed store is tried again next pass)."""
        self._storing.add(tenant_id)

    def stored(self, tenant_id: str, since: datetime, stored_at: float) -> None:
        """This worker stored the tenant's mark (`since`, as the database now holds it), done by `stored_at`."""
        self._storing.discard(tenant_id)
        self._known[tenant_id] = _Known(since, stored_at)

    def knows(self, tenant_id: str) -> bool:
        """Whether the tenant's mark is stored, as far as this worker knows."""
        known = self._known.get(tenant_id)
        return known is not None and known.since is not None
