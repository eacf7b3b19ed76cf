"""Postgres at scale: every table that holds tenant data, and every one of its indexes and unique keys, is led by
`tenant_id`, so the tables can be distributed by tenant (Citus-style: co-located per tenant, each query of one
tenant on one node). What is not is listed here with the reason — the small control plane that stays on the
coordinator — so a new table or index cannot slip in unnoticed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from stack import postgres
from stack.up import Platform, reset_database
from tests.conftest import TEST_DATABASE

pytestmark = pytest.mark.integration

# Tables kept on one coordinator (or as reference tables), each small and bounded by the number of connections,
# credentials or rates — not by events. Every row of the ones with a tenant_id is still one tenant's.
COORDINATOR_TABLES = {
    "projection.consumer_positions": "the projector group's positions per partition, not per tenant",
    "public.audit_log": "operator and tenant actions (tenant_id column, an append log read per tenant)",
    "public.fx_rates": "exchange rates: reference data for every tenant",
    "public.import_runs": "one row per connection and resource (a connection belongs to one tenant)",
    "public.import_slices": "the import's slices, per connection",
    "public.import_workers": "the processes importing a connection now",
    "public.poll_claims": "which worker polls a connection",
    "public.poll_cursors": "one row per connection",
    "public.reader_credentials": "reader roles per tenant and level (looked up by role name at login)",
    "public.reader_tokens": "reader tokens, looked up by digest before the tenant is known",
    "public.schema_migrations": "the migration runner's record",
    "public.stripe_connections": "one row per tenant and mode, looked up by webhook-token digest",
    "public.stripe_request_budgets": "one Stripe rate budget per account and mode",
    "public.tenants": "the tenants themselves, looked up by API-token digest",
    "public.webhook_secrets": "signing secrets per connection",
    "analytics_private.context_key": "one row: the key that signs a session's tenant",
    "analytics_private.metrics_catalog": "the metrics catalog, the same for every tenant",
    "analytics_private.reader_roles": "reader roles per tenant, looked up by role name",
}


@pytest.fixture
async def pg(platform: Platform) -> AsyncIterator[asyncpg.Connection]:
    """A database as the migrations alone make it (other tests add tables of their own to theirs)."""
    name = f"{TEST_DATABASE}_schema"
    postgres.ensure_database(platform.cluster, name)
    conn = await asyncpg.connect(platform.postgres_dsn(name))
    try:
        await reset_database(conn)
        yield conn
    finally:
        await conn.close()


async def test_every_tenant_table_and_index_is_led_by_tenant_id(pg: asyncpg.Connection) -> None:
    rows = await pg.fetch(
        "SELECT n.nspname || '.' || c.relname AS table_name, ic.relname AS index_name, "
        "       (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum = i.indkey[0]) AS first "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_index i ON i.indrelid = c.oid LEFT JOIN pg_class ic ON ic.oid = i.indexrelid "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname IN ('public', 'projection', 'analytics_private')")
    tables = {r["table_name"] for r in rows}
    tenant_tables = tables - set(COORDINATOR_TABLES)
    assert {"projection.charges", "projection.subscription_versions", "projection.processed_events",
            "public.dead_lettered_events"} <= tenant_tables
    not_led = sorted(f"{r['table_name']}: {r['index_name'] or 'no primary key'} starts with {r['first']}"
                     for r in rows if r["table_name"] in tenant_tables and r["first"] != "tenant_id")
    assert not_led == [], "a tenant table's index (or missing key) would scatter one tenant across nodes"
    assert set(COORDINATOR_TABLES) <= tables, "the list names tables that no longer exist"
    has_tenant_column = {r["t"] for r in await pg.fetch(
        "SELECT table_schema || '.' || table_name AS t FROM information_schema.columns WHERE column_name = 'tenant_id' "
        "AND table_schema IN ('public', 'projection', 'analytics_private')")}
    assert tenant_tables <= has_tenant_column, "every table of tenant data carries the tenant"
