"""Postgres storage of tenants and their Stripe connections; secrets go in and out through the vault.

Nothing here returns a key or a signing secret except `webhook_target`, which decrypts the
signing secrets in memory for the receiver, just before use. Tokens (tenant API tokens, webhook
URL tokens) are looked up by their SHA-256 so the database never answers "which token is this".
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import asyncpg

from ingestor.vault import associated_data


class SecretBox(Protocol):
    """What the store needs of the key vault: authenticated encryption bound to an owner."""

    def encrypt(self, plaintext: str, aad: bytes) -> bytes: ...

    def decrypt(self, blob: bytes, aad: bytes) -> str: ...


def token_digest(token: str) -> bytes:
    """Returns the SHA-256 under which a token is stored and looked up."""
    return hashlib.sha256(token.encode()).digest()


def secret_hint(secret: str) -> str:
    """Returns the displayable form of a secret: prefix, ellipsis, last four characters."""
    prefix, sep, body = secret.rpartition("_")
    return f"{prefix}{sep}…{body[-4:]}" if sep else f"…{secret[-4:]}"


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """What the receiver needs to accept a delivery for one connection."""

    connection_id: str
    tenant_id: str
    livemode: bool
    accepting: bool
    signing_secrets: tuple[str, ...]

    def __repr__(self) -> str:  # never show the secrets
        return (
            f"WebhookTarget(connection_id={self.connection_id!r}, tenant_id={self.tenant_id!r}, "
            f"livemode={self.livemode}, accepting={self.accepting}, signing_secrets=<{len(self.signing_secrets)}>)"
        )


class PostgresConnectionStore:
    """Tenants, connections and their encrypted secrets in Postgres."""

    def __init__(self, pool: asyncpg.Pool, vault: SecretBox):
        self._pool = pool
        self._vault = vault

    async def create_tenant(self, name: str) -> tuple[str, str]:
        """Creates a tenant; returns (tenant_id, api_token). The token is not stored, only its digest."""
        tenant_id = "ten_" + secrets.token_hex(8)
        token = "tt_" + secrets.token_urlsafe(32)
        await self._pool.execute(
            "INSERT INTO tenants (tenant_id, name, token_sha256) VALUES ($1, $2, $3)",
            tenant_id, name, token_digest(token),
        )
        return tenant_id, token

    async def create_connection(self, tenant_id: str, livemode: bool) -> tuple[str, str]:
        """Creates the tenant's connection for one mode; returns (connection_id, webhook_token)."""
        connection_id = "conn_" + secrets.token_hex(8)
        webhook_token = secrets.token_urlsafe(32)
        await self._pool.execute(
            """INSERT INTO stripe_connections
                   (connection_id, tenant_id, livemode, webhook_token_sha256, webhook_token_ciphertext, status)
               VALUES ($1, $2, $3, $4, $5, 'webhook_unverified')""",
            connection_id, tenant_id, livemode, token_digest(webhook_token),
            self._vault.encrypt(webhook_token, associated_data(tenant_id=tenant_id, connection_id=connection_id, purpose="webhook_token")),
        )
        return connection_id, webhook_token

    async def add_webhook_secret(
        self, connection_id: str, secret: str, now: datetime, grace: timedelta = timedelta(hours=24)
    ) -> None:
        """Stores a new signing secret; secrets it replaces stay valid for `grace` (Stripe's roll)."""
        async with self._pool.acquire() as conn, conn.transaction():
            tenant_id = await conn.fetchval(
                "SELECT tenant_id FROM stripe_connections WHERE connection_id = $1", connection_id
            )
            aad = associated_data(tenant_id=tenant_id, connection_id=connection_id, purpose="webhook_secret")
            await conn.execute(
                "UPDATE webhook_secrets SET expires_at = $2 WHERE connection_id = $1 AND expires_at IS NULL",
                connection_id, now + grace,
            )
            await conn.execute(
                "INSERT INTO webhook_secrets (connection_id, ciphertext, hint) VALUES ($1, $2, $3)",
                connection_id, self._vault.encrypt(secret, aad), secret_hint(secret),
            )

    async def webhook_target(self, token: str, now: datetime) -> WebhookTarget | None:
        """Returns the connection a webhook URL token belongs to, with its active signing secrets."""
        rows = await self._pool.fetch(
            """SELECT c.connection_id, c.tenant_id, c.livemode,
                      (c.status <> 'disconnected' AND t.disabled_at IS NULL) AS accepting,
                      s.ciphertext
                 FROM stripe_connections c
                 JOIN tenants t USING (tenant_id)
                 LEFT JOIN webhook_secrets s
                        ON s.connection_id = c.connection_id AND (s.expires_at IS NULL OR s.expires_at > $2)
                WHERE c.webhook_token_sha256 = $1
                ORDER BY s.secret_id DESC""",
            token_digest(token), now,
        )
        if not rows:
            return None
        first = rows[0]
        aad = associated_data(
            tenant_id=first["tenant_id"], connection_id=first["connection_id"], purpose="webhook_secret"
        )
        return WebhookTarget(
            connection_id=first["connection_id"],
            tenant_id=first["tenant_id"],
            livemode=first["livemode"],
            accepting=first["accepting"],
            signing_secrets=tuple(self._vault.decrypt(r["ciphertext"], aad) for r in rows if r["ciphertext"]),
        )

    async def mark_webhook_verified(self, connection_id: str, at: datetime) -> None:
        """Records that a test delivery arrived: the webhook is set up right."""
        await self._pool.execute(
            """UPDATE stripe_connections
                  SET webhook_verified_at = $2, last_webhook_at = $2, updated_at = now(),
                      status = CASE WHEN status IN ('webhook_unverified', 'polling_only') THEN 'connected' ELSE status END
                WHERE connection_id = $1""",
            connection_id, at,
        )

    async def record_webhooks_received(self, last_seen: dict[str, datetime]) -> None:
        """Stores the time of the latest real delivery per connection (batched by the receiver)."""
        if not last_seen:
            return
        await self._pool.execute(
            """UPDATE stripe_connections c SET last_webhook_at = GREATEST(c.last_webhook_at, v.at)
                 FROM unnest($1::text[], $2::timestamptz[]) AS v(connection_id, at)
                WHERE c.connection_id = v.connection_id""",
            list(last_seen), list(last_seen.values()),
        )

    async def set_connection_status(self, connection_id: str, status: str, reason: str | None = None) -> None:
        """Moves a connection to `status` with the reason a person will read."""
        await self._pool.execute(
            """UPDATE stripe_connections SET status = $2, status_reason = $3, status_changed_at = now(), updated_at = now()
                WHERE connection_id = $1""",
            connection_id, status, reason,
        )
