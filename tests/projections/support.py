"""Helpers for projection tests: feed simulator history through Kafka, read the tables back."""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry

from ingestor.envelope.build import envelope_for_event, is_read_resource
from ingestor.envelope.discounts import Expanded, expanded_in, unexpanded, with_expanded
from plumbing.kafka import KafkaPublisher
from plumbing.settings import Settings
from projections.handlers.writes import writes_for
from projections.projector.consumer import RevenueProjector
from projections.projector.metrics import ProjectorMetrics
from projections.projector.store import PostgresProjectionStore
from projections.read.client import ReaderCredentials
from schemas import Envelope, EnvelopeCodec, Source, envelope_key
from stripe_sim import SimServer
from stripe_sim.model import Store
from stripe_sim.render import CURRENT_VERSION, expand_discounts, expand_item_discounts, render, render_event

RECEIVED = datetime(2026, 1, 1, tzinfo=timezone.utc)


def history_envelopes(sim: SimServer, account_id: str, tenant_id: str, livemode: bool = False,
                      version_of: Callable[[dict[str, Any]], str | None] = lambda event: None) -> list[Envelope]:
    """Every event the simulator emitted for the account, as webhook envelopes, oldest first: each rendered
    at its own API version (or at `version_of(event)`), its discounts named by id and its forever coupons'
    products filled in as the receiver does it (from a retrieve of the subscription with its discounts and
    coupons expanded, and of each coupon with its `applies_to`)."""
    store = sim.state.accounts[account_id].store(livemode)
    envelopes = []
    for stored in reversed(store.all("event")):
        event = render_event(stored, version_of(stored))
        if not is_read_resource(event):
            continue
        wanted = unexpanded(event)
        if wanted.discounts or wanted.coupons:
            discounts = discounts_as_retrieved(store, str(event["data"]["object"]["id"])) if wanted.discounts else {}
            event = with_expanded(event, Expanded(discounts, coupons=coupons_as_retrieved(store)))
        envelopes.append(envelope_for_event(event, tenant_id, Source.WEBHOOK, RECEIVED))
    return envelopes


async def apply_all(store: PostgresProjectionStore, envelopes: Sequence[Envelope], batch: int = 500) -> None:
    """Applies the envelopes to the projection store in batches of `batch`, in the order given."""
    for start in range(0, len(envelopes), batch):
        chunk = envelopes[start:start + batch]
        await store.apply([(e.tenant_id, e.event_id, writes_for(e)) for e in chunk], {})


def discounts_as_retrieved(store: Store, subscription_id: str) -> dict[str, dict[str, Any]]:
    """What the write path gets from the simulator for a subscription's discounts (the library's version)."""
    stored = store.objects["subscription"][subscription_id]
    expanded = expand_item_discounts(stored, expand_discounts(stored, render(stored, CURRENT_VERSION), CURRENT_VERSION,
                                                              coupons_too=True), CURRENT_VERSION)
    return expanded_in(expanded).discounts


def coupons_as_retrieved(store: Store) -> dict[str, Any]:
    """What the write path gets from the simulator for each coupon (`expand[]=applies_to`)."""
    return {c["id"]: c for c in store.objects.get("coupon", {}).values()}


def shuffled_with_duplicates(envelopes: Sequence[Envelope], seed: int, duplicate_share: float = 0.2) -> list[Envelope]:
    """The envelopes in a random order, a share of them delivered twice."""
    rng = random.Random(seed)
    out = list(envelopes) + [e for e in envelopes if rng.random() < duplicate_share]
    rng.shuffle(out)
    return out


async def publish(settings: Settings, envelopes: Iterable[Envelope]) -> int:
    """Publishes envelopes to the raw topic; returns how many."""
    codec = EnvelopeCodec()
    records = [(envelope_key(e.tenant_id, e.object_id), codec.encode(e)) for e in envelopes]
    async with KafkaPublisher(settings.kafka) as publisher:
        for start in range(0, len(records), 1000):
            await publisher.publish_many(settings.kafka.raw_topic, records[start:start + 1000])
    return len(records)


async def project_until_idle(settings: Settings, pool: asyncpg.Pool, timeout_s: float = 120.0) -> RevenueProjector:
    """Runs one projector member until it has applied everything on the topic."""
    async with KafkaPublisher(settings.kafka, client_id="test-dlq") as dead_letters:
        projector = RevenueProjector(settings.kafka, pool, dead_letters, ProjectorMetrics(CollectorRegistry()))
        await projector.start()
        try:
            await projector.run_until_idle(timeout_s)
        finally:
            await projector.stop()
    return projector


