"""Hostile readers against the database: what one tenant's reader role can do to another tenant's.

Each tenant reads through login roles of its own (migration 0010). These are the attacks that worked
when tenants shared one login role per level, and the ones that held, each a test that fails if the
hole reopens. docs/security.md lists them with the guarantee each proves.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from stack import postgres
from stack.up import Platform
from tests.conftest import TEST_DATABASE

pytestmark = pytest.mark.integration
CONNECTION_LIMIT = 3
STATEMENT_TIMEOUT_MS = 400


class Readers:
    """Two tenants' reader roles (standard level) and a way to log in as each."""

    def __init__(self, owner: asyncpg.Pool, dsn: str):
        self.owner, self.dsn = owner, dsn
        self.logins: dict[str, tuple[str, str]] = {}

    async def make(self, tenant: str) -> None:
        password = secrets.token_urlsafe(16)
        role = await self.owner.fetchval(
            "SELECT analytics_private.ensure_reader_role($1, 'standard', $2, $3, $4, 2000, 65536)",
            tenant, password, CONNECTION_LIMIT, STATEMENT_TIMEOUT_MS)
        self.logins[tenant] = (role, password)

    async def connect(self, tenant: str) -> asyncpg.Connection:
        role, password = self.logins[tenant]
        return await asyncpg.connect(self.dsn, user=role, password=password)


@pytest.fixture(scope="module")
async def readers(platform: Platform, clean_database: str) -> AsyncIterator[Readers]:
    owner = await asyncpg.create_pool(clean_database, min_size=1, max_size=2)
    made = Readers(owner, postgres.reader_dsn(platform.cluster, TEST_DATABASE))
    suffix = secrets.token_hex(4)
    for name in ("a", "b"):
        await made.make(f"sec_{name}_{suffix}")
    made.logins = {name[4]: login for name, login in made.logins.items()}
    yield made
    await owner.close()


async def test_a_reader_cannot_see_another_tenants_query_text(readers: Readers) -> None:
    b = await readers.connect("b")
    a = await readers.connect("a")
    try:
        marker = f"secret_literal_{secrets.token_hex(4)}"

        async def b_running() -> bool:  # as the owner sees it: the statement, marker and all, is running
            return bool(await readers.owner.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND strpos(query, $1) > 0", marker))

        # The attack's timing: A looks while B's statement runs (within B's 400 ms statement limit); a try in
        # which B ended before A looked proves nothing, so it is tried again.
        looked_while_running = False
        for _ in range(10):
            b_query = asyncio.create_task(b.fetchval(f"SELECT pg_sleep(0.35), '{marker}'"))
            while not (b_query.done() or await b_running()):
                await asyncio.sleep(0.01)
            if not b_query.done():
                rows = await a.fetch("SELECT usename, query FROM pg_stat_activity")
                looked_while_running = await b_running()
            await b_query
            if looked_while_running:
                break
        assert looked_while_running, "A never looked while B's statement ran"
    finally:
        await a.close()
        await b.close()
    assert not any(marker in (r["query"] or "") for r in rows)
    assert all(r["query"] in (None, "<insufficient privilege>") for r in rows if r["usename"] == readers.logins["b"][0])


async def test_a_reader_cannot_end_or_cancel_another_tenants_session(readers: Readers) -> None:
    b = await readers.connect("b")
    a = await readers.connect("a")
    try:
        b_pid = await b.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await a.fetchval("SELECT pg_terminate_backend($1)", b_pid)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await a.fetchval("SELECT pg_cancel_backend($1)", b_pid)
        assert await b.fetchval("SELECT 1") == 1  # still alive
    finally:
        await a.close()
        await b.close()


async def test_a_tenant_holding_all_its_connections_does_not_deny_another(readers: Readers) -> None:
    held = [await readers.connect("a") for _ in range(CONNECTION_LIMIT)]
    try:
        with pytest.raises(asyncpg.TooManyConnectionsError):
            await readers.connect("a")
        b = await readers.connect("b")
        assert await b.fetchval("SELECT count(*) FROM analytics.daily_revenue") == 0
        await b.close()
    finally:
        for conn in held:
            await conn.close()


@pytest.mark.parametrize("sql", [
    "SELECT lo_from_bytea(0, 'x')",
    "SELECT lo_create(0)",
    "SELECT lo_import('/etc/passwd')",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_ls_dir('.')",
    "COPY (SELECT 1) TO PROGRAM 'id'",
    "CREATE TEMP TABLE t (x int)",
    "CREATE TABLE public.t (x int)",
    "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "SET ROLE revenue_reader_full",
    "SET SESSION AUTHORIZATION ingestor",
    "ALTER ROLE CURRENT_USER SET statement_timeout = 0",
    "SET temp_file_limit = '10GB'",
], ids=["lo_from_bytea", "lo_create", "lo_import", "read-file", "list-dir", "copy-to-program", "temp-table",
        "create-table", "create-function", "become-full", "become-owner", "raise-own-limits", "raise-temp-limit"])
async def test_a_reader_writes_nothing_reaches_no_file_and_cannot_raise_its_limits(readers: Readers, sql: str) -> None:
    a = await readers.connect("a")
    try:
        with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.ReadOnlySQLTransactionError)):
            await a.execute(sql)
    finally:
        await a.close()


