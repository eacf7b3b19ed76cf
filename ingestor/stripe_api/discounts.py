"""Fetching a subscription's discounts with their coupons, for events that name them only by id.

One retrieve of the subscription with `expand[]=discounts&expand[]=discounts.source.coupon` (this needs
the restricted key's coupon permission), through the connection's reader and within its account's
budget. A discount's coupon never changes, so what was fetched is kept per connection (bounded).

The receiver waits for it while Stripe waits for our answer, and a tenant signs its own webhooks: it can send
discounts named by ids nobody fetched yet, as fast as it likes. So a fetch is given up after `timeout_s`, and a
connection has at most `per_connection` fetches waiting: beyond that a delivery is answered 503 at once (Stripe
delivers it again later), rather than queueing behind the account's budget with its body held in our memory.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from typing import Any

from ingestor.connections.store import PostgresConnectionStore
from ingestor.errors import KeyInvalidError, StripeUnavailableError
from ingestor.stripe_api.catalog import DISCOUNT_EXPANSIONS
from ingestor.stripe_api.client import StripeReader
from ingestor.stripe_api.readers import StripeReaders

Discounts = dict[str, dict[str, Any]]


async def fetch_discounts(reader: StripeReader, subscription_id: str) -> Discounts:
    """Returns the subscription's discounts (with their coupons) by id. Raises IngestError subclasses."""
    sub = await reader.retrieve_raw("subscriptions", subscription_id, {"expand": list(DISCOUNT_EXPANSIONS)})
    return {d["id"]: d for d in sub.get("discounts") or [] if isinstance(d, dict) and isinstance(d.get("id"), str)}


class StripeDiscounts:
    """Discounts fetched with a connection's stored key (for the receiver), remembered per connection."""

    def __init__(self, store: PostgresConnectionStore, readers: StripeReaders, timeout_s: float = 5.0,
                 per_connection: int = 4, max_remembered: int = 10_000):
        self._store = store
        self._readers = readers
        self._timeout_s = timeout_s
        self._per_connection = per_connection
        self._max = max_remembered
        self._known: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._waiting: Counter[str] = Counter()  # fetches under way, per connection

    async def for_subscription(self, connection_id: str, livemode: bool, subscription_id: str,
                               wanted: list[str]) -> Discounts:
        """Returns the discounts `wanted` that Stripe still knows. Raises IngestError subclasses: a
        StripeUnavailableError when the connection has `per_connection` fetches waiting already, or when Stripe (or
        the account's budget) has not answered within `timeout_s`."""
        if all((connection_id, d) in self._known for d in wanted):
            return {d: self._known[(connection_id, d)] for d in wanted}
        if self._waiting[connection_id] >= self._per_connection:
            raise StripeUnavailableError(f"{self._per_connection} fetches of this connection's discounts are under "
                                         "way already")
        self._waiting[connection_id] += 1
        try:
            async with asyncio.timeout(self._timeout_s):
                found = await self._fetch(connection_id, livemode, subscription_id)
        except TimeoutError:
            raise StripeUnavailableError(f"Stripe did not return the subscription's discounts within "
                                         f"{self._timeout_s:g} s") from None
        finally:
            self._waiting[connection_id] -= 1
            if not self._waiting[connection_id]:
                del self._waiting[connection_id]
        for discount_id, discount in found.items():
            self._known[(connection_id, discount_id)] = discount
            self._known.move_to_end((connection_id, discount_id))
        while len(self._known) > self._max:
            self._known.popitem(last=False)
        return found

    async def _fetch(self, connection_id: str, livemode: bool, subscription_id: str) -> Discounts:
        stored = await self._store.load_key(connection_id)
        if stored is None:
            raise KeyInvalidError("the connection has no key to read the discounts with")
        reader = self._readers.reader(stored[0], connection_id, livemode, quick=True)
        try:
            return await fetch_discounts(reader, subscription_id)
        finally:
            await reader.close()
