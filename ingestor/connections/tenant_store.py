"""Postgres storage of tenants: creation and deletion, API and reader tokens (by digest only), reader
credentials, the audit log, and the purge of a tenant's data.

A tenant's API token and its reader tokens are shown once at creation and stored only as their
SHA-256, so the database never answers "which token is this"; a presented token is looked up by its
digest. Each tenant reads revenue through login roles of its own, one per permission level
(`analytics_private.ensure_reader_role`); their passwords are random, kept encrypted by the vault and
decrypted only to open the read API's connections.
"""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
import orjson

from ingestor.connections.store import SecretBox, token_digest
from ingestor.connections.vault import associated_data
from plumbing.postgres import translates_database_errors
from plumbing.settings import ReaderSettings

LEVELS = ("summary", "standard", "full")
# Rows a purge keeps: who the tenant is, what happened, and how its readers log in (dropped only with the tenant).
KEPT_BY_PURGE = ("tenants", "audit_log", "reader_credentials", "reader_tokens", "reader_roles")


def reader_password_aad(tenant_id: str, role_name: str) -> bytes:
    """Returns the associated data binding a reader role's password ciphertext to its tenant and role."""
    return associated_data(tenant_id=tenant_id, connection_id=role_name, purpose="reader_password")


# A tenant's health rows, one per event (its first), each row without an event id on its own.
_FIRST_ROW_OF_EACH_EVENT = """
    SELECT DISTINCT ON (CASE WHEN event_id = '' THEN concat_ws(':', topic, partition, "offset") ELSE event_id END)
           event_id, reason, message, dead_lettered_at, "offset"
      FROM public.dead_lettered_events WHERE tenant_id = $1
     ORDER BY CASE WHEN event_id = '' THEN concat_ws(':', topic, partition, "offset") ELSE event_id END,
              dead_lettered_at, topic, partition, "offset"
"""


