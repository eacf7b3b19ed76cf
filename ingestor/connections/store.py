"""Postgres storage of Stripe connections; their secrets go in and out through the vault.

Nothing here returns a key or a signing secret except `webhook_target` (signing secrets, for the
receiver) and `load_key` (the restricted key, for the poller, importer and re-test), which decrypt
in memory just before use. Tokens (tenant API tokens, webhook URL tokens) are looked up by their
SHA-256 so the database never answers "which token is this". Status changes caused by Stripe
errors are conditional on `key_version`, so a 401 seen with a key that was just rotated away
never marks the new key invalid.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import asyncpg

from ingestor.connections.vault import associated_data
from ingestor.errors import KeyInvalidError
from plumbing.masking import mask_key
from plumbing.postgres import translates_database_errors


class SecretBox(Protocol):
    """What the store needs of the key vault: authenticated encryption bound to an owner."""

    def encrypt(self, plaintext: str, aad: bytes) -> bytes: ...

    def decrypt(self, blob: bytes, aad: bytes) -> str: ...


def token_digest(token: str) -> bytes:
    """Returns the SHA-256 under which a token is stored and looked up."""
    return hashlib.sha256(token.encode()).digest()


# An error that leaves the connection's status as it is (`record_error`): one that moves none, or a 429 of a request
# in flight when the key was found dead (it says nothing new of the key; a status that reads again would try it).
_KEEPS_STATUS = "($2::text IS NULL OR ($2::text = 'rate_limited' AND status IN ('key_invalid', 'permission_missing')))"
# The status a connection without a problem has: derived from its webhook set-up.
HEALTHY_STATUS_SQL = """CASE WHEN c.webhook_verified_at IS NOT NULL THEN 'connected'
     WHEN EXISTS (SELECT 1 FROM webhook_secrets s WHERE s.connection_id = c.connection_id) THEN 'webhook_unverified'
     ELSE 'polling_only' END"""
CONNECTION_COLUMNS = """c.connection_id, c.tenant_id, c.livemode, c.status, c.status_reason, c.status_changed_at,
       c.key_hint, c.key_version, c.key_ciphertext IS NOT NULL AS has_key, c.key_tested_at,
       c.webhook_verified_at, c.last_webhook_at, c.webhook_over_share_at, c.last_poll_at, c.last_error_code,
       c.last_error, c.last_error_at, c.catchup_needed_since, c.created_at,
       (SELECT min(t.pages_read_alone_since) FROM stripe_connections t WHERE t.tenant_id = c.tenant_id)
           AS pages_read_alone_since,
       ARRAY(SELECT s.hint FROM webhook_secrets s WHERE s.connection_id = c.connection_id
              AND (s.expires_at IS NULL OR s.expires_at > now()) ORDER BY s.secret_id DESC) AS webhook_secret_hints"""


def key_aad(tenant_id: str, connection_id: str) -> bytes:
    """Returns the associated data binding a restricted key's ciphertext to its connection."""
    return associated_data(tenant_id=tenant_id, connection_id=connection_id, purpose="stripe_key")


@dataclass(frozen=True, slots=True)
class Connection:
    """A connection as the control API, poller and importer see it: no secret, hints only."""

    connection_id: str
    tenant_id: str
    livemode: bool
    status: str
    status_reason: str | None
    status_changed_at: datetime
    key_hint: str | None
    key_version: int
    has_key: bool
    key_tested_at: datetime | None
    webhook_verified_at: datetime | None
    last_webhook_at: datetime | None
    last_poll_at: datetime | None
    last_error_code: str | None
    last_error: str | None
    last_error_at: datetime | None
    catchup_needed_since: datetime | None
    created_at: datetime
    webhook_secret_hints: tuple[str, ...]
    # Since when every worker reads the tenant's import pages alone (a page of its import killed the process
    # reading it): the tenant's mark, the same on each of its connections.
    pages_read_alone_since: datetime | None = None
    # When the receiver last refused a delivery to its URL for being over the connection's share of the work.
    webhook_over_share_at: datetime | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Connection:
        """Builds the value from a row selected with CONNECTION_COLUMNS."""
        values = dict(row)
        values["webhook_secret_hints"] = tuple(values["webhook_secret_hints"] or ())
        return cls(**values)

    @property
    def mode(self) -> str:
        """Returns "live" or "test"."""
        return "live" if self.livemode else "test"


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


