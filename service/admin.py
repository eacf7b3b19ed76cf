"""Operator jobs of the product: apply migrations and create topics, re-encrypt secrets under a new master key,
let a tenant's import pages share the page pool again.

Migrations come from two folders, applied as one ordered list: the control plane's
(`ingestor/connections/migrations`) and the projections' (`projections/migrations`). Run once per
deployment before the processes start (`ingestor migrate`); the runner's advisory lock makes a
concurrent second run wait and then apply nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from ingestor.connections import MIGRATIONS_DIR as CONTROL_MIGRATIONS_DIR
from ingestor.connections.rekey import master_keys_in_use, reencrypt_all
from ingestor.connections.store import clear_pages_read_alone, tenants_with_pages_read_alone
from plumbing.kafka import ensure_topics
from plumbing.logs import configure_logging
from plumbing.migrations import apply_migrations
from plumbing.settings import KafkaSettings, PostgresSettings, Settings, load_settings
from projections import MIGRATIONS_DIR as PROJECTION_MIGRATIONS_DIR
from projections.read.catalog import sync_catalog
from service.web import load_keyring

MIGRATION_DIRS = (CONTROL_MIGRATIONS_DIR, PROJECTION_MIGRATIONS_DIR)
T = TypeVar("T")


def _on_pool(settings: Settings, job: Callable[[asyncpg.Pool], Awaitable[T]], max_size: int = 1) -> T:
    """Runs one operator job against the configured database, on a pool of its own closed after it."""
    async def run() -> T:
        pool = await asyncpg.create_pool(settings.postgres.dsn.get_secret_value(), min_size=1, max_size=max_size)
        try:
            return await job(pool)
        finally:
            await pool.close()

    return asyncio.run(run())


async def migrate_database(conn: asyncpg.Connection) -> int:
    """Applies the pending migrations of both folders and syncs the metrics catalog; returns how many were applied."""
    applied = await apply_migrations(conn, *MIGRATION_DIRS)
    await sync_catalog(conn)
    return len(applied)


async def prepare(kafka: KafkaSettings, pg: PostgresSettings) -> str:
    """Applies migrations and creates the topics named in the settings; returns what it did, in words."""
    conn = await asyncpg.connect(pg.dsn.get_secret_value())
    try:
        applied = await migrate_database(conn)
    finally:
        await conn.close()
    await ensure_topics(kafka)
    return (f"database schema up to date ({applied} migration(s) applied); "
            f"topics ready: {kafka.raw_topic}, {kafka.dead_letter_topic}")


def migrate() -> str:
    """Runs `prepare` with the settings from the environment."""
    settings = load_settings()
    configure_logging(settings.log)
    return asyncio.run(prepare(settings.kafka, settings.postgres))


def rotate_master_key() -> str:
    """Re-encrypts every stored secret with the current master key; reports what each key id still holds."""
    settings = load_settings()
    configure_logging(settings.log)
    keyring = load_keyring(settings.vault)

    async def run(pool: asyncpg.Pool) -> str:
        report = await reencrypt_all(pool, keyring)
        used = await master_keys_in_use(pool)
        old = {k: n for k, n in used.items() if k != keyring.current}
        verdict = ("no ciphertext uses an older master key: the old keys may be removed from the setting"
                   if not old else f"still under older keys: {old}")
        failed = f"; could not decrypt {len(report.failed)}: {report.failed}" if report.failed else ""
        return f"re-encrypted {report.reencrypted} secret(s) with master key {keyring.current!r}; {verdict}{failed}"

    return _on_pool(settings, run, max_size=2)


def load_fx_rates(path: str) -> str:
    """Loads an exchange-rates CSV file (checked whole first: a bad line loads nothing); returns what changed."""
    from datetime import datetime, timezone

    from projections.read.fx_rates import load_rates, parse_rates

    settings = load_settings()
    configure_logging(settings.log)
    with open(path, encoding="utf-8-sig") as file:
        rates = parse_rates(file.read(), datetime.now(timezone.utc).date())

    report = _on_pool(settings, lambda pool: load_rates(pool, rates))
    return (f"loaded {report['rates']} rate(s) from {report['from']} to {report['to']} for {', '.join(report['pairs'])}: "
            f"{report['added']} new, {report['replaced']} replaced, the rest unchanged")


class NotReadAloneError(ValueError):
    """The tenant asked to share the pool again has no connection whose pages are read alone."""


async def list_read_alone(pool: asyncpg.Pool) -> str:
    """The tenants whose import pages every worker reads alone (a page of theirs killed a page-pool process)."""
    marked = await tenants_with_pages_read_alone(pool)
    if not marked:
        return "no tenant's import pages are read alone"
    return "\n".join(f"tenant {tenant}: read alone since {since.isoformat(timespec='seconds')}"
                     for tenant, since in marked)


async def clear_read_alone(pool: asyncpg.Pool, tenant_id: str) -> str:
    """Puts the tenant's import pages back in the page pool; raises NotReadAloneError, changing nothing, for a
    tenant without the mark (or text that is no tenant id)."""
    try:
        cleared = await clear_pages_read_alone(pool, tenant_id)
    except (UnicodeEncodeError, asyncpg.DataError):  # e.g. bytes that are no text: no tenant has that id
        cleared = 0
    if not cleared:
        raise NotReadAloneError(f"tenant {tenant_id!r} has no connection whose import pages are read alone "
                                "(`ingestor read-alone list` shows the tenants that have)")
    return (f"tenant {tenant_id!r}: its import pages share the page pool again ({cleared} connection(s)); each "
            "worker reads them there from its next pass over one of the tenant's imports (a paused import: once "
            "it is resumed)")


def read_alone(clear: str | None) -> str:
    """`list_read_alone`, or `clear_read_alone` of the tenant `clear`, against the configured database (no master
    key needed)."""
    settings = load_settings()
    configure_logging(settings.log)
    return _on_pool(settings, lambda pool: list_read_alone(pool) if clear is None else clear_read_alone(pool, clear))
