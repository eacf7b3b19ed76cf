"""Check against Stripe: what Stripe holds for a tenant and mode, compared with what the tables hold.

For a created range, per resource: Stripe's count of objects against ours, with the ids each side lacks;
and for the charges of the range, per currency, what revenue counts on both sides: the amount captured of
succeeded charges (gross) and the money refunded (Stripe's charges read by the same rules as ours,
`schemas.stripe_objects.read_charge`: an authorisation released is no refund in any version). Stripe's side is listed with the connection's key within its account's rate budget (the same
pages the importer reads, ids only kept); ours is read from the projection tables by SQL (their columns
are the read model's contract). Run on demand (control API, `ingestor reconcile`) and after every
import; each run is stored, the latest shown with the connection. `compare` is pure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import asyncpg
import orjson
import stripe as stripe_library

from ingestor.connections.store import PostgresConnectionStore
from ingestor.sources.key_session import KeySession
from ingestor.stripe_api.catalog import IMPORTED
from ingestor.stripe_api.client import RawPage, StripeReader
from ingestor.stripe_api.readers import StripeReaders
from plumbing.kafka import topic_end_offsets
from plumbing.postgres import translates_database_errors
from plumbing.settings import KafkaSettings
from schemas.stripe_objects import UnreadableObjectError, read_charge

MAX_IDS_SHOWN = 20
TABLES = {"customers": "customers", "charges": "charges", "subscriptions": "subscriptions",
          "invoices": "invoices", "payment_intents": "payment_intents"}


@dataclass
class Tally:
    """One side's view of a range: object ids per resource, and charge money per currency."""

    ids: dict[str, set[str]] = field(default_factory=dict)
    succeeded: dict[str, int] = field(default_factory=dict)  # currency → amount captured of succeeded charges
    refunded: dict[str, int] = field(default_factory=dict)  # currency → money refunded on those charges
    unreadable: set[str] = field(default_factory=set)  # Stripe's charges whose money cannot be derived


def tally_charge(tally: Tally, charge: Mapping[str, Any]) -> None:
    """Adds one charge's money to the tally: our row, or Stripe's charge read by the canonical rules (same fields:
    currency, status, captured, amount_captured, amount_refunded)."""
    if charge["status"] != "succeeded":
        return
    currency = charge["currency"]
    captured = charge["amount_captured"] if charge["captured"] else 0
    tally.succeeded[currency] = tally.succeeded.get(currency, 0) + captured
    tally.refunded[currency] = tally.refunded.get(currency, 0) + charge["amount_refunded"]


def tally_stripe_charge(tally: Tally, obj: Mapping[str, Any], api_version: str | None) -> None:
    """Adds a charge Stripe listed (in `api_version`), read as the projections read it; one whose money cannot be
    derived is named instead (the check then differs: never counted as 0)."""
    try:
        charge = read_charge(obj, api_version)
    except UnreadableObjectError:
        tally.unreadable.add(str(obj.get("id")))
        return
    tally_charge(tally, {"currency": charge.currency, "status": charge.status, "captured": charge.captured,
                         "amount_captured": charge.amount_captured, "amount_refunded": charge.amount_refunded})


def compare(stripe: Tally, ours: Tally) -> dict[str, Any]:
    """Returns the reconcile report: per resource counts and the ids missing on either side, per currency
    money, and whether everything matched."""
    resources = {}
    for name in TABLES:
        theirs, mine = stripe.ids.get(name, set()), ours.ids.get(name, set())
        resources[name] = {
            "stripe": len(theirs), "ours": len(mine),
            "missing_here": sorted(theirs - mine)[:MAX_IDS_SHOWN],
            "only_here": sorted(mine - theirs)[:MAX_IDS_SHOWN],
            "matches": theirs == mine,
        }
    money = {}
    for currency in sorted(set(stripe.succeeded) | set(ours.succeeded)):
        s = (stripe.succeeded.get(currency, 0), stripe.refunded.get(currency, 0))
        o = (ours.succeeded.get(currency, 0), ours.refunded.get(currency, 0))
        money[currency] = {"stripe": {"succeeded": s[0], "refunded": s[1]},
                           "ours": {"succeeded": o[0], "refunded": o[1]}, "matches": s == o}
    unreadable = sorted(stripe.unreadable)
    matches = (all(r["matches"] for r in resources.values()) and all(m["matches"] for m in money.values())
               and not unreadable)
    return {"matches": matches, "resources": resources, "charges_by_currency": money,
            "unreadable_at_stripe": unreadable[:MAX_IDS_SHOWN]}


async def tally_stripe(session: KeySession, window: tuple[int, int], page_limit: int = 100,
                       on_page: Callable[[str, int], None] | None = None) -> Tally:
    """Lists the five resources created in [start, end] with the connection's key; raises StopReading or
    IngestError like any read."""
    tally = Tally()
    for resource in IMPORTED:
        ids = tally.ids.setdefault(resource.name, set())
        query: dict[str, Any] = {"limit": page_limit, "created": {"gte": window[0], "lte": window[1]},
                                 **{k: v for k, v in resource.list_params.items() if k != "expand"}}
        while True:
            async def request(reader: StripeReader, q: dict[str, Any] = dict(query), name: str = resource.name) -> RawPage:
                return await reader.list_raw_page(name, q)

            page = await session.call(request)
            for obj in page.objects:
                ids.add(str(obj["id"]))
                if resource.name == "charges":
                    tally_stripe_charge(tally, obj, stripe_library.api_version)
            if on_page is not None:
                on_page(resource.name, len(page.objects))
            if not page.has_more or not page.objects:
                break
            query["starting_after"] = page.objects[-1]["id"]
    return tally


