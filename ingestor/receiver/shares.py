"""Each connection's share of the receiver's work: one leaky bucket per connection, in typical deliveries.

Every tenant's webhooks share one web process's event loop, and a tenant signs its own webhooks: it can send
as many valid deliveries as it likes, each one parsed, masked and published on that loop. Without a share, one
tenant's flood (of small events, or of large padded ones) slows every other tenant's deliveries.

So each delivery to a connection's URL costs it `1 + bytes / bytes_per_unit + containers / containers_per_unit`
units (a delivery's work grows with its body and with its objects and arrays, which parsing, the shape check and
masking walk one by one: a typical event is a few KiB and a few dozen containers, one unit), drawn from a bucket
that refills at `units_per_s` and holds `burst` units (aiolimiter's leaky bucket). Every delivery pays, signed or
not: the URL is a secret only Stripe and the tenant hold, and a refused delivery's reading and signature check
are work too. A connection whose bucket is empty is answered 429 before its body is read; one whose bucket
cannot pay for the body it sent, before that body is checked or parsed. Stripe delivers the event again later,
and the poller reads the types it lists from the events API meanwhile; a tenant within its share never sees one.

These are caps, not a division of the process: each connection gets its rate whatever the others do (about 5%
of a core at the defaults, so some twenty connections at full rate fill one process). The buckets live in this
process: N web processes give a tenant N caps, each bounded within its process.
"""

from __future__ import annotations

from collections import OrderedDict

from aiolimiter import AsyncLimiter


class DeliveryShares:
    """Per-connection buckets of delivery work (the least recently used are forgotten past `max_connections`)."""

    def __init__(self, units_per_s: float, burst: float, bytes_per_unit: int, containers_per_unit: int,
                 max_connections: int = 10_000):
        self._units_per_s = units_per_s
        self._burst = burst
        self._bytes_per_unit = bytes_per_unit
        self._containers_per_unit = containers_per_unit
        self._max_connections = max_connections
        self._buckets: OrderedDict[str, AsyncLimiter] = OrderedDict()

    def cost(self, body_bytes: int, containers: int = 0) -> float:
        """Returns what a delivery of `body_bytes` holding `containers` objects and arrays costs, at most a full
        bucket (a body of any allowed size passes)."""
        return min(self._burst, 1 + body_bytes / self._bytes_per_unit + containers / self._containers_per_unit)

    def has_room(self, connection_id: str, body_bytes: int = 0) -> bool:
        """Whether the connection's bucket can pay for a delivery of `body_bytes` now (spends nothing)."""
        return self._bucket(connection_id).has_capacity(self.cost(body_bytes))

    async def spend(self, connection_id: str, body_bytes: int, containers: int) -> bool:
        """Takes a delivery's cost from the connection's bucket; False (nothing taken) when it cannot pay now.

        Never waits: the bucket either pays at once or the delivery is refused."""
        bucket, cost = self._bucket(connection_id), self.cost(body_bytes, containers)
        if not bucket.has_capacity(cost):
            return False
        await bucket.acquire(cost)  # returns at once: the capacity was just checked, with no await in between
        return True

    def _bucket(self, connection_id: str) -> AsyncLimiter:
        bucket = self._buckets.get(connection_id)
        if bucket is None:
            bucket = self._buckets[connection_id] = AsyncLimiter(self._burst, self._burst / self._units_per_s)
            while len(self._buckets) > self._max_connections:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(connection_id)
        return bucket