@translates_database_errors
class PostgresTenantStore:
    """Tenants, their tokens' digests, reader credentials and audit log in Postgres."""

    def __init__(self, pool: asyncpg.Pool, vault: SecretBox, readers: ReaderSettings):
        self._pool = pool
        self._vault = vault
        self._readers = readers

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
        """Returns the tenant's id, name, time zone and creation time, or None."""
        row = await self._pool.fetchrow(
            "SELECT tenant_id, name, time_zone, created_at, disabled_at FROM tenants WHERE tenant_id = $1", tenant_id
        )
        return dict(row) if row else None

    async def set_time_zone(self, actor: str, tenant_id: str, time_zone: str) -> str | bool:
        """Sets the tenant's reporting time zone, with its audit entry, in one transaction, if PostgreSQL knows the
        name (the views convert with it); returns the previous zone, False for a name PostgreSQL does not know, or
        True when the tenant is gone (nothing changed in either case)."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)", time_zone):
                return False
            previous: str | None = await conn.fetchval(
                "SELECT time_zone FROM tenants WHERE tenant_id = $1 AND disabled_at IS NULL FOR UPDATE", tenant_id)
            if previous is None:
                return True
            await conn.execute("UPDATE tenants SET time_zone = $2 WHERE tenant_id = $1", tenant_id, time_zone)
            await _audit(conn, actor, tenant_id, "tenant.time_zone_set", {"time_zone": time_zone, "previous": previous})
            return previous

    async def purge_tenant_data(self, tenant_id: str) -> dict[str, int]:
        """Deletes the tenant's rows from every table with a `tenant_id` column but those in KEPT_BY_PURGE.

        Tables are found in information_schema, so tables added later are covered; a table whose
        rows are still referenced by another is retried after the others (foreign keys).
        """
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT c.table_schema, c.table_name FROM information_schema.columns c
                     JOIN information_schema.tables t USING (table_schema, table_name)
                    WHERE c.column_name = 'tenant_id' AND t.table_type = 'BASE TABLE'
                      AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
                      AND c.table_name <> ALL($1::text[])""", list(KEPT_BY_PURGE)
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
        await _audit(self._pool, actor, tenant_id, action, detail)

    async def audit_entries(self, tenant_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """Returns the tenant's latest audit entries, newest first."""
        rows = await self._pool.fetch(
            "SELECT at, actor, action, detail::text AS detail FROM audit_log WHERE tenant_id = $1 "
            "ORDER BY audit_id DESC LIMIT $2",
            tenant_id, limit,
        )
        return [{**dict(r), "detail": orjson.loads(r["detail"])} for r in rows]

    async def unreadable_events(self, tenant_id: str, latest: int = 5) -> dict[str, Any]:
        """Returns how many of the tenant's events could not be read, by reason, and the latest ones. An event is
        counted once, by its first row, however many rows it has: the receiver counts an unreadable delivery, the
        poller publishes the same event and the projector dead-letters that record (a row per record: it may be
        published again), so the rows of one event were shown as two or more "events that could not be read".
        Rows without an event id (a record that is not an envelope) count one each."""
        rows = await self._pool.fetch(
            f"SELECT reason, count(*) AS n FROM ({_FIRST_ROW_OF_EACH_EVENT}) AS firsts GROUP BY reason", tenant_id)
        recent = await self._pool.fetch(
            f"""SELECT event_id, reason, message, dead_lettered_at FROM ({_FIRST_ROW_OF_EACH_EVENT}) AS firsts
                ORDER BY dead_lettered_at DESC, "offset" DESC LIMIT $2""",
            tenant_id, latest,
        )
        return {
            "count": sum(r["n"] for r in rows),
            "by_reason": {r["reason"]: r["n"] for r in rows},
            "latest": [{"event_id": r["event_id"], "reason": r["reason"], "message": r["message"],
                        "at": r["dead_lettered_at"].isoformat()} for r in recent],
        }

    # Readers --------------------------------------------------------------------------------------

    async def reader_credentials(self, tenant_id: str, level: str, mode: str = "all") -> tuple[str, str]:
        """Returns (role, password) of the tenant's reader role of `level` bound to `mode` (all, live or test),
        creating the role on first use."""
        row = await self._pool.fetchrow(
            "SELECT role_name, password_ciphertext FROM reader_credentials WHERE tenant_id = $1 AND level = $2 "
            "AND mode = $3", tenant_id, level, mode,
        )
        if row is None:
            return await self._create_reader(tenant_id, level, mode)
        return row["role_name"], self._vault.decrypt(row["password_ciphertext"],
                                                     reader_password_aad(tenant_id, row["role_name"]))

    async def _create_reader(self, tenant_id: str, level: str, mode: str) -> tuple[str, str]:
        password = secrets.token_urlsafe(32)
        r = self._readers
        async with self._pool.acquire() as conn, conn.transaction():
            # One creation at a time per tenant, level and mode (two web processes may ask at once).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('reader:' || $1 || ':' || $2 || ':' || $3))",
                               tenant_id, level, mode)
            existing = await conn.fetchrow(
                "SELECT role_name, password_ciphertext FROM reader_credentials WHERE tenant_id = $1 AND level = $2 "
                "AND mode = $3", tenant_id, level, mode,
            )
            if existing is not None:
                return existing["role_name"], self._vault.decrypt(
                    existing["password_ciphertext"], reader_password_aad(tenant_id, existing["role_name"]))
            role: str = await conn.fetchval(
                "SELECT analytics_private.ensure_reader_role($1, $2, $3, $4, $5, $6, $7, $8)",
                tenant_id, level, mode, password, r.tenant_connection_limit, r.statement_timeout_ms,
                r.idle_in_transaction_timeout_ms, r.temp_file_limit_kb,
            )
            await conn.execute(
                "INSERT INTO reader_credentials (tenant_id, level, mode, role_name, password_ciphertext) "
                "VALUES ($1, $2, $3, $4, $5)",
                tenant_id, level, mode, role, self._vault.encrypt(password, reader_password_aad(tenant_id, role)),
            )
        return role, password

    async def drop_readers(self, tenant_id: str) -> int:
        """Drops the tenant's reader roles (their sessions end), credentials and tokens; returns how many roles."""
        async with self._pool.acquire() as conn, conn.transaction():
            dropped: int = await conn.fetchval("SELECT analytics_private.drop_reader_roles($1)", tenant_id)
            await conn.execute("DELETE FROM reader_credentials WHERE tenant_id = $1", tenant_id)
            await conn.execute("UPDATE reader_tokens SET revoked_at = now() WHERE tenant_id = $1 AND revoked_at IS NULL",
                               tenant_id)
        return dropped

    async def issue_reader_token(self, tenant_id: str, level: str, name: str, mode: str = "all") -> tuple[str, str]:
        """Issues a reader token bound to `level` and `mode` (all, live or test); returns (token_id, token).
        Only the digest is stored."""
        token_id = "rtk_" + secrets.token_hex(6)
        token = f"rdr_{level[:3]}_" + secrets.token_urlsafe(32)
        await self._pool.execute(
            "INSERT INTO reader_tokens (tenant_id, token_id, token_sha256, level, name, mode) "
            "VALUES ($1, $2, $3, $4, $5, $6)", tenant_id, token_id, token_digest(token), level, name, mode,
        )
        return token_id, token

    async def reader_tokens(self, tenant_id: str) -> list[dict[str, Any]]:
        """Returns the tenant's reader tokens (id, level, name, dates; never the token)."""
        rows = await self._pool.fetch(
            "SELECT token_id, level, mode, name, created_at, revoked_at FROM reader_tokens WHERE tenant_id = $1 "
            "ORDER BY created_at, token_id", tenant_id,
        )
        return [dict(r) for r in rows]

    async def revoke_reader_token(self, tenant_id: str, token_id: str) -> bool:
        """Revokes one reader token; returns False if the tenant has no such active token."""
        status = await self._pool.execute(
            "UPDATE reader_tokens SET revoked_at = now() WHERE tenant_id = $1 AND token_id = $2 AND revoked_at IS NULL",
            tenant_id, token_id,
        )
        return bool(status != "UPDATE 0")

    async def reader_for_token(self, token: str) -> tuple[str, str, str] | None:
        """Returns (tenant_id, level, mode) of an active reader token of an enabled tenant, or None."""
        row = await self._pool.fetchrow(
            """SELECT r.tenant_id, r.level, r.mode FROM reader_tokens r JOIN tenants t USING (tenant_id)
                WHERE r.token_sha256 = $1 AND r.revoked_at IS NULL AND t.disabled_at IS NULL""",
            token_digest(token),
        )
        return (row["tenant_id"], row["level"], row["mode"]) if row else None

    async def disable_tenant(self, tenant_id: str) -> None:
        """Disables the tenant: its API token stops working (its rows and audit log stay)."""
        await self._pool.execute("UPDATE tenants SET disabled_at = now() WHERE tenant_id = $1 AND disabled_at IS NULL",
                                 tenant_id)


async def _audit(conn: asyncpg.Pool | asyncpg.Connection, actor: str, tenant_id: str | None, action: str,
                 detail: dict[str, Any]) -> None:
    """Appends one audit entry, on a pool or inside the caller's transaction."""
    await conn.execute("INSERT INTO audit_log (actor, tenant_id, action, detail) VALUES ($1, $2, $3, $4::jsonb)",
                       actor, tenant_id, action, orjson.dumps(detail).decode())