async def tally_ours(pool: asyncpg.Pool, tenant_id: str, livemode: bool, window: tuple[int, int]) -> Tally:
    """Reads the same range from the projection tables (deleted customers, which Stripe no longer lists, left out)."""
    tally = Tally()
    start, end = (datetime.fromtimestamp(t, tz=timezone.utc) for t in window)
    for resource, table in TABLES.items():
        deleted = " AND NOT deleted" if table in ("customers", "subscriptions", "invoices") else ""
        rows = await pool.fetch(
            f"SELECT id FROM projection.{table} WHERE tenant_id = $1 AND livemode = $2 "
            f"AND created BETWEEN $3 AND $4{deleted}", tenant_id, livemode, start, end)
        tally.ids[resource] = {r["id"] for r in rows}
    for row in await pool.fetch(
            "SELECT currency, status, captured, amount_captured, amount_refunded FROM projection.charges "
            "WHERE tenant_id = $1 AND livemode = $2 AND created BETWEEN $3 AND $4", tenant_id, livemode, start, end):
        tally_charge(tally, dict(row))
    return tally


@translates_database_errors
class PostgresReconcileRuns:
    """The stored reconcile runs of each connection."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    async def save(self, connection_id: str, window: tuple[int, int], reason: str, report: dict[str, Any]) -> None:
        """Stores one finished run."""
        await self._pool.execute(
            "INSERT INTO reconcile_runs (tenant_id, connection_id, window_start, window_end, reason, matches, report) "
            "SELECT tenant_id, $1, $2, $3, $4, $5, $6::jsonb FROM stripe_connections WHERE connection_id = $1",
            connection_id, window[0], window[1], reason, bool(report["matches"]), orjson.dumps(report).decode())

    async def latest(self, connection_id: str) -> dict[str, Any] | None:
        """Returns the connection's latest run, or None."""
        row = await self._pool.fetchrow(
            "SELECT window_start, window_end, reason, matches, report::text AS report, finished_at "
            "FROM reconcile_runs WHERE connection_id = $1 ORDER BY finished_at DESC LIMIT 1", connection_id)
        if row is None:
            return None
        return {"window": {"start": row["window_start"], "end": row["window_end"]}, "reason": row["reason"],
                "matches": row["matches"], "finished_at": row["finished_at"].isoformat(),
                **orjson.loads(row["report"])}


class Reconciler:
    """Runs a check of one connection against Stripe and stores it.

    Our side is read once the projector has applied everything on the raw topic when the run starts (an
    import's last page included), so a run compares Stripe with what was already delivered, not with a
    projection still catching up; it waits at most `projected_wait_s` for that.
    """

    def __init__(self, pool: asyncpg.Pool, store: PostgresConnectionStore, readers: StripeReaders,
                 kafka: KafkaSettings, clock: Callable[[], float] = time.time, projected_wait_s: float = 300.0):
        self._pool = pool
        self._store = store
        self._readers = readers
        self._kafka = kafka
        self._clock = clock
        self._projected_wait_s = projected_wait_s
        self.runs = PostgresReconcileRuns(pool)

    async def _projected(self, ends: Mapping[int, int]) -> bool:
        rows = await self._pool.fetch(
            "SELECT partition, next_offset FROM projection.consumer_positions WHERE consumer_group = $1 AND topic = $2",
            self._kafka.projector_group, self._kafka.raw_topic)
        done = {r["partition"]: r["next_offset"] for r in rows}
        return all(done.get(partition, 0) >= end for partition, end in ends.items() if end > 0)

    async def wait_projected(self) -> bool:
        """Waits until the projector has applied what the raw topic holds now; returns False on timeout."""
        ends = await topic_end_offsets(self._kafka, self._kafka.raw_topic)
        deadline = time.monotonic() + self._projected_wait_s
        while not await self._projected(ends):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)
        return True

    async def run(self, connection_id: str, window: tuple[int, int], reason: str,
                  on_page: Callable[[str, int], None] | None = None) -> dict[str, Any]:
        """Compares Stripe and our tables over `window` and stores the report; raises StopReading or IngestError."""
        connection = await self._store.get_connection(connection_id)
        if connection is None:
            raise LookupError(f"no connection {connection_id}")
        caught_up = await self.wait_projected()
        session = KeySession(connection, self._store, self._readers, self._clock)
        try:
            stripe = await tally_stripe(session, window, on_page=on_page)
        finally:
            await session.close()
        report = compare(stripe, await tally_ours(self._pool, connection.tenant_id, connection.livemode, window))
        report["projection_caught_up"] = caught_up
        await self.runs.save(connection_id, window, reason, report)
        return report