VIEWS = ("daily_revenue", "mrr_by_month", "mrr_movements", "subscriber_churn", "revenue_churn", "invoice_summary")
TABLES = ("customers", "charges", "subscriptions", "invoices", "payment_intents", "refunds",
          "charge_refund_levels", "charge_refund_states", "subscription_versions")


async def bind_tenant(conn: asyncpg.Connection, tenant_id: str) -> None:
    """Binds an owner connection to a tenant for ten minutes (a signed, expiring context), so the
    aggregate views show that tenant's rows."""
    await conn.execute("SELECT set_config('app.tenant_id', $1, false), set_config('app.tenant_expires', $2, false), "
                       "set_config('app.tenant_sig', analytics_private.tenant_signature($1, $2::bigint), false)",
                       tenant_id, str(int(time.time()) + 600))


def reader_credentials(owner: asyncpg.Pool) -> ReaderCredentials:
    """Credentials of each tenant's reader roles, made on first use as the control plane makes them."""
    made: dict[tuple[str, str, str], tuple[str, str]] = {}

    async def credentials(tenant_id: str, level: str, mode: str = "all") -> tuple[str, str]:
        if (tenant_id, level, mode) not in made:
            password = secrets.token_urlsafe(24)
            role = await owner.fetchval("SELECT analytics_private.ensure_reader_role($1, $2, $3, $4, 4, 5000, 10000, 65536)",
                                        tenant_id, level, mode, password)
            made[(tenant_id, level, mode)] = (role, password)
        return made[(tenant_id, level, mode)]

    return credentials


async def dump(conn: asyncpg.Connection, tenant_id: str, leave_out: tuple[str, ...] = ()) -> dict[str, list[tuple[Any, ...]]]:
    """Returns every projection table and view of one tenant, rows sorted, tenant column (and the
    columns named in `leave_out`) dropped."""
    await bind_tenant(conn, tenant_id)
    out = {}
    for name in TABLES + VIEWS:
        rows = await conn.fetch(f"SELECT * FROM projection.{name} WHERE tenant_id = $1", tenant_id)
        out[name] = sorted(tuple(str(v) for k, v in r.items() if k not in ("tenant_id", *leave_out)) for r in rows)
    return out


async def daily_figures(conn: asyncpg.Connection, tenant_id: str) -> tuple[dict[str, dict[str, dict[str, int]]], dict[str, dict[str, dict[str, int]]]]:
    """Returns (daily gross/refunded/net, daily failed) shaped like the simulator's ground truth."""
    await bind_tenant(conn, tenant_id)
    daily: dict[str, dict[str, dict[str, int]]] = {}
    failed: dict[str, dict[str, dict[str, int]]] = {}
    for r in await conn.fetch("SELECT * FROM projection.daily_revenue WHERE tenant_id = $1", tenant_id):
        day = r["day"].isoformat()
        if r["gross"] or r["refunded"]:
            daily.setdefault(day, {})[r["currency"]] = {"gross": r["gross"], "refunded": r["refunded"], "net": r["net"]}
        if r["failed_count"]:
            failed.setdefault(day, {})[r["currency"]] = {"count": r["failed_count"], "amount": r["failed_amount"]}
    return daily, failed


async def mrr_figures(conn: asyncpg.Connection, tenant_id: str) -> dict[str, dict[str, float]]:
    """Returns MRR per month and currency (rounded to 2 places, minor units), zeros left out."""
    await bind_tenant(conn, tenant_id)
    out: dict[str, dict[str, float]] = {}
    for r in await conn.fetch("SELECT * FROM projection.mrr_by_month WHERE tenant_id = $1", tenant_id):
        if r["mrr"] > 0:
            out.setdefault(r["month"].strftime("%Y-%m"), {})[r["currency"]] = float(round(Decimal(r["mrr"]), 2))
    return out


async def subscriber_figures(conn: asyncpg.Connection, tenant_id: str) -> dict[str, dict[str, int]]:
    """Returns active/new/churned subscribers per month."""
    await bind_tenant(conn, tenant_id)
    return {
        r["month"].strftime("%Y-%m"): {"active": r["active_end"], "new": r["new_subscribers"], "churned": r["churned_subscribers"]}
        for r in await conn.fetch("SELECT * FROM projection.subscriber_churn WHERE tenant_id = $1", tenant_id)
    }