@translates_database_errors
class PostgresConnectionStore:
    """Connections, their encrypted keys and webhook secrets, and their status, in Postgres."""

    def __init__(self, pool: asyncpg.Pool, vault: SecretBox):
        self._pool = pool
        self._vault = vault

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

    async def new_webhook_token(self, connection_id: str, tenant_id: str) -> str:
        """Gives the connection a new webhook URL token and returns it: the old URL stops at once (a URL someone
        else holds can spend the connection's share of the receiver)."""
        webhook_token = secrets.token_urlsafe(32)
        aad = associated_data(tenant_id=tenant_id, connection_id=connection_id, purpose="webhook_token")
        await self._pool.execute(
            """UPDATE stripe_connections SET webhook_token_sha256 = $2, webhook_token_ciphertext = $3, updated_at = now()
                WHERE connection_id = $1""",
            connection_id, token_digest(webhook_token), self._vault.encrypt(webhook_token, aad),
        )
        return webhook_token

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
                connection_id, self._vault.encrypt(secret, aad), mask_key(secret),
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
        """Records that a test delivery arrived: the webhook is set up right. A connection verified within the last
        minute is left as it is: a tenant sending many test webhooks (each within its share) writes no row."""
        await self._pool.execute(
            """UPDATE stripe_connections
                  SET webhook_verified_at = $2, last_webhook_at = $2, updated_at = now(),
                      status = CASE WHEN status IN ('webhook_unverified', 'polling_only') THEN 'connected' ELSE status END
                WHERE connection_id = $1
                  AND (webhook_verified_at IS NULL OR webhook_verified_at < $2::timestamptz - interval '1 minute'
                       OR status IN ('webhook_unverified', 'polling_only'))""",
            connection_id, at,
        )

    async def record_webhooks_received(self, last_seen: dict[str, datetime]) -> None:
        """Stores the time of the latest real delivery per connection (batched by the receiver)."""
        await self._record_latest("last_webhook_at", last_seen)

    async def record_webhooks_over_share(self, last_refused: dict[str, datetime]) -> None:
        """Stores when each connection last had a delivery refused for being over its share (batched by the receiver)."""
        await self._record_latest("webhook_over_share_at", last_refused)

    async def _record_latest(self, column: str, latest: dict[str, datetime]) -> None:
        if not latest:
            return
        await self._pool.execute(
            f"""UPDATE stripe_connections c SET {column} = GREATEST(c.{column}, v.at)
                  FROM unnest($1::text[], $2::timestamptz[]) AS v(connection_id, at)
                 WHERE c.connection_id = v.connection_id""",
            list(latest), list(latest.values()),
        )

    async def set_connection_status(self, connection_id: str, status: str, reason: str | None = None) -> None:
        """Moves a connection to `status` with the reason a person will read."""
        await self._pool.execute(
            """UPDATE stripe_connections SET status = $2, status_reason = $3, status_changed_at = now(), updated_at = now()
                WHERE connection_id = $1""",
            connection_id, status, reason,
        )

    async def find_connection(self, tenant_id: str, livemode: bool) -> Connection | None:
        """Returns the tenant's connection for one mode, or None."""
        row = await self._pool.fetchrow(
            f"SELECT {CONNECTION_COLUMNS} FROM stripe_connections c WHERE c.tenant_id = $1 AND c.livemode = $2",
            tenant_id, livemode,
        )
        return Connection.from_row(row) if row else None

    async def held_object_ids(self, tenant_id: str, livemode: bool, limit: int = 3) -> list[tuple[str, str]]:
        """Returns a few (resource, id) of Stripe objects the tenant's tables hold in one mode, newest first: charges
        (Stripe never deletes one), else customers. Empty when nothing was projected yet."""
        for resource, table in (("charges", "projection.charges"), ("customers", "projection.customers")):
            rows = await self._pool.fetch(f"SELECT id FROM {table} WHERE tenant_id = $1 AND livemode = $2 "
                                          "ORDER BY state_time DESC LIMIT $3", tenant_id, livemode, limit)
            if rows:
                return [(resource, r["id"]) for r in rows]
        return []

    async def get_connection(self, connection_id: str) -> Connection | None:
        """Returns one connection by id, or None."""
        row = await self._pool.fetchrow(
            f"SELECT {CONNECTION_COLUMNS} FROM stripe_connections c WHERE c.connection_id = $1", connection_id
        )
        return Connection.from_row(row) if row else None

    async def connections_with_keys(self) -> list[Connection]:
        """Returns every connection that has a stored key (pollable unless its status says otherwise)."""
        rows = await self._pool.fetch(
            f"SELECT {CONNECTION_COLUMNS} FROM stripe_connections c WHERE c.key_ciphertext IS NOT NULL "
            "ORDER BY c.connection_id"
        )
        return [Connection.from_row(r) for r in rows]

    async def webhook_token(self, connection: Connection) -> str:
        """Returns the connection's webhook URL token (decrypted, to show the URL again)."""
        blob = await self._pool.fetchval(
            "SELECT webhook_token_ciphertext FROM stripe_connections WHERE connection_id = $1", connection.connection_id
        )
        aad = associated_data(tenant_id=connection.tenant_id, connection_id=connection.connection_id, purpose="webhook_token")
        return self._vault.decrypt(blob, aad)

    async def store_key(self, connection_id: str, key: str, hint: str, now: datetime) -> int:
        """Replaces the restricted key atomically (the old one is gone); returns the new key version.

        The status becomes the healthy one for the webhook set-up and the last error is cleared.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            tenant_id = await conn.fetchval(
                "SELECT tenant_id FROM stripe_connections WHERE connection_id = $1 FOR UPDATE", connection_id
            )
            version: int = await conn.fetchval(
                f"""UPDATE stripe_connections c
                       SET key_ciphertext = $2, key_hint = $3, key_version = c.key_version + 1, key_tested_at = $4,
                           status = {HEALTHY_STATUS_SQL}, status_reason = NULL, status_changed_at = $4,
                           last_error_code = NULL, last_error = NULL, last_error_at = NULL, updated_at = $4
                     WHERE c.connection_id = $1 RETURNING c.key_version""",
                connection_id, self._vault.encrypt(key, key_aad(tenant_id, connection_id)), hint, now,
            )
        return version

    async def load_key(self, connection_id: str) -> tuple[str, int] | None:
        """Returns (restricted key, key version), decrypted just now, or None if there is no key."""
        return await self._stored_key(connection_id, unless_refused=False)

    async def load_key_unless_refused(self, connection_id: str) -> tuple[str, int] | None:
        """Returns (restricted key, key version) like `load_key`, or raises KeyInvalidError without decrypting it
        when Stripe already refused it (`key_invalid`): asked again, Stripe refuses it again, and many requests with
        refused keys from our address could have Stripe refuse it for every tenant."""
        return await self._stored_key(connection_id, unless_refused=True)

    async def _stored_key(self, connection_id: str, unless_refused: bool) -> tuple[str, int] | None:
        row = await self._pool.fetchrow(
            "SELECT tenant_id, key_ciphertext, key_version, status FROM stripe_connections WHERE connection_id = $1",
            connection_id,
        )
        if row is None or row["key_ciphertext"] is None:
            return None
        if unless_refused and row["status"] == "key_invalid":
            raise KeyInvalidError("Stripe refused the connection's key (rotated or revoked); a new one is needed")
        return self._vault.decrypt(row["key_ciphertext"], key_aad(row["tenant_id"], connection_id)), row["key_version"]

    async def record_error(
        self, connection_id: str, status: str | None, code: str, message: str, now: datetime,
        key_version: int | None = None,
    ) -> bool:
        """Stores the last error (and moves to `status` if given); returns False if the key changed since.

        With `key_version`, nothing happens unless the stored key is still that version: a 401 seen
        with a key rotated away in the meantime says nothing about the new key. A connection stopped for its
        key (`key_invalid`, `permission_missing`) stays so on a later 429 (`rate_limited`) of a request that was
        in flight: that says nothing new of the key, and moving to a status that reads again would make the
        next pass try the dead key once more.
        """
        result = await self._pool.execute(
            f"""UPDATE stripe_connections
                  SET status = CASE WHEN {_KEEPS_STATUS} THEN status ELSE $2::text END,
                      status_reason = CASE WHEN {_KEEPS_STATUS} THEN status_reason ELSE $4 END,
                      status_changed_at = CASE WHEN {_KEEPS_STATUS} OR $2 = status THEN status_changed_at ELSE $5 END,
                      last_error_code = $3, last_error = $4, last_error_at = $5, updated_at = $5
                WHERE connection_id = $1 AND status <> 'disconnected' AND ($6::int IS NULL OR key_version = $6)""",
            connection_id, status, code, message, now, key_version,
        )
        return bool(result != "UPDATE 0")

    async def recover(self, connection_id: str, from_statuses: tuple[str, ...], now: datetime) -> None:
        """Moves a connection in one of `from_statuses` back to its healthy status."""
        await self._pool.execute(
            f"""UPDATE stripe_connections c SET status = {HEALTHY_STATUS_SQL}, status_reason = NULL,
                       status_changed_at = $3, updated_at = $3
                 WHERE c.connection_id = $1 AND c.status = ANY($2::text[])""",
            connection_id, list(from_statuses), now,
        )

    async def webhook_secret_added(self, connection_id: str) -> None:
        """A polling-only connection with a signing secret now waits for its test delivery."""
        await self._pool.execute(
            """UPDATE stripe_connections SET status = 'webhook_unverified', status_changed_at = now(), updated_at = now()
                WHERE connection_id = $1 AND status = 'polling_only'""",
            connection_id,
        )

    async def has_polled(self, connection_id: str) -> bool:
        """Whether a poll of the connection has stored its cursor (what it reads next starts from there)."""
        return bool(await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM poll_cursors WHERE connection_id = $1)", connection_id))

    async def record_poll(self, connection_id: str, at: datetime) -> None:
        """Stores when the connection was last polled successfully."""
        await self._pool.execute(
            "UPDATE stripe_connections SET last_poll_at = $2 WHERE connection_id = $1", connection_id, at
        )

    async def set_catchup_needed(self, connection_id: str, since: datetime | None) -> None:
        """Marks (or, with None, clears) that a catch-up import must cover a poll gap."""
        await self._pool.execute(
            "UPDATE stripe_connections SET catchup_needed_since = $2, updated_at = now() WHERE connection_id = $1",
            connection_id, since,
        )

    async def set_pages_read_alone(self, tenant_id: str) -> datetime | None:
        """Records that every worker must read the tenant's import pages alone, on each of its connections (as
        the page pool tells tenants apart); the first time stays. Returns the tenant's mark as it now stands (what
        `Connection.pages_read_alone_since` shows), None for a tenant without connections."""
        since: datetime | None = await self._pool.fetchval(
            "WITH marked AS (UPDATE stripe_connections SET pages_read_alone_since = coalesce(pages_read_alone_since, "
            "now()), updated_at = now() WHERE tenant_id = $1 RETURNING pages_read_alone_since) "
            "SELECT min(pages_read_alone_since) FROM marked", tenant_id,
        )
        return since

    async def disconnect(self, connection_id: str, now: datetime) -> None:
        """Deletes the key and every signing secret; polling and import stop (status `disconnected`)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM webhook_secrets WHERE connection_id = $1", connection_id)
            await conn.execute("DELETE FROM poll_cursors WHERE connection_id = $1", connection_id)
            await conn.execute("DELETE FROM poll_claims WHERE connection_id = $1", connection_id)  # a poll under way saves nothing
            await conn.execute(
                "UPDATE import_runs SET paused_reason = 'disconnected' WHERE connection_id = $1 AND done_at IS NULL",
                connection_id,
            )
            await conn.execute(
                """UPDATE stripe_connections
                      SET key_ciphertext = NULL, key_hint = NULL, status = 'disconnected',
                          status_reason = 'disconnected by the tenant', status_changed_at = $2, updated_at = $2,
                          webhook_verified_at = NULL, catchup_needed_since = NULL
                    WHERE connection_id = $1""",
                connection_id, now,
            )


async def tenants_with_pages_read_alone(pool: asyncpg.Pool) -> list[tuple[str, datetime]]:
    """Each tenant whose import pages every worker reads alone (`set_pages_read_alone`), and since when (oldest
    first). Needs no master key: it touches no secret."""
    rows = await pool.fetch(
        "SELECT tenant_id, min(pages_read_alone_since) AS since FROM stripe_connections "
        "WHERE pages_read_alone_since IS NOT NULL GROUP BY tenant_id ORDER BY since, tenant_id")
    return [(row["tenant_id"], row["since"]) for row in rows]


async def clear_pages_read_alone(pool: asyncpg.Pool, tenant_id: str) -> int:
    """Lets the tenant's import pages share the page pool again (a release reads the page that was to blame
    safely); each worker learns it at its next pass over one of the tenant's connections. Returns how many
    connections were marked."""
    status = await pool.execute(
        "UPDATE stripe_connections SET pages_read_alone_since = NULL, updated_at = now() "
        "WHERE tenant_id = $1 AND pages_read_alone_since IS NOT NULL", tenant_id,
    )
    return int(status.split()[-1])
