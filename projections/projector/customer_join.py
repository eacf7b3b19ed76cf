"""A customer's discount joined into its subscriptions' MRR history, in the projection store's transaction.

The pure plan is `projections.handlers.customer_discounts`; this reads both histories of each customer a batch
touches (only those whose discount history holds a forever coupon), writes what the plan changes, and counts in
the tenant's health what it could not do. Customers are locked first, so two consumers (a customer and its
subscriptions are different objects, so partitions) never miss each other's rows; and a customer whose histories
are too long to join on every batch (a tenant signs its own webhooks) is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from plumbing.health_rows import MESSAGE_CHARS, NOT_A_KAFKA_PARTITION, HealthRow, count_in_health, stable_offset
from projections.handlers.customer_discounts import (
    DiscountState,
    StoredVersion,
    UnreadableCustomerDiscount,
    basis_from_json,
    discount_state,
    plan,
)
from schemas.stripe_objects import UnreadableObjectError

# Where what a customer's discount could not do is counted in the tenant's health (not a Kafka record), keyed by
# subscription (or customer) and customer state.
PROBLEMS_TOPIC = "projection-customer-discounts"


# A tenant's customers are locked by bucket, in the tenant's own space: one tenant's batch (an import of thousands of
# customers) takes at most this many of Postgres's shared lock slots (64 per connection by default), and never waits
# for, or holds up, another tenant's batches; that tenant's customers sharing a bucket wait for each other.
CUSTOMER_LOCK_BUCKETS = 32


async def lock_customers(conn: asyncpg.Connection, schema: str, customers: set[tuple[str, str]]) -> None:
    """Takes the transaction's lock on each customer whose subscriptions' MRR it may change (its bucket in its
    tenant's space), in one order: two consumers writing a customer's discount and one of its subscriptions
    (different objects, so partitions) would each miss the other's uncommitted row; the second now waits and reads
    both."""
    keys = sorted({(stable_offset(schema, tenant) % 2**31, stable_offset(customer) % CUSTOMER_LOCK_BUCKETS)
                   for tenant, customer in customers})
    if keys:
        await conn.executemany("SELECT pg_advisory_xact_lock($1::int4, $2::int4)", keys)


# The most subscription versions (its subscriptions' own, not the points a join added) one customer's join reads on
# a batch that touches it; beyond, it is not joined and health says so by name (the versions keep the MRR they
# were written with). Far above a real customer's; the plan bounds its own work (MAX_CHANGES).
MAX_CUSTOMER_VERSIONS = 50_000


def _health_row(tenant_id: str, problem: UnreadableObjectError) -> HealthRow:
    return HealthRow(tenant_id, PROBLEMS_TOPIC, NOT_A_KAFKA_PARTITION,
                     stable_offset(problem.object_id, problem.event_id, str(problem)[:100]), problem.event_id,
                     "UnreadableObjectError", str(problem)[:MESSAGE_CHARS])


@dataclass(slots=True)
class _Changes:
    """What joining a batch's customers changes, written in one statement each."""

    mrr: list[tuple[Any, ...]] = field(default_factory=list)
    gone: list[tuple[Any, ...]] = field(default_factory=list)
    added: list[tuple[Any, ...]] = field(default_factory=list)
    current: list[tuple[str, str, Decimal]] = field(default_factory=list)
    problems: list[HealthRow] = field(default_factory=list)


async def join_customer_discounts(conn: asyncpg.Connection, schema: str, customers: set[tuple[str, str]]) -> None:
    """Recomputes the MRR history of the subscriptions of each of `customers` whose discount history holds a
    forever coupon (`projections.handlers.customer_discounts`): whole, from both histories as stored, so the
    result does not depend on arrival order. Reads both histories of all of them at once, and writes what changed
    in one statement of each kind. The caller holds the customers' locks."""
    s = schema
    tenants, ids = [c[0] for c in customers], [c[1] for c in customers]
    listed = "(tenant_id, customer_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
    discounted = {(r["tenant_id"], r["customer_id"]): int(r["versions"]) for r in await conn.fetch(
        f"SELECT d.tenant_id, d.customer_id, (SELECT count(*) FROM {s}.subscription_versions v "
        "WHERE v.tenant_id = d.tenant_id AND v.customer_id = d.customer_id AND NOT v.derived_from_customer_discount) "
        f"AS versions FROM (SELECT DISTINCT tenant_id, customer_id FROM {s}.customer_discounts WHERE {listed} "
        "AND coupon IS NOT NULL) AS d", tenants, ids)}
    if not discounted:
        return
    changes = _Changes()
    joined = []
    for key, count in sorted(discounted.items()):
        if count > MAX_CUSTOMER_VERSIONS:
            changes.problems.append(_health_row(key[0], UnreadableCustomerDiscount(
                key[1], f"customer {key[1]}: discount not joined into its subscriptions' MRR: more than "
                f"{MAX_CUSTOMER_VERSIONS} subscription versions (they keep the MRR they were written with)", "")))
        else:
            joined.append(key)
    if joined:
        tenants, ids = [k[0] for k in joined], [k[1] for k in joined]
        discounts: dict[tuple[str, str], list[DiscountState]] = {k: [] for k in joined}
        for r in await conn.fetch(
                f"SELECT tenant_id, customer_id, state_time, state_rank, state_event_id, coupon "
                f"FROM {s}.customer_discounts WHERE {listed}", tenants, ids):
            discounts[(r["tenant_id"], r["customer_id"])].append(discount_state(
                r["state_time"], r["state_rank"], r["state_event_id"],
                orjson.loads(r["coupon"]) if r["coupon"] is not None else None))
        rows: dict[tuple[str, str], list[asyncpg.Record]] = {k: [] for k in joined}
        for r in await conn.fetch(
                f"SELECT tenant_id, customer_id, subscription_id, state_time, state_rank, state_event_id, status, "
                f"currency, mrr, customer_discount_event_id, customer_discount_basis, derived_from_customer_discount "
                f"FROM {s}.subscription_versions WHERE {listed}", tenants, ids):
            rows[(r["tenant_id"], r["customer_id"])].append(r)
        for key in joined:
            _join_one(key, discounts[key], rows[key], changes)
    await _write(conn, schema, changes)


def _join_one(key: tuple[str, str], discounts: list[DiscountState], rows: list[asyncpg.Record],
              changes: _Changes) -> None:
    """One customer's plan, as rows to write: only what changed of the added points (a batch touching the
    customer again rewrites nothing)."""
    tenant_id, customer_id = key
    versions = [
        StoredVersion(r["subscription_id"], r["state_time"], r["state_rank"], r["state_event_id"], r["status"],
                      r["currency"], r["mrr"], r["customer_discount_event_id"],
                      basis_from_json(r["subscription_id"], orjson.loads(r["customer_discount_basis"]))
                      if r["customer_discount_basis"] is not None else None)
        for r in rows if not r["derived_from_customer_discount"]]
    joined = plan(discounts, versions, customer_id)
    changes.mrr += [(tenant_id, *at, mrr, source) for at, (mrr, source) in joined.mrr.items()]
    held = {(r["subscription_id"], r["state_time"], r["state_rank"], r["state_event_id"]):
            (r["mrr"], r["customer_discount_event_id"]) for r in rows if r["derived_from_customer_discount"]}
    wanted = {(a.copied.subscription_id, a.state_time, a.copied.state_rank, a.event_id): a for a in joined.added}
    gone = [at for at, value in held.items()
            if at not in wanted or (wanted[at].mrr, wanted[at].discount_event_id) != value]
    changes.gone += [(tenant_id, *at) for at in gone]
    changes.added += [(tenant_id, a.copied.subscription_id, a.state_time, a.copied.state_rank, a.event_id, customer_id,
                       a.copied.currency, a.copied.status, a.mrr, a.discount_event_id)
                      for at, a in wanted.items() if at not in held or at in gone]
    changes.current += [(tenant_id, subscription_id, mrr) for subscription_id, mrr in joined.current.items()]
    changes.problems += [_health_row(tenant_id, p) for p in joined.problems]


# A subscription version's key, as the first five parameters of an unnest (u) and matched against the table (t).
_VERSION_KEY = "tenant_id, subscription_id, state_time, state_rank, state_event_id"
_VERSION_KEYS = "$1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[]"
_SAME_VERSION = ("(t.tenant_id, t.subscription_id, t.state_time, t.state_rank, t.state_event_id) "
                 "= (u.tenant_id, u.subscription_id, u.state_time, u.state_rank, u.state_event_id)")


async def _write(conn: asyncpg.Connection, schema: str, changes: _Changes) -> None:
    s = schema
    if changes.mrr:
        await conn.execute(
            f"UPDATE {s}.subscription_versions AS t SET mrr = u.mrr, customer_discount_event_id = u.source "
            f"FROM unnest({_VERSION_KEYS}, $6::numeric[], $7::text[]) AS u({_VERSION_KEY}, mrr, source) "
            f"WHERE {_SAME_VERSION}", *map(list, zip(*changes.mrr)))
    if changes.gone:
        await conn.execute(
            f"DELETE FROM {s}.subscription_versions AS t USING unnest({_VERSION_KEYS}) AS u({_VERSION_KEY}) "
            f"WHERE {_SAME_VERSION} AND t.derived_from_customer_discount", *map(list, zip(*changes.gone)))
    if changes.added:
        await conn.execute(
            f"INSERT INTO {s}.subscription_versions (tenant_id, subscription_id, state_time, state_rank, "
            "state_event_id, customer_id, currency, status, mrr, customer_discount_event_id, "
            "derived_from_customer_discount) SELECT *, true FROM unnest($1::text[], $2::text[], $3::int8[], "
            "$4::int8[], $5::text[], $6::text[], $7::text[], $8::text[], $9::numeric[], $10::text[]) "
            "ON CONFLICT DO NOTHING", *map(list, zip(*changes.added)))
    if changes.current:
        await conn.execute(
            f"UPDATE {s}.subscriptions AS t SET mrr = u.mrr FROM unnest($1::text[], $2::text[], $3::numeric[]) "
            "AS u(tenant_id, id, mrr) WHERE t.tenant_id = u.tenant_id AND t.id = u.id AND t.mrr IS DISTINCT FROM u.mrr",
            *map(list, zip(*changes.current)))
    await count_in_health(conn, changes.problems)
