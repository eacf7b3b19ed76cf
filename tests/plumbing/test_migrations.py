"""Migrations apply once, in order, under a lock; an edited applied file is refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from plumbing.migrations import MigrationError, apply_migrations, read_migrations

pytestmark = pytest.mark.integration


@pytest.fixture
async def scratch_schema(clean_database: str) -> AsyncIterator[str]:
    """A fresh, empty schema that migrations in this test apply into (search_path set per connection)."""
    schema = f"mig_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(clean_database)
    await conn.execute(f"CREATE SCHEMA {schema}")
    yield schema
    await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    await conn.close()


async def connect(dsn: str, schema: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"search_path": schema})


def write(directory: Path, name: str, sql: str) -> None:
    (directory / name).write_text(sql)


async def test_applied_twice_the_second_run_is_a_no_op(tmp_path: Path, clean_database: str, scratch_schema: str) -> None:
    write(tmp_path, "0001_accounts.sql", "CREATE TABLE accounts (id int PRIMARY KEY);")
    write(tmp_path, "0002_seed.sql", "INSERT INTO accounts VALUES (1), (2);")
    conn = await connect(clean_database, scratch_schema)
    try:
        first = await apply_migrations(conn, tmp_path)
        second = await apply_migrations(conn, tmp_path)
        assert [m.version for m in first] == [1, 2]
        assert second == []
        assert await conn.fetchval("SELECT count(*) FROM accounts") == 2
    finally:
        await conn.close()


async def test_two_concurrent_runs_apply_each_file_once(tmp_path: Path, clean_database: str, scratch_schema: str) -> None:
    write(tmp_path, "0001_counter.sql", "CREATE TABLE counter (n int); INSERT INTO counter VALUES (0);")
    # pg_sleep widens the window in which an unlocked runner would apply the file a second time.
    write(tmp_path, "0002_bump.sql", "SELECT pg_sleep(0.3); UPDATE counter SET n = n + 1;")
    conns = [await connect(clean_database, scratch_schema) for _ in range(2)]
    try:
        results = await asyncio.gather(*(apply_migrations(c, tmp_path) for c in conns))
        assert sorted(len(r) for r in results) == [0, 2]
        assert await conns[0].fetchval("SELECT n FROM counter") == 1
    finally:
        for c in conns:
            await c.close()


async def test_a_failing_migration_leaves_nothing_behind(tmp_path: Path, clean_database: str, scratch_schema: str) -> None:
    write(tmp_path, "0001_ok.sql", "CREATE TABLE ok (id int);")
    write(tmp_path, "0002_broken.sql", "CREATE TABLE half (id int); SELECT * FROM no_such_table;")
    conn = await connect(clean_database, scratch_schema)
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await apply_migrations(conn, tmp_path)
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 1
    finally:
        await conn.close()


async def test_an_edited_applied_migration_is_refused(tmp_path: Path, clean_database: str, scratch_schema: str) -> None:
    write(tmp_path, "0001_t.sql", "CREATE TABLE t (id int);")
    conn = await connect(clean_database, scratch_schema)
    try:
        await apply_migrations(conn, tmp_path)
        write(tmp_path, "0001_t.sql", "CREATE TABLE t (id bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await apply_migrations(conn, tmp_path)
    finally:
        await conn.close()


def test_badly_named_or_duplicate_files_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "1_x.sql", "")
    with pytest.raises(MigrationError, match="NNNN_lowercase_words.sql"):
        read_migrations(tmp_path)
    (tmp_path / "1_x.sql").unlink()
    write(tmp_path, "0001_a.sql", "")
    write(tmp_path, "0001_b.sql", "")
    with pytest.raises(MigrationError, match="version 1 is used twice"):
        read_migrations(tmp_path)


def test_project_migrations_are_well_formed() -> None:
    from service.admin import MIGRATION_DIRS

    versions = [m.version for m in read_migrations(*MIGRATION_DIRS)]
    assert versions[0] == 1 and versions == sorted(set(versions))


def test_projection_migrations_follow_the_rules_replay_relies_on() -> None:
    """docs/migrations.md rules 2 and 3: replay copies the files with the schema lines into a fresh
    schema, and re-runs the marked ones after a swap."""
    import re

    from projections import MIGRATIONS_DIR
    from projections.projector.replay import RERUN_MARK, SCHEMA_LINE

    for migration in read_migrations(MIGRATIONS_DIR):
        unqualified = re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?([a-z_]+)\s*\(", migration.sql)
        assert not unqualified or SCHEMA_LINE.search(migration.sql), (migration.name, unqualified)
        assert "projection." not in re.sub(r"--.*", "", migration.sql) or migration.sql.startswith(RERUN_MARK) \
            or not SCHEMA_LINE.search(migration.sql), migration.name
        if "CREATE OR REPLACE VIEW analytics." in migration.sql or "CREATE VIEW analytics." in migration.sql:
            assert migration.sql.startswith(RERUN_MARK), migration.name
