"""Master-key rotation: re-encrypt every stored secret with the keyring's current master key.

Place in the flow: an operator puts a new master key first in INGESTOR_VAULT__MASTER_KEYS (old
keys after it) and runs `ingestor rotate-master-key`; this module decrypts each ciphertext made
with an older key and encrypts it again with the current one, row by row, each in its own
transaction with the row locked. When it reports nothing left under an old key, the old keys can
be removed from the setting. Plaintexts exist only in memory, one at a time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import asyncpg

from ingestor.connections.store import key_aad
from ingestor.connections.vault import MasterKeyring, VaultError, associated_data, ciphertext_key_id

# (table, primary key column, ciphertext column, purpose, how to find the tenant and connection)
_BLOBS = (
    ("stripe_connections", "connection_id", "key_ciphertext", "stripe_key",
     "SELECT connection_id AS pk, tenant_id, connection_id, key_ciphertext AS blob FROM stripe_connections "
     "WHERE key_ciphertext IS NOT NULL"),
    ("stripe_connections", "connection_id", "webhook_token_ciphertext", "webhook_token",
     "SELECT connection_id AS pk, tenant_id, connection_id, webhook_token_ciphertext AS blob FROM stripe_connections"),
    ("webhook_secrets", "secret_id", "ciphertext", "webhook_secret",
     "SELECT s.secret_id AS pk, c.tenant_id, s.connection_id, s.ciphertext AS blob "
     "FROM webhook_secrets s JOIN stripe_connections c USING (connection_id)"),
    ("reader_credentials", "role_name", "password_ciphertext", "reader_password",
     "SELECT role_name AS pk, tenant_id, role_name AS connection_id, password_ciphertext AS blob FROM reader_credentials"),
)


def _aad(purpose: str, tenant_id: str, connection_id: str) -> bytes:
    if purpose == "stripe_key":
        return key_aad(tenant_id, connection_id)
    return associated_data(tenant_id=tenant_id, connection_id=connection_id, purpose=purpose)


@dataclass
class RekeyReport:
    """What a re-encryption pass did: how many ciphertexts moved, which could not be decrypted."""

    reencrypted: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (table, column, row id), never contents


async def reencrypt_all(pool: asyncpg.Pool, keyring: MasterKeyring) -> RekeyReport:
    """Re-encrypts every ciphertext not made with the current master key.

    A ciphertext that does not decrypt (its master key is missing, or it was altered) is reported
    by table and row, and the pass carries on with the others.
    """
    report = RekeyReport()
    for table, pk, column, purpose, select in _BLOBS:
        for row in await pool.fetch(select):
            if not keyring.needs_reencrypt(row["blob"]):
                continue
            async with pool.acquire() as conn, conn.transaction():
                blob = await conn.fetchval(f"SELECT {column} FROM {table} WHERE {pk} = $1 FOR UPDATE", row["pk"])
                if blob is None or not keyring.needs_reencrypt(blob):
                    continue  # changed meanwhile (rotated key, deleted secret): nothing to do
                aad = _aad(purpose, row["tenant_id"], row["connection_id"])
                try:
                    fresh = keyring.reencrypt(blob, aad)
                except VaultError:
                    report.failed.append((table, column, str(row["pk"])))
                    continue
                await conn.execute(f"UPDATE {table} SET {column} = $2 WHERE {pk} = $1", row["pk"], fresh)
                report.reencrypted += 1
    return report


async def master_keys_in_use(pool: asyncpg.Pool) -> Counter[str]:
    """Returns how many stored ciphertexts each master key id encrypted."""
    used: Counter[str] = Counter()
    for _, _, _, _, select in _BLOBS:
        for row in await pool.fetch(select):
            used[ciphertext_key_id(row["blob"])] += 1
    return used
