"""Fetching what a subscription event leaves unexpanded: its discounts with their coupons, its tiered prices' tiers.

One retrieve of the subscription, expanding only what is wanted — discounts with
`expand[]=discounts&expand[]=discounts.source.coupon` (this needs the restricted key's coupon permission), tiers
with `expand[]=items.data.price.tiers` — through the connection's reader and within its account's budget. A
discount's coupon and a price's tiers never change (Stripe prices are immutable in their amounts), so what was
fetched is kept per connection (bounded).

The receiver waits for it while Stripe waits for our answer, and a tenant signs its own webhooks: it can send
discounts or prices nobody fetched yet, as fast as it likes. So a fetch is given up after `timeout_s`, and a
connection has at most `per_connection` fetches waiting: beyond that a delivery is answered 503 at once (Stripe
delivers it again later), rather than queueing behind the account's budget with its body held in our memory.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from typing import Any

from ingestor.connections.store import PostgresConnectionStore
from ingestor.envelope.discounts import Expanded, Unexpanded, expanded_in
from ingestor.errors import KeyInvalidError, StripeUnavailableError
from ingestor.stripe_api.catalog import DISCOUNT_EXPANSIONS, TIER_EXPANSIONS
from ingestor.stripe_api.client import StripeReader
from ingestor.stripe_api.readers import StripeReaders


def expansions_for(wanted: Unexpanded) -> list[str]:
    """The `expand[]` of a retrieve of the subscription that gives what `wanted` names."""
    return [*(DISCOUNT_EXPANSIONS if wanted.discounts else ()), *(TIER_EXPANSIONS if wanted.tiered_prices else ())]


async def fetch_expanded(reader: StripeReader, subscription_id: str, wanted: Unexpanded) -> Expanded:
    """Returns what one retrieve of the subscription, expanded for `wanted`, gives: its discounts (with their
    coupons) by id, its tiered prices' tiers by price id. Raises IngestError subclasses."""
    sub = await reader.retrieve_raw("subscriptions", subscription_id, {"expand": expansions_for(wanted)})
    return expanded_in(sub)


class StripeDiscounts:
    """Discounts and tiers fetched with a connection's stored key (for the receiver), remembered per connection."""

    def __init__(self, store: PostgresConnectionStore, readers: StripeReaders, timeout_s: float = 5.0,
                 per_connection: int = 16, max_remembered: int = 10_000):
        self._store = store
        self._readers = readers
        self._timeout_s = timeout_s
        self._per_connection = per_connection
        self._max = max_remembered
        # (connection, "discount" or "tiers", discount or price id) → the discount, or the price's tiers
        self._known: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        self._waiting: Counter[str] = Counter()  # fetches under way, per connection

    async def for_subscription(self, connection_id: str, livemode: bool, subscription_id: str,
                               wanted: Unexpanded) -> Expanded:
        """Returns what of `wanted` is remembered or Stripe still knows. Raises IngestError subclasses: a
        StripeUnavailableError when the connection has `per_connection` fetches waiting already, or when Stripe (or
        the account's budget) has not answered within `timeout_s`."""
        known = self._remembered(connection_id, wanted)
        missing = wanted.beyond(known)
        if not missing:
            return known
        if self._waiting[connection_id] >= self._per_connection:
            raise StripeUnavailableError(f"{self._per_connection} fetches of this connection's discounts or tiers "
                                         "are under way already")
        self._waiting[connection_id] += 1
        try:
            async with asyncio.timeout(self._timeout_s):
                found = await self._fetch(connection_id, livemode, subscription_id, missing)
        except TimeoutError:
            raise StripeUnavailableError(f"Stripe did not return the subscription's discounts or tiers within "
                                         f"{self._timeout_s:g} s") from None
        finally:
            self._waiting[connection_id] -= 1
            if not self._waiting[connection_id]:
                del self._waiting[connection_id]
        self._remember(connection_id, found)
        known.add(found)
        return known

    def _remembered(self, connection_id: str, wanted: Unexpanded) -> Expanded:
        known = Expanded()
        for kind, ids, into in (("discount", wanted.discounts, known.discounts),
                                ("tiers", wanted.tiered_prices, known.tiers)):
            for found_id in ids:
                if (connection_id, kind, found_id) in self._known:
                    into[found_id] = self._known[(connection_id, kind, found_id)]
        return known

    def _remember(self, connection_id: str, found: Expanded) -> None:
        for kind, by_id in (("discount", found.discounts), ("tiers", found.tiers)):
            for found_id, value in by_id.items():
                self._known[(connection_id, kind, found_id)] = value
                self._known.move_to_end((connection_id, kind, found_id))
        while len(self._known) > self._max:
            self._known.popitem(last=False)

    async def _fetch(self, connection_id: str, livemode: bool, subscription_id: str, wanted: Unexpanded) -> Expanded:
        stored = await self._store.load_key(connection_id)
        if stored is None:
            raise KeyInvalidError("the connection has no key to read the discounts and tiers with")
        reader = self._readers.reader(stored[0], connection_id, livemode, quick=True)
        try:
            return await fetch_expanded(reader, subscription_id, wanted)
        finally:
            await reader.close()
