"""The simulator's notion of "now": real time by default, frozen or advanced by tests; and billing-interval steps."""

from __future__ import annotations

import calendar
import time
from datetime import datetime, timezone

DAY = 86400


def add_interval(ts: int, interval: str, count: int = 1) -> int:
    """Return `ts` moved forward by a billing interval, clamping the day like Stripe does."""
    dt = datetime.fromtimestamp(ts, timezone.utc)
    if interval in ("day", "week"):
        return ts + count * (7 if interval == "week" else 1) * DAY
    months = count * (12 if interval == "year" else 1)
    y, m = divmod(dt.month - 1 + months, 12)
    year, month = dt.year + y, m + 1
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return int(dt.replace(year=year, month=month, day=day).timestamp())


class SimClock:
    """A wall clock in whole Unix seconds that tests can freeze, set and advance."""

    def __init__(self, frozen_at: int | None = None) -> None:
        self._frozen_at = frozen_at
        self._offset = 0.0

    def now(self) -> int:
        """Return the current simulated Unix time in seconds."""
        if self._frozen_at is not None:
            return self._frozen_at
        return int(time.time() + self._offset)

    def freeze(self, at: int | None = None) -> None:
        """Stop the clock at `at` (default: the current simulated time)."""
        self._frozen_at = self.now() if at is None else int(at)

    def unfreeze(self) -> None:
        """Let the clock run again in real time from where it stands."""
        if self._frozen_at is not None:
            self._offset = self._frozen_at - time.time()
            self._frozen_at = None

    def advance(self, seconds: float) -> int:
        """Move the clock forward by `seconds` and return the new time."""
        if self._frozen_at is not None:
            self._frozen_at += int(seconds)
        else:
            self._offset += seconds
        return self.now()

    @property
    def frozen(self) -> bool:
        """Whether the clock is currently frozen."""
        return self._frozen_at is not None
