"""Postgres storage of tenants: creation, API tokens (by digest only), the audit log, and the purge of a tenant's data.

A tenant's API token is shown once at creation and stored only as its SHA-256, so the database never
answers "which token is this"; `tenant_for_token` looks a presented token up by its digest.
"""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
import orjson

from ingestor.connections.store import token_digest
from plumbing.postgres import translates_database_errors


@translates_database_errors
class PostgresTenantStore:
    """Tenants, their API tokens' digests and their audit log in Postgres."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    async def create_tenant(self, name: str) -> tuple[str, str]:
        """Creates a tenant; returns (tenant_id, api_token). The token is not stored, only its digest."""
        tenant_id = "ten_" + secrets.token_hex(8)
        token = "tt_" + secrets.token_urlsafe(32)
        await self._pool.execute(
            "INSERT INTO tenants (tenant_id, name, token_sha256) VALUES ($1, $2, $3)",
            tenant_id, name, token_digest(token),
        )
        return tenant_id, token

    async def tenant_for_token(self, token: str) -> str | None:
        """Returns the enabled tenant a tenant API token belongs to, or None."""
        tenant_id: str | None = await self._pool.fetchval(
            "SELECT tenant_id FROM tenants WHERE token_sha256 = $1 AND disabled_at IS NULL", token_digest(token)
        )
        return tenant_id

    async def tenant(self, tenant_id: str) -> dict[str, Any] | None:
        """Returns the tenant's id, name and creation time, or None."""
        row = await self._pool.fetchrow(
            "SELECT tenant_id, name, created_at, disabled_at FROM tenants WHERE tenant_id = $1", tenant_id
        )
        return dict(row) if row else None

    async def purge_tenant_data(self, tenant_id: str) -> dict[str, int]:
        """Deletes the tenant's rows from every table with a `tenant_id` column but tenants and audit_log.

        Tables are found in information_schema, so tables added later are covered; a table whose
        rows are still referenced by another is retried after the others (foreign keys).
        """
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT c.table_schema, c.table_name FROM information_schema.columns c
                     JOIN information_schema.tables t USING (table_schema, table_name)
                    WHERE c.column_name = 'tenant_id' AND t.table_type = 'BASE TABLE'
                      AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
                      AND c.table_name NOT IN ('tenants', 'audit_log')"""
            )
            pending = [(r["table_schema"], r["table_name"]) for r in rows]
            deleted: dict[str, int] = {}
            while pending:
                blocked = []
                for schema, table in pending:
                    try:
                        async with conn.transaction():
                            status = await conn.execute(
                                f'DELETE FROM "{schema}"."{table}" WHERE tenant_id = $1', tenant_id
                            )
                    except asyncpg.ForeignKeyViolationError:
                        blocked.append((schema, table))
                        continue
                    deleted[table] = int(status.rsplit(" ", 1)[-1])
                if len(blocked) == len(pending):
                    raise asyncpg.ForeignKeyViolationError(f"cannot purge tables {blocked}: circular references")
                pending = blocked
            return deleted

    async def audit(self, actor: str, tenant_id: str | None, action: str, detail: dict[str, Any]) -> None:
        """Appends to the audit log (callers never put a secret in `detail`)."""
        await self._pool.execute(
            "INSERT INTO audit_log (actor, tenant_id, action, detail) VALUES ($1, $2, $3, $4::jsonb)",
            actor, tenant_id, action, orjson.dumps(detail).decode(),
        )

    async def audit_entries(self, tenant_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """Returns the tenant's latest audit entries, newest first."""
        rows = await self._pool.fetch(
            "SELECT at, actor, action, detail::text AS detail FROM audit_log WHERE tenant_id = $1 "
            "ORDER BY audit_id DESC LIMIT $2",
            tenant_id, limit,
        )
        return [{**dict(r), "detail": orjson.loads(r["detail"])} for r in rows]

    async def unreadable_events(self, tenant_id: str, latest: int = 5) -> dict[str, Any]:
        """Returns how many of the tenant's events the projector dead-lettered, by reason, and the latest ones."""
        rows = await self._pool.fetch(
            "SELECT reason, count(*) AS n FROM public.dead_lettered_events WHERE tenant_id = $1 GROUP BY reason",
            tenant_id,
        )
        recent = await self._pool.fetch(
            """SELECT event_id, reason, message, dead_lettered_at FROM public.dead_lettered_events
                WHERE tenant_id = $1 ORDER BY dead_lettered_at DESC, "offset" DESC LIMIT $2""",
            tenant_id, latest,
        )
        return {
            "count": sum(r["n"] for r in rows),
            "by_reason": {r["reason"]: r["n"] for r in rows},
            "latest": [{"event_id": r["event_id"], "reason": r["reason"], "message": r["message"],
                        "at": r["dead_lettered_at"].isoformat()} for r in recent],
        }
