"""Invariant 5 end to end: no key or webhook secret in API answers, logs or a database dump; master-key rotation."""

from __future__ import annotations

import asyncio
import io
from datetime import datetime, timezone

import asyncpg
import pytest

from ingestor.connections.rekey import master_keys_in_use, reencrypt_all
from ingestor.connections.store import PostgresConnectionStore
from ingestor.connections.vault import MasterKeyring, UnknownKeyIdError, generate_master_key
from service.worker import Worker
from stripe_sim import SimServer
from tests.ingestor.conftest import ControlClient, connect

pytestmark = pytest.mark.integration


async def pg_dump(dsn: str) -> str:
    """Returns a plain-SQL dump of the whole test database (schema and data)."""
    proc = await asyncio.create_subprocess_exec("pg_dump", "--no-owner", f"--dbname={dsn}",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_no_key_or_secret_in_answers_logs_or_a_database_dump(
    control: ControlClient, worker: Worker, sim: SimServer, clean_database: str, log_stream: io.StringIO
) -> None:
    account = sim.create_account(customers=6).id
    sim.set_rate_limit(account, 1000)
    first, second = sim.create_restricted_key(account), sim.create_restricted_key(account)
    partial, revoked = sim.create_restricted_key(account, permissions={"customers"}), sim.create_restricted_key(account)
    sim.revoke_key(revoked)
    secret_key = sim.secret_key(account)
    whsec_1, whsec_2 = "whsec_" + "Q1w2E3r4T5y6" * 3, "whsec_" + "Z9x8C7v6B5n4" * 3
    tenant, token = await control.tenant()
    base = f"/api/tenants/{tenant}"

    for key in (first, partial, revoked, secret_key, "  " + first + "  "):
        await control.call("POST", f"{base}/key-tests", token, {"key": key})
    await control.call("POST", f"{base}/connections", token, {"key": partial})  # refused, nothing stored
    assert (await control.call("POST", f"{base}/connections", token, {"key": first}))[0] == 201
    for secret in (whsec_1, whsec_2):
        assert (await control.call("PUT", f"{base}/connections/test/webhook-secret", token, {"secret": secret}))[0] == 200
    assert (await control.call("PUT", f"{base}/connections/test/key", token, {"key": second}))[0] == 200
    await control.call("POST", f"{base}/connections/test/test", token)
    connection_id = (await control.call("GET", f"{base}/connections/test", token))[1]["connection_id"]
    assert (await worker.importer.run_connection(connection_id)).state == "done"
    await worker.poller.poll_connection(connection_id)
    sim.revoke_key(second)  # errors on the worker paths are logged too
    await worker.poller.poll_connection(connection_id)
    await control.call("GET", base, token)
    await control.call("GET", f"{base}/audit", token)

    secrets = {"first": first, "second": second, "partial": partial, "revoked": revoked, "sk": secret_key,
               "whsec_1": whsec_1, "whsec_2": whsec_2}
    answers = b"\n".join(control.answers).decode()
    logs = log_stream.getvalue()
    dump = await pg_dump(clean_database)
    assert "restricted key stored" in logs and "key_invalid" in logs  # the capture did capture
    for name, secret in secrets.items():
        body = secret.split("_", 2)[-1]
        for where, text in (("API answers", answers), ("logs", logs), ("pg_dump", dump)):
            assert body not in text, f"the {name} secret appears in the {where}"


async def test_master_key_rotation_reencrypts_everything_and_the_old_key_decrypts_nothing(
    control: ControlClient, sim: SimServer, pg: asyncpg.Connection
) -> None:
    account = sim.create_account(customers=2).id
    sim.set_rate_limit(account, 1000)
    mine = []
    for name in ("R1", "R2"):
        tenant, token, connection_id, key = await connect(control, sim, account, name)
        await control.call("PUT", f"/api/tenants/{tenant}/connections/test/webhook-secret", token,
                           {"secret": "whsec_" + name * 16})
        await control.call("PUT", f"/api/tenants/{tenant}/connections/test/webhook-secret", token,
                           {"secret": "whsec_" + name * 17})  # a rolled secret in its grace period too
        mine.append((connection_id, key, name))
    old_only = control.keyring
    new_entry = generate_master_key("k2")
    rotated = MasterKeyring.from_setting(f"{new_entry},{control.master_keys}")
    report = await reencrypt_all(control.pool, rotated)
    assert report.reencrypted >= 2 * 4  # per connection: key, webhook token, two secrets

    ids = [c for c, _, _ in mine]
    blobs = await pg.fetch(
        """SELECT key_ciphertext AS b FROM stripe_connections WHERE connection_id = ANY($1)
           UNION ALL SELECT webhook_token_ciphertext FROM stripe_connections WHERE connection_id = ANY($1)
           UNION ALL SELECT ciphertext FROM webhook_secrets WHERE connection_id = ANY($1)""", ids)
    assert len(blobs) == 8 and {rotated.needs_reencrypt(r["b"]) for r in blobs} == {False}
    assert not any(f"{t}:{c}:" for t, c, _ in report.failed if _ in ids)
    assert (await master_keys_in_use(control.pool))["k2"] >= 8

    new_only = PostgresConnectionStore(control.pool, MasterKeyring.from_setting(new_entry))
    stale = PostgresConnectionStore(control.pool, old_only)
    for connection_id, key, name in mine:
        assert await new_only.load_key(connection_id) == (key, 1)
        connection = await new_only.get_connection(connection_id)
        assert connection is not None
        target = await new_only.webhook_target(await new_only.webhook_token(connection), datetime.now(timezone.utc))
        assert target is not None and target.signing_secrets == ("whsec_" + name * 17, "whsec_" + name * 16)
        with pytest.raises(UnknownKeyIdError):
            await stale.load_key(connection_id)
        with pytest.raises(UnknownKeyIdError):
            await stale.webhook_token(connection)

