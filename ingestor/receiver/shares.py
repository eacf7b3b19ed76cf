"""Each connection's share of the receiver's work: one leaky bucket per connection, in typical deliveries.

Every tenant's webhooks share one web process's event loop, and a tenant signs its own webhooks: it can send
as many valid deliveries as it likes, each one parsed, masked and published on that loop. Without a share, one
tenant's flood (of small events, or of large padded ones) slows every other tenant's deliveries.

So each delivery to a connection's URL costs it `1 + bytes / bytes_per_unit + containers / containers_per_unit`
units (a delivery's work grows with its body and with its objects and arrays, which parsing, the shape check and
masking walk one by one: a typical event is a few KiB and a few dozen containers, one unit), drawn from a bucket
that drains at `units_per_s` and holds `burst` units. Every delivery pays, signed or not: the URL is a secret only
Stripe and the tenant hold, and a refused delivery's reading and signature check are work too. The cost of the
bytes the headers announce (of the largest body allowed, when they announce none) is taken before the body is
read, so deliveries sent at once cannot all be read on one unit of room; what the body turns out to hold is
settled after (the difference given back, or the brackets' cost taken). A connection whose bucket cannot pay is
answered 429: before the body is read, or before it is checked or parsed. Stripe delivers the event again later,
and the poller reads the types it lists from the events API meanwhile; a tenant within its share never sees one.

These are caps, not a division of the process: each connection gets its rate whatever the others do (some 110
typical deliveries a second, about 3% of a core, at the defaults: some thirty connections at full rate fill one
process). The buckets live in this process: N web processes give a tenant N caps, each bounded within its
process. A leaky bucket is small enough to keep here: aiolimiter's waits for room, and a refusal must not wait,
nor can it give units back.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class _Bucket:
    """Units taken, draining at a fixed rate since `at` (a leaky bucket)."""

    __slots__ = ("level", "at")

    def __init__(self, now: float):
        self.level = 0.0
        self.at = now

    def drain(self, now: float, units_per_s: float) -> None:
        self.level = max(0.0, self.level - (now - self.at) * units_per_s)
        self.at = now


class DeliveryShares:
    """Per-connection buckets of delivery work (the least recently used are forgotten past `max_connections`)."""

    def __init__(self, units_per_s: float, burst: float, bytes_per_unit: int, containers_per_unit: int,
                 max_connections: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self._units_per_s = units_per_s
        self._burst = burst
        self._bytes_per_unit = bytes_per_unit
        self._containers_per_unit = containers_per_unit
        self._max_connections = max_connections
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def cost(self, body_bytes: int, containers: int = 0) -> float:
        """Returns what a delivery of `body_bytes` holding `containers` objects and arrays costs, at most a full
        bucket (a body of any allowed size passes)."""
        return min(self._burst, 1 + body_bytes / self._bytes_per_unit + containers / self._containers_per_unit)

    def take(self, connection_id: str, units: float) -> bool:
        """Takes `units` (at most a full bucket) from the connection's bucket; False, nothing taken, when it cannot
        pay now. Never waits."""
        bucket = self._bucket(connection_id)
        units = min(units, self._burst)
        if bucket.level + units > self._burst:
            return False
        bucket.level += units
        return True

    def give_back(self, connection_id: str, units: float) -> None:
        """Returns units taken and not used (a body smaller than the headers' bound)."""
        bucket = self._bucket(connection_id)
        bucket.level = max(0.0, bucket.level - units)

    def settle(self, connection_id: str, reserved: float, body_bytes: int, containers: int) -> bool:
        """Brings what a delivery paid before its body was read (`reserved`) to what the body costs: gives back the
        difference, or takes the rest (False, nothing more taken, when the bucket cannot pay it)."""
        rest = self.cost(body_bytes, containers) - reserved
        if rest <= 0:
            self.give_back(connection_id, -rest)
            return True
        return self.take(connection_id, rest)

    def _bucket(self, connection_id: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(connection_id)
        if bucket is None:
            bucket = self._buckets[connection_id] = _Bucket(now)
            while len(self._buckets) > self._max_connections:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(connection_id)
            bucket.drain(now, self._units_per_s)
        return bucket
