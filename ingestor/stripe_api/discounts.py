"""Fetching what a subscription event leaves unexpanded: its and its items' discounts, their coupons with the
products they reduce, its tiered prices' tiers.

One retrieve of the subscription, expanding only what is wanted — discounts with their coupons and the coupons'
products, its items' discounts (`expand[]=discounts&expand[]=discounts.source.coupon&expand[]=discounts.source.
coupon.applies_to&expand[]=items.data.discounts`; this needs the restricted key's coupon permission), tiers with
`expand[]=items.data.price.tiers` — then one retrieve per coupon still not there (`GET /v1/coupons/{id}?expand[]=
applies_to`: an item's discount's coupon, five levels down, or a forever coupon embedded in an older version's event
without its products) and per tiered price the subscription has left since (`GET /v1/prices/{id}?expand[]=tiers`:
an event of its time on that price; the key's Prices permission, optional), through the connection's reader and
within its account's budget. A coupon deleted at Stripe
since (404; deleting a coupon stops new redemptions only) is read from the subscription's discounts that still apply
it. A discount's coupon, a coupon's products and a price's tiers never change (Stripe prices are immutable in their
amounts), so what was fetched is kept per connection (bounded); so is a price a subscription has left that Stripe
refused alone (a 404 until forgotten, a 403 for `REFUSED_PRICE_FORGOTTEN_S`), which each event naming it asked for
again.

The receiver waits for it while Stripe waits for our answer, and a tenant signs its own webhooks: it can send
discounts or prices nobody fetched yet, as fast as it likes. So a fetch is given up after `timeout_s`, and a
connection has at most `per_connection` fetches waiting: beyond that a delivery is answered 503 at once (Stripe
delivers it again later), rather than queueing behind the account's budget with its body held in our memory.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from ingestor.connections.store import PostgresConnectionStore
from ingestor.envelope.coupons import coupons_laid_in, coupons_wanted
from ingestor.envelope.discounts import Expanded, Unexpanded, expanded_in
from ingestor.errors import ObjectMissingError, PermissionMissingError, StripeUnavailableError
from ingestor.stripe_api.catalog import CUSTOMER_DISCOUNT_EXPANSION, DISCOUNT_EXPANSIONS, TIER_EXPANSIONS
from ingestor.stripe_api.client import StripeReader
from ingestor.stripe_api.readers import StripeReaders
from plumbing.logs import get_logger

log = get_logger(__name__)
# What of a coupon is kept (and remembered): what MRR reads, not its name or metadata (up to 25 KB each).
COUPON_FIELDS = frozenset({"id", "object", "duration", "duration_in_months", "percent_off", "amount_off", "currency",
                           "currency_options", "applies_to", "livemode", "created", "valid"})
# The most coupons one subscription's fill-in asks Stripe for (Stripe allows 20 discounts on a subscription and on
# each item): a tenant signs its own webhooks, and each coupon id named is a request of its budget and our time.
MAX_COUPONS_ASKED = 40
# The most prices one event's fill-in asks Stripe for alone (a subscription has at most 20 items).
MAX_PRICES_ASKED = 20
# How long the receiver believes a price refused for want of the key's Prices permission (403): the permission can
# be given to the same key in Stripe's Dashboard, and events read after that should count. A price Stripe does not
# have (404: a plan deleted, or an id a tenant's own webhook made up) is not asked for again.
REFUSED_PRICE_FORGOTTEN_S = 300.0


def expansions_for(wanted: Unexpanded) -> list[str]:
    """The `expand[]` of a retrieve of the subscription that gives what `wanted` names."""
    return [*(DISCOUNT_EXPANSIONS if wanted.discounts else ()), *(TIER_EXPANSIONS if wanted.tiered_prices else ())]


async def fetch_expanded(reader: StripeReader, object_id: str, wanted: Unexpanded,
                         known_coupons: Mapping[str, Any] = MappingProxyType({}),
                         on_coupon: Callable[[str, dict[str, Any]], None] | None = None,
                         object_type: str = "subscription",
                         on_tiers: Callable[[str, list[Any]], None] | None = None,
                         on_refused: Callable[[str, str], None] | None = None,
                         known_refused: Mapping[str, str] = MappingProxyType({})) -> Expanded:
    """Returns what `wanted` names: from a retrieve of the subscription expanded for it (when it wants discounts or
    tiers), its and its items' discounts by id and its tiered prices' tiers by price id (a price the retrieve does not
    give asked for alone, unless `known_refused` says Stripe refused it alone); and the coupons (with their
    products) it names and its discounts name, but those `known_coupons` (coupon id → coupon) holds, laid into the
    discounts. Each coupon is given to `on_coupon`, and the tiers of each price asked for alone to `on_tiers`, as it
    comes (kept even when the caller gives up waiting). For a customer (`object_type`), its discount's coupon only.
    Raises IngestError subclasses."""
    found = Expanded()
    if object_type == "subscription" and (wanted.discounts or wanted.tiered_prices):
        found = expanded_in(await _retrieved(reader, "subscriptions", object_id, {"expand": expansions_for(wanted)}))
        def refused(price_id: str, reason: str) -> None:
            found.no_tiers[price_id] = reason
            if on_refused is not None:
                on_refused(price_id, reason)

        alone = [p for p in wanted.tiered_prices if p not in found.tiers]
        found.no_tiers.update({p: known_refused[p] for p in alone if p in known_refused})  # not asked alone again
        found.tiers.update(await _tiers_of_prices(reader, [p for p in alone if p not in known_refused], refused,
                                                  on_tiers))
    asked = list(dict.fromkeys((*wanted.coupons, *coupons_wanted({"discounts": list(found.discounts.values())}))))
    had = {c: known_coupons[c] for c in asked if c in known_coupons}  # read now: the memory may forget meanwhile
    missing = [c for c in asked if c not in had]
    if len(missing) > MAX_COUPONS_ASKED:
        log.warning("a subscription names more coupons than are asked for at once; the rest stay unknown (its MRR "
                    "refused by name)", object_type=object_type, object_id=object_id, coupons=len(missing))
    gone: list[str] = []

    def keep(coupon_id: str, coupon: dict[str, Any]) -> None:
        found.coupons[coupon_id] = coupon
        if on_coupon is not None:
            on_coupon(coupon_id, coupon)

    for coupon_id in missing[:MAX_COUPONS_ASKED]:
        coupon = await _coupon(reader, coupon_id)
        if coupon is None:
            gone.append(coupon_id)
        else:
            keep(coupon_id, coupon)
    if gone:
        deleted = _coupons_on_customer if object_type == "customer" else _coupons_on_subscription
        for coupon_id, coupon in (await deleted(reader, object_id, gone)).items():
            keep(coupon_id, coupon)
    every = {**had, **found.coupons}
    laid_in = {i: coupons_laid_in({"discounts": [d]}, every)["discounts"][0] for i, d in found.discounts.items()}
    # A discount whose coupon is still an id (gone from Stripe) is neither laid in nor remembered: the event keeps
    # its id, and the projector refuses the subscription's MRR by name.
    found.discounts = {i: d for i, d in laid_in.items() if not _coupon_by_id(d)}
    return found


async def _retrieved(reader: StripeReader, resource: str, object_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """The object, or {} when Stripe no longer has it (404; a test account's data deleted, an id a tenant made up in
    its own signed webhook): what it would have given stays unknown and the event is refused by name in health.
    Raised, it failed the delivery (503) and every poll of the connection for good, the poller's cursor held before
    it: asked again, it is still missing."""
    try:
        return await reader.retrieve_raw(resource, object_id, params)
    except ObjectMissingError:
        log.warning("Stripe no longer has what an event names: what it would fill in stays unknown (the event is "
                    "refused by name in health)", resource=resource, object_id=object_id)
        return {}


async def _tiers_of_prices(reader: StripeReader, price_ids: list[str], on_refused: Callable[[str, str], None],
                           on_tiers: Callable[[str, list[Any]], None] | None = None) -> dict[str, list[Any]]:
    """The tiers of tiered prices the subscription no longer has (an event of the time before it moved to another
    price), each asked for alone (`GET /v1/prices/{id}?expand[]=tiers`; a price's tiers never change). Without the
    key's Prices permission, or for a plan deleted since, a price stays without them: the event is refused by name
    (in health), and the connection goes on — the permission is optional, never a reason to stop reading. Each
    Stripe refused is given to `on_refused` (price id, "missing" or "forbidden") as it comes, so the caller does not
    ask again for each event naming it, even when it gives up waiting."""
    if len(price_ids) > MAX_PRICES_ASKED:
        log.warning("a subscription event names more tiered prices than are asked for at once; the rest stay "
                    "unknown (the event refused by name)", prices=len(price_ids))
    found: dict[str, list[Any]] = {}
    for i, price_id in enumerate(price_ids[:MAX_PRICES_ASKED]):
        try:
            price = await reader.retrieve_raw("prices", price_id, {"expand": ["tiers"]})
        except ObjectMissingError:
            on_refused(price_id, "missing")
            continue
        except PermissionMissingError:
            log.warning("a subscription event names a tiered price its subscription no longer has, and the key cannot "
                        "read prices (the Prices permission): the event stays unreadable", price_id=price_id)
            for unasked in price_ids[i:MAX_PRICES_ASKED]:
                on_refused(unasked, "forbidden")
            break  # none of the others would be answered either
        tiers = price.get("tiers")
        if price.get("id") == price_id and isinstance(tiers, list) and tiers:
            found[price_id] = tiers
            if on_tiers is not None:  # kept as it comes: a caller that gives up waiting does not ask again
                on_tiers(price_id, tiers)
    return found


def _trimmed(coupon: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in coupon.items() if k in COUPON_FIELDS}


def _coupon_by_id(discount: Mapping[str, Any]) -> bool:
    source = discount.get("source")
    return isinstance(discount.get("coupon"), str) or (isinstance(source, Mapping)
                                                       and isinstance(source.get("coupon"), str))


async def _coupon(reader: StripeReader, coupon_id: str) -> dict[str, Any] | None:
    """A coupon with its `applies_to` (None: every product), or None when Stripe no longer has it or does not say."""
    try:
        coupon = await reader.retrieve_raw("coupons", coupon_id, {"expand": ["applies_to"]})
    except ObjectMissingError:
        return None
    if "applies_to" not in coupon:
        log.warning("Stripe answered a coupon asked for its products without them", coupon_id=coupon_id)
        return None
    return _trimmed(coupon)


async def _coupons_on_subscription(reader: StripeReader, subscription_id: str,
                                   coupon_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Coupons deleted at Stripe, as the subscription's discounts still hold them (Stripe keeps a deleted coupon on
    the discounts that applied it): a retrieve with `expand[]=discounts.source.coupon.applies_to` (four levels,
    Stripe's most). A coupon not there (an item's discount, or one removed since) stays unknown, and the
    subscription's MRR is refused by name rather than counted on a guess."""
    sub = await _retrieved(reader, "subscriptions", subscription_id, {"expand": list(DISCOUNT_EXPANSIONS)})
    listed = sub.get("discounts")
    found = {}
    for discount in listed if isinstance(listed, list) else []:
        source = discount.get("source") if isinstance(discount, Mapping) else None
        coupon = source.get("coupon") if isinstance(source, Mapping) else None
        if isinstance(coupon, dict) and coupon.get("id") in coupon_ids and "applies_to" in coupon:
            found[coupon["id"]] = _trimmed(coupon)
    for coupon_id in coupon_ids:
        if coupon_id not in found:
            log.warning("a coupon is gone from Stripe and from its subscription's discounts: what it takes off and "
                        "from which products cannot be read, so the subscription's MRR will be refused",
                        coupon_id=coupon_id, subscription_id=subscription_id)
    return found


async def _coupons_on_customer(reader: StripeReader, customer_id: str,
                               coupon_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Coupons deleted at Stripe, as the customer's discount still holds it (`expand[]=discount.source.coupon.
    applies_to`); one not there stays unknown, and the customer's discount is refused by name in health."""
    customer = await _retrieved(reader, "customers", customer_id, {"expand": [CUSTOMER_DISCOUNT_EXPANSION]})
    discount = customer.get("discount")
    source = discount.get("source") if isinstance(discount, Mapping) else None
    coupon = source.get("coupon") if isinstance(source, Mapping) else None
    if isinstance(coupon, dict) and coupon.get("id") in coupon_ids and "applies_to" in coupon:
        return {coupon["id"]: _trimmed(coupon)}
    log.warning("a coupon is gone from Stripe and from its customer's discount: the customer's discount will be "
                "counted in health, not in its subscriptions' MRR", customer_id=customer_id, coupons=len(coupon_ids))
    return {}


class StripeDiscounts:
    """Discounts, tiers and coupons fetched with a connection's stored key (for the receiver), remembered
    per connection: at most `max_per_connection` things for one connection (a tenant naming coupons or discounts
    that do not exist, as fast as it likes, forgets its own first) and `max_remembered` in all (the least recently
    used connection's first)."""

    def __init__(self, store: PostgresConnectionStore, readers: StripeReaders, timeout_s: float = 5.0,
                 per_connection: int = 16, max_remembered: int = 10_000, max_per_connection: int = 1_000,
                 clock: Callable[[], float] = time.monotonic):
        self._store = store
        self._clock = clock
        self._readers = readers
        self._timeout_s = timeout_s
        self._per_connection = per_connection
        self._max = max_remembered
        self._max_per_connection = max_per_connection
        # connection → (kind: "discount", "tiers", "coupon" or "no_tiers"; discount, price or coupon id) → the
        # discount, the price's tiers, the coupon (with its products), or why Stripe refused the price and until when
        # that is believed; least recently used first, on both levels
        self._known: OrderedDict[str, OrderedDict[tuple[str, str], Any]] = OrderedDict()
        self._size = 0
        self._waiting: Counter[str] = Counter()  # fetches under way, per connection

    async def for_object(self, connection_id: str, livemode: bool, object_type: str, object_id: str,
                         wanted: Unexpanded) -> Expanded:
        """Returns what of `wanted` is remembered or Stripe still knows. Raises IngestError subclasses: a
        StripeUnavailableError when the connection has `per_connection` fetches waiting already, or when Stripe (or
        the account's budget) has not answered within `timeout_s` (the coupons' products found by then are kept)."""
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
                found = await self._fetch(connection_id, livemode, object_type, object_id, missing, known.no_tiers)
        except TimeoutError:
            raise StripeUnavailableError(f"Stripe did not return the subscription's discounts or tiers within "
                                         f"{self._timeout_s:g} s") from None
        finally:
            self._waiting[connection_id] -= 1
            if not self._waiting[connection_id]:
                del self._waiting[connection_id]
        # A discount whose forever coupon is still without its products (Stripe answered without, or more coupons
        # than are asked at once) is used for this delivery but not remembered: the next one asks again.
        complete = {i: d for i, d in found.discounts.items() if not coupons_wanted({"discounts": [d]})}
        for kind, by_id in (("discount", complete), ("tiers", found.tiers), ("coupon", found.coupons)):
            for found_id, value in by_id.items():
                self._remember(connection_id, kind, found_id, value)
        known.add(found)
        return known

    def _remembered(self, connection_id: str, wanted: Unexpanded) -> Expanded:
        known = Expanded()
        entries = self._known.get(connection_id)
        if entries is None:
            return known
        self._known.move_to_end(connection_id)
        for kind, ids, into in (("discount", wanted.discounts, known.discounts),
                                ("tiers", wanted.tiered_prices, known.tiers),
                                ("coupon", wanted.coupons, known.coupons)):
            for found_id in ids:
                if (kind, found_id) in entries:
                    into[found_id] = entries[(kind, found_id)]
                    entries.move_to_end((kind, found_id))
        now = self._clock()
        for price_id in wanted.tiered_prices:
            refused = entries.get(("no_tiers", price_id))
            if refused is not None and refused[1] > now:
                known.no_tiers[price_id] = refused[0]
                entries.move_to_end(("no_tiers", price_id))
        return known

    def _remember_refused(self, connection_id: str, price_id: str, reason: str) -> None:
        """A price Stripe refused: a 404 believed until forgotten (bounded, least recently used first), a 403 for
        `REFUSED_PRICE_FORGOTTEN_S` (the Prices permission can be given to the same key)."""
        until = self._clock() + (REFUSED_PRICE_FORGOTTEN_S if reason == "forbidden" else math.inf)
        self._remember(connection_id, "no_tiers", price_id, (reason, until))

    def _remember(self, connection_id: str, kind: str, found_id: str, value: Any) -> None:
        entries = self._known.setdefault(connection_id, OrderedDict())
        self._known.move_to_end(connection_id)
        if (kind, found_id) not in entries:
            self._size += 1
        entries[(kind, found_id)] = value
        entries.move_to_end((kind, found_id))
        if len(entries) > self._max_per_connection:
            entries.popitem(last=False)
            self._size -= 1
        while self._size > self._max:
            oldest_connection, oldest = next(iter(self._known.items()))
            oldest.popitem(last=False)
            self._size -= 1
            if not oldest:
                del self._known[oldest_connection]

    async def _fetch(self, connection_id: str, livemode: bool, object_type: str, object_id: str,
                     wanted: Unexpanded, known_refused: Mapping[str, str]) -> Expanded:
        stored = await self._store.load_key_unless_refused(connection_id)  # KeyInvalidError: refused already
        if stored is None:  # a connection being set up or taken down: Stripe delivers again
            raise StripeUnavailableError("the connection has no key to read the discounts and tiers with")
        reader = self._readers.reader(stored[0], connection_id, livemode, quick=True)
        try:
            return await fetch_expanded(
                reader, object_id, wanted, _RememberedCoupons(self._known.get(connection_id, {})),
                on_coupon=lambda coupon_id, coupon: self._remember(connection_id, "coupon", coupon_id, coupon),
                object_type=object_type,
                on_tiers=lambda price_id, tiers: self._remember(connection_id, "tiers", price_id, tiers),
                on_refused=lambda price_id, reason: self._remember_refused(connection_id, price_id, reason),
                known_refused=known_refused)
        finally:
            await reader.close()


class _RememberedCoupons(Mapping[str, Any]):
    """One connection's remembered coupons (coupon id → the coupon with its products): the coupons a subscription's
    discounts bring are not asked for again when another subscription brought them."""

    def __init__(self, entries: Mapping[tuple[str, str], Any]):
        self._entries = entries

    def __getitem__(self, coupon_id: str) -> Any:
        return self._entries[("coupon", coupon_id)]

    def __iter__(self) -> Iterator[str]:
        return (found_id for kind, found_id in list(self._entries) if kind == "coupon")

    def __len__(self) -> int:
        return sum(1 for _ in self)
