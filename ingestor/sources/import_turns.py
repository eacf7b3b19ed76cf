"""Which pending imports a worker passes over next: a place freed by one pass goes at once to the import whose last
pass here started longest ago, whatever the other passes do.

The worker once ran its passes in rounds: every pending import one pass, the next round when the whole round had
ended. A pass lasts `pass_s` but for the pages it has in flight, and a page may wait much longer: a tenant whose own
systems use its account's limit gets 429s with a long Retry-After, a Stripe that hangs takes its timeout. Every other
import waited for that one pass, imports connected meanwhile too (not in the round's list). Now each pass ends on
its own, and its place goes to the next in turn. Pure: the importer starts the passes.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

MORE = "more"  # a pass's state when its time was up with more to do (`ImportOutcome`)
DONE = "done"  # or when the import is done: pending again only with a new run (on demand, a catch-up), not rested


class ImportTurns:
    """The order this worker passes over pending imports in, and which are resting: a pass that ended without more
    to do (failed, paused, busy in another process, Stripe or Kafka away) leaves its import out for `rest_s` (the
    worker's scan interval), so a failing one does not take every place as soon as it frees it."""

    def __init__(self, rest_s: float):
        self._rest_s = rest_s
        self._last_started: dict[str, float] = {}  # per connection: when its last pass here started (monotonic)
        self._resting_until: dict[str, float] = {}

    def next(self, pending: Sequence[str], running: Collection[str], places: int, now: float) -> list[str]:
        """Up to `places` of the `pending` imports to start now: not running here, not resting, those this worker
        passed over longest ago first (never, or not since they were last pending, first of all; ties in the
        database's order). The order is this worker's: another worker may be passing over the same import (its
        pass then shares the slices, or finds them all held and rests)."""
        self._resting_until = {c: until for c, until in self._resting_until.items() if until > now}
        free = [c for c in pending if c not in running and c not in self._resting_until]
        order = {c: i for i, c in enumerate(pending)}
        free.sort(key=lambda c: (self._last_started.get(c, -math.inf), order[c]))
        chosen = free[:max(0, places)]
        for connection_id in chosen:
            self._last_started[connection_id] = now
        return chosen

    def ended(self, connection_id: str, state: str, now: float) -> None:
        """A pass over the import ended: with more to do, it is in turn again at once; done, a new run of it (on
        demand, a catch-up) starts at the next scan; otherwise it rests."""
        if state not in (MORE, DONE):
            self._resting_until[connection_id] = now + self._rest_s

    def forget(self, pending: Collection[str]) -> None:
        """Drops what is kept of imports no longer pending (done, or their connection gone)."""
        self._last_started = {c: t for c, t in self._last_started.items() if c in pending}