async def test_the_limits_live_in_the_database_not_in_the_client(readers: Readers) -> None:
    a = await readers.connect("a")  # a bare asyncpg connection: no client-side timeout or read-only flag
    try:
        assert await a.fetchval("SHOW default_transaction_read_only") == "on"
        assert await a.fetchval("SHOW statement_timeout") == f"{STATEMENT_TIMEOUT_MS}ms"
        with pytest.raises(asyncpg.QueryCanceledError):
            await a.execute("SELECT pg_sleep(5)")
    finally:
        await a.close()


async def test_a_forged_or_stolen_context_does_not_move_a_reader_to_another_tenant(readers: Readers) -> None:
    a = await readers.connect("a")
    try:
        own = await a.fetchval("SELECT analytics.current_tenant()")
        assert own.startswith("sec_a_")
        b_tenant = own.replace("sec_a_", "sec_b_")
        # Even with a valid signature (made by the owner, e.g. leaked), a tenant reader stays itself.
        expires = "9999999999"
        signature = await readers.owner.fetchval("SELECT analytics_private.tenant_signature($1, $2)",
                                                 b_tenant, int(expires))
        await a.execute("SELECT set_config('app.tenant_id', $1, false), set_config('app.tenant_expires', $2, false), "
                        "set_config('app.tenant_sig', $3, false)", b_tenant, expires, signature)
        assert await a.fetchval("SELECT analytics.current_tenant()") == own
    finally:
        await a.close()


async def test_an_owner_context_expires(readers: Readers) -> None:
    async with readers.owner.acquire() as conn:
        expired = "1000000000"  # 2001
        signature = await conn.fetchval("SELECT analytics_private.tenant_signature('t', $1)", int(expired))
        await conn.execute("SELECT set_config('app.tenant_id', 't', false), set_config('app.tenant_expires', $1, false), "
                           "set_config('app.tenant_sig', $2, false)", expired, signature)
        assert await conn.fetchval("SELECT analytics.current_tenant()") is None
        await conn.execute("RESET app.tenant_id; RESET app.tenant_expires; RESET app.tenant_sig")


async def test_dropping_a_tenant_drops_its_roles_and_ends_their_sessions(readers: Readers) -> None:
    tenant = f"sec_gone_{secrets.token_hex(4)}"
    await readers.make(tenant)
    session = await readers.connect(tenant)
    assert await readers.owner.fetchval("SELECT analytics_private.drop_reader_roles($1)", tenant) == 1
    # The server ends the session; asyncpg reports it by how the notice met its connection (over TLS, a lost
    # connection; over plain TCP, often the notice arriving as the next query starts: an InternalClientError).
    ended = (asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError, asyncpg.InterfaceError,
             asyncpg.InternalClientError)
    with pytest.raises(ended):
        await session.fetchval("SELECT 1")
    with pytest.raises(ended):  # and it stays ended
        await session.fetchval("SELECT 1")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await readers.connect(tenant)
