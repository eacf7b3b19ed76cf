"""Fetching what a subscription event leaves unexpanded: its discounts with their coupons, its tiered prices' tiers,
its forever coupons' products.

One retrieve of the subscription, expanding only what is wanted — discounts with
`expand[]=discounts&expand[]=discounts.source.coupon` (this needs the restricted key's coupon permission), tiers
with `expand[]=items.data.price.tiers` — then one retrieve per forever coupon whose products are not known
(`expand[]=applies_to`: five levels below a subscription, more than Stripe expands), through the connection's
reader and within its account's budget. A discount's coupon, a coupon's products and a price's tiers never change
(Stripe prices are immutable in their amounts), so what was fetched is kept per connection (bounded).

The receiver waits for it while Stripe waits for our answer, and a tenant signs its own webhooks: it can send
discounts or prices nobody fetched yet, as fast as it likes. So a fetch is given up after `timeout_s`, and a
connection has at most `per_connection` fetches waiting: beyond that a delivery is answered 503 at once (Stripe
delivers it again later), rather than queueing behind the account's budget with its body held in our memory.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from ingestor.connections.store import PostgresConnectionStore
from ingestor.envelope.coupons import COUPON_GONE, coupons_without_products, products_laid_in
from ingestor.envelope.discounts import Expanded, Unexpanded, expanded_in
from ingestor.errors import KeyInvalidError, ObjectMissingError, StripeUnavailableError
from ingestor.stripe_api.catalog import DISCOUNT_EXPANSIONS, TIER_EXPANSIONS
from ingestor.stripe_api.client import StripeReader
from ingestor.stripe_api.readers import StripeReaders
from plumbing.logs import get_logger

log = get_logger(__name__)


def expansions_for(wanted: Unexpanded) -> list[str]:
    """The `expand[]` of a retrieve of the subscription that gives what `wanted` names."""
    return [*(DISCOUNT_EXPANSIONS if wanted.discounts else ()), *(TIER_EXPANSIONS if wanted.tiered_prices else ())]


async def fetch_expanded(reader: StripeReader, subscription_id: str, wanted: Unexpanded,
                         known_products: Mapping[str, Any] = MappingProxyType({})) -> Expanded:
    """Returns what `wanted` names: from a retrieve of the subscription expanded for it (when it wants discounts or
    tiers), its discounts (with their coupons) by id and its tiered prices' tiers by price id; and the products of
    the forever coupons it names and of those its discounts bring, but those `known_products` (coupon id →
    `applies_to`) holds, laid into the discounts. Raises IngestError subclasses."""
    found = Expanded()
    if wanted.discounts or wanted.tiered_prices:
        found = expanded_in(await reader.retrieve_raw(
            "subscriptions", subscription_id, {"expand": expansions_for(wanted)}))
    brought = coupons_without_products({"discounts": list(found.discounts.values())})
    for coupon_id in dict.fromkeys(c for c in (*wanted.coupons, *brought) if c not in known_products):
        found.applies_to[coupon_id] = await _applies_to(reader, coupon_id)
    every = {c: found.applies_to.get(c, known_products.get(c, COUPON_GONE)) for c in brought}
    found.discounts = {i: products_laid_in({"discounts": [d]}, every)["discounts"][0]
                       for i, d in found.discounts.items()}
    return found


async def _applies_to(reader: StripeReader, coupon_id: str) -> Any:
    """A coupon's `applies_to` (None: every product), or COUPON_GONE when Stripe no longer has the coupon (the
    subscription's MRR is then refused by the projector, by name, rather than counted on a guess)."""
    try:
        coupon = await reader.retrieve_raw("coupons", coupon_id, {"expand": ["applies_to"]})
    except ObjectMissingError:
        log.warning("a forever coupon on a subscription no longer exists at Stripe: which products it reduces "
                    "cannot be read, so the subscription's MRR will be refused", coupon_id=coupon_id)
        return COUPON_GONE
    if "applies_to" not in coupon:
        raise StripeUnavailableError("Stripe answered a coupon asked with expand[]=applies_to without applies_to")
    return coupon["applies_to"]


class StripeDiscounts:
    """Discounts and tiers fetched with a connection's stored key (for the receiver), remembered per connection."""

    def __init__(self, store: PostgresConnectionStore, readers: StripeReaders, timeout_s: float = 5.0,
                 per_connection: int = 16, max_remembered: int = 10_000):
        self._store = store
        self._readers = readers
        self._timeout_s = timeout_s
        self._per_connection = per_connection
        self._max = max_remembered
        # (connection, "discount", "tiers" or "applies_to", discount, price or coupon id) → the discount, the price's
        # tiers, or the coupon's applies_to
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
                                ("tiers", wanted.tiered_prices, known.tiers),
                                ("applies_to", wanted.coupons, known.applies_to)):
            for found_id in ids:
                if (connection_id, kind, found_id) in self._known:
                    into[found_id] = self._known[(connection_id, kind, found_id)]
        return known

    def _remember(self, connection_id: str, found: Expanded) -> None:
        for kind, by_id in (("discount", found.discounts), ("tiers", found.tiers), ("applies_to", found.applies_to)):
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
            remembered = _RememberedProducts(self._known, connection_id)
            return await fetch_expanded(reader, subscription_id, wanted, remembered)
        finally:
            await reader.close()


class _RememberedProducts(Mapping[str, Any]):
    """One connection's remembered coupon products (coupon id → `applies_to`), looked up in the shared memory: the
    coupons a subscription's discounts bring are not asked for again when another subscription brought them."""

    def __init__(self, known: Mapping[tuple[str, str, str], Any], connection_id: str):
        self._known = known
        self._connection_id = connection_id

    def __getitem__(self, coupon_id: str) -> Any:
        return self._known[(self._connection_id, "applies_to", coupon_id)]

    def __iter__(self) -> Iterator[str]:
        return (key[2] for key in list(self._known) if key[:2] == (self._connection_id, "applies_to"))

    def __len__(self) -> int:
        return sum(1 for _ in self)
