"""One page of a list, fetched for the import (`fetch_page`) and filled in with what Stripe does not list
(`filled_in`).

Subscriptions pages lack their tiered prices' tiers and some coupons (an item's discount's, named by id; a forever
coupon's products); customers pages their discounts' coupons' products: the importer asks for them as the receiver
and the poller do, before the page pool reads the page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from ingestor.envelope.coupons import coupons_laid_in, coupons_wanted
from ingestor.envelope.discounts import Expanded, Unexpanded, tiers_laid_in, tiers_missing
from ingestor.sources.key_session import KeySession
from ingestor.stripe_api.client import PageBody, StripeReader
from ingestor.stripe_api.discounts import fetch_expanded

TIERED = b'"tiered"'  # in a subscriptions page's body: a tiered price (or plan) whose tiers Stripe did not list
DISCOUNTED = b'"source"'  # and a discount (a subscription's or customer's): its coupon by id, without its products


@dataclass(frozen=True, slots=True)
class Page:
    """One fetched page: the body Stripe sent, when the request that returned it was sent (Stripe read the objects
    after that: their snapshots are dated by it), and how long Stripe took."""

    body: bytes
    asked_at: datetime
    latency_s: float = 0.0


async def fetch_page(session: KeySession, resource: str, query: dict[str, Any], clock: Callable[[], float]) -> Page:
    """A page of `resource` listed with `query` through the connection's session, dated by when its request was
    sent after the budget's wait (`clock`: wall time)."""
    async def request(reader: StripeReader) -> PageBody:
        return await reader.list_page_body(resource, query)

    body = await session.call(request)
    return Page(body.body, datetime.fromtimestamp(clock() - body.latency_s, tz=timezone.utc), body.latency_s)


async def filled_in(session: KeySession, resource: str, page: Page, known: Expanded) -> Page:
    """The page, filled in where its body names what Stripe does not list (`known`, by price and coupon id, grows)."""
    if (resource == "subscriptions" and (TIERED in page.body or DISCOUNTED in page.body)) or \
            (resource == "customers" and DISCOUNTED in page.body):
        return await _filled_in(session, page, known)
    return page


async def _filled_in(session: KeySession, page: Page, known: Expanded) -> Page:
    """A subscriptions page with its tiered prices' tiers and its coupons (an item's discount's, named by id; a
    forever coupon's products) laid in (`known`, by price and coupon id, grows): Stripe lists none of them
    (`data.items.data.price.tiers`, `data.items.data.discounts.source.coupon` and
    `data.discounts.source.coupon.applies_to` are five levels of expansion or more, it takes four), so one
    subscription per price not known yet is retrieved with its tiers, and each coupon not known yet with its
    products, as the receiver and the poller do. A customers page: each customer's discount's coupon (by id in a
    list) with its products. A page that is not a list is left for the page pool to judge; a price or coupon a
    retrieve does not give stays without (unreadable, in health)."""
    try:
        decoded = orjson.loads(page.body)
        listed = decoded["data"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return page
    if not isinstance(listed, list):
        return page
    for obj in listed:
        kind = obj.get("object") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None
        if kind not in ("subscription", "customer"):
            continue
        missing = Unexpanded(tiered_prices=tuple(tiers_missing(obj)),
                             coupons=tuple(coupons_wanted(obj))).beyond(known)
        if missing:
            async def retrieve(reader: StripeReader, owner: str = obj["id"], wanted: Unexpanded = missing,
                               object_type: str = str(kind)) -> Expanded:
                return await fetch_expanded(reader, owner, wanted, known.coupons, object_type=object_type,
                                            known_refused=known.no_tiers)

            known.add(await session.call(retrieve))
    filled = [coupons_laid_in(tiers_laid_in(o, known.tiers), known.coupons) if isinstance(o, dict) else o
              for o in listed]
    return Page(orjson.dumps({**decoded, "data": filled}), page.asked_at, page.latency_s)
