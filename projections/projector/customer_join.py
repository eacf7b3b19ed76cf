"""A customer's discount joined into its subscriptions' MRR history, in the projection store's transaction.

The pure plan is `projections.handlers.customer_discounts`; this reads both histories of each customer a batch
touches (only those whose discount history holds a forever coupon), writes what the plan changes, and counts in
the tenant's health what it could not do. Customers are locked first, so two consumers (a customer and its
subscriptions are different objects, so partitions) never miss each other's rows; and a customer whose histories
are too long to join on every batch (a tenant signs its own webhooks) is refused by name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import asyncpg
import orjson

from projections.handlers.customer_discounts import (
    StoredVersion,
    UnreadableCustomerDiscount,
    basis_from_json,
    discount_state,
    plan,
)
from schemas.stripe_objects import UnreadableObjectError

# Where a customer's discount that cannot apply to a subscription is counted in the tenant's health: not a Kafka
# record (partition -1), keyed by subscription and customer state.
PROBLEMS_TOPIC = "projection-customer-discounts"


def _stable_offset(*parts: str) -> int:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# A tenant's customers are locked by bucket, in the tenant's own space: one tenant's batch (an import of thousands of
# customers) takes at most this many of Postgres's shared lock slots (64 per connection by default), and never waits
# for, or holds up, another tenant's batches; that tenant's customers sharing a bucket wait for each other.
CUSTOMER_LOCK_BUCKETS = 32


async def lock_customers(conn: asyncpg.Connection, schema: str, customers: set[tuple[str, str]]) -> None:
    """Takes the transaction's lock on each customer whose subscriptions' MRR it may change (its bucket in its
    tenant's space), in one order: two consumers writing a customer's discount and one of its subscriptions
    (different objects, so partitions) would each miss the other's uncommitted row; the second now waits and reads
    both."""
    keys = sorted({(_stable_offset(schema, tenant) % 2**31, _stable_offset(customer) % CUSTOMER_LOCK_BUCKETS)
                   for tenant, customer in customers})
    if keys:
        await conn.executemany("SELECT pg_advisory_xact_lock($1::int4, $2::int4)", keys)


# The most subscription versions (its subscriptions' own, not the points a join added) one customer's join reads on
# a batch that touches it; beyond, it is not joined and health says so by name (the versions keep the MRR they
# were written with). Far above a real customer's; the plan bounds its own work (MAX_CHANGES).
MAX_CUSTOMER_VERSIONS = 50_000


async def _count_problems(conn: asyncpg.Connection, tenant_id: str, problems: Sequence[UnreadableObjectError]) -> None:
    """Counts in the tenant's health what a customer's discount could not do (a row per object and event, once)."""
    if problems:
        await conn.executemany(
            "INSERT INTO public.dead_lettered_events (tenant_id, topic, partition, \"offset\", event_id, reason, "
            "message) VALUES ($1, $2, -1, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            [(tenant_id, PROBLEMS_TOPIC, _stable_offset(p.object_id, p.event_id, str(p)[:100]), p.event_id,
              "UnreadableObjectError", str(p)[:500]) for p in problems])


async def join_customer_discounts(conn: asyncpg.Connection, schema: str, customers: set[tuple[str, str]]) -> None:
    """Recomputes the MRR history of the subscriptions of each of `customers` whose discount history holds a
    forever coupon (`projections.handlers.customer_discounts`): whole, from both histories as stored, so the
    result does not depend on arrival order. The caller holds the customers' locks."""
    s = schema
    discounted = await conn.fetch(
        f"SELECT DISTINCT tenant_id, customer_id FROM {s}.customer_discounts "
        "WHERE (tenant_id, customer_id) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND coupon IS NOT NULL",
        [c[0] for c in customers], [c[1] for c in customers],
    )
    for row in sorted(discounted, key=lambda r: (r["tenant_id"], r["customer_id"])):
        await _join_one(conn, schema, row["tenant_id"], row["customer_id"])


async def _join_one(conn: asyncpg.Connection, schema: str, tenant_id: str, customer_id: str) -> None:
    s = schema
    too_many = await _too_many(conn, schema, tenant_id, customer_id)
    if too_many:
        await _count_problems(conn, tenant_id, [UnreadableCustomerDiscount(customer_id, too_many, "")])
        return
    discounts = [
        discount_state(r["state_time"], r["state_rank"], r["state_event_id"],
                       orjson.loads(r["coupon"]) if r["coupon"] is not None else None)
        for r in await conn.fetch(
            f"SELECT state_time, state_rank, state_event_id, coupon FROM {s}.customer_discounts "
            "WHERE tenant_id = $1 AND customer_id = $2", tenant_id, customer_id)]
    rows = await conn.fetch(
        f"SELECT subscription_id, state_time, state_rank, state_event_id, status, currency, mrr, "
        f"customer_discount_event_id, customer_discount_basis, derived_from_customer_discount "
        f"FROM {s}.subscription_versions WHERE tenant_id = $1 AND customer_id = $2", tenant_id, customer_id)
    versions = [
        StoredVersion(r["subscription_id"], r["state_time"], r["state_rank"], r["state_event_id"], r["status"],
                      r["currency"], r["mrr"], r["customer_discount_event_id"],
                      basis_from_json(r["subscription_id"], orjson.loads(r["customer_discount_basis"]))
                      if r["customer_discount_basis"] is not None else None)
        for r in rows if not r["derived_from_customer_discount"]]
    joined = plan(discounts, versions, customer_id)
    if joined.mrr:
        await conn.executemany(
            f"UPDATE {s}.subscription_versions SET mrr = $6, customer_discount_event_id = $7 "
            "WHERE tenant_id = $1 AND subscription_id = $2 AND state_time = $3 AND state_rank = $4 "
            "AND state_event_id = $5",
            [(tenant_id, *key, mrr, source) for key, (mrr, source) in joined.mrr.items()])
    # Only what changed of the added points is written: a batch touching the customer again rewrites nothing.
    held = {(r["subscription_id"], r["state_time"], r["state_rank"], r["state_event_id"]):
            (r["mrr"], r["customer_discount_event_id"]) for r in rows if r["derived_from_customer_discount"]}
    wanted = {(a.copied.subscription_id, a.state_time, a.copied.state_rank, a.event_id): a for a in joined.added}
    gone = [key for key, value in held.items()
            if key not in wanted or (wanted[key].mrr, wanted[key].discount_event_id) != value]
    if gone:
        await conn.executemany(
            f"DELETE FROM {s}.subscription_versions WHERE tenant_id = $1 AND subscription_id = $2 "
            "AND state_time = $3 AND state_rank = $4 AND state_event_id = $5 AND derived_from_customer_discount",
            [(tenant_id, *key) for key in gone])
    new = [a for key, a in wanted.items() if key not in held or key in gone]
    if new:
        await conn.executemany(
            f"INSERT INTO {s}.subscription_versions (tenant_id, subscription_id, state_time, state_rank, "
            "state_event_id, customer_id, currency, status, mrr, customer_discount_basis, "
            "customer_discount_event_id, derived_from_customer_discount) "
            "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, true ON CONFLICT DO NOTHING",
            [(tenant_id, a.copied.subscription_id, a.state_time, a.copied.state_rank, a.event_id, customer_id,
              a.copied.currency, a.copied.status, a.mrr, a.discount_event_id) for a in new])
    if joined.current:
        await conn.execute(
            f"UPDATE {s}.subscriptions AS t SET mrr = u.mrr FROM unnest($2::text[], $3::numeric[]) AS u(id, mrr) "
            "WHERE t.tenant_id = $1 AND t.id = u.id AND t.mrr IS DISTINCT FROM u.mrr",
            tenant_id, list(joined.current), list(joined.current.values()))
    await _count_problems(conn, tenant_id, joined.problems)

async def _too_many(conn: asyncpg.Connection, schema: str, tenant_id: str, customer_id: str) -> str | None:
    """Why the customer's subscriptions have too many versions to join on every batch that touches it, or None."""
    held = await conn.fetchval(
        f"SELECT count(*) FROM (SELECT 1 FROM {schema}.subscription_versions WHERE tenant_id = $1 AND customer_id = $2 "
        "AND NOT derived_from_customer_discount LIMIT $3) AS capped", tenant_id, customer_id, MAX_CUSTOMER_VERSIONS + 1)
    if held > MAX_CUSTOMER_VERSIONS:
        return (f"customer {customer_id}: discount not joined into its subscriptions' MRR: more than "
                f"{MAX_CUSTOMER_VERSIONS} subscription versions (they keep the MRR they were written with)")
    return None
