"""Versioned SQL migrations: applied once, in order, each in its own transaction, under a lock.

Files are `NNNN_description.sql`, in one or more folders (the control plane's and the projections'),
applied as one list ordered by version; a version is unique across the folders. The runner holds a Postgres advisory lock for the
whole run so two processes starting together cannot apply the same file twice; each applied file
is recorded with its checksum, and a file changed after it was applied is refused, not re-run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
# An arbitrary, fixed advisory-lock id for "schema migrations of this project".
MIGRATION_LOCK_ID = 0x5EED_0001


class MigrationError(Exception):
    """The migration files or the database's migration history are inconsistent."""

    retriable = False


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file: its version, name, text and checksum."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """Returns the SHA-256 of the file's text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def read_migrations(*directories: Path) -> list[Migration]:
    """Returns the migrations in `directories` sorted by version; raises MigrationError on a bad name or duplicate."""
    found: dict[int, Migration] = {}
    for path in sorted(p for directory in directories for p in directory.glob("*.sql")):
        match = MIGRATION_FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lowercase_words.sql")
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"{path.name}: version {version} is used twice")
        found[version] = Migration(version, match["name"], path.read_text())
    return [found[v] for v in sorted(found)]


async def apply_migrations(conn: asyncpg.Connection, *directories: Path) -> list[Migration]:
    """Applies the pending migrations of `directories` in version order and returns them; a second run applies none."""
    migrations = read_migrations(*directories)
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        # Migrations may change search_path for their own transaction (SET LOCAL); the history
        # table stays where it was found.
        history = '"{}".schema_migrations'.format(await conn.fetchval("SELECT current_schema()"))
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {history} (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {
            row["version"]: row["checksum"]
            for row in await conn.fetch(f"SELECT version, checksum FROM {history}")
        }
        pending = []
        for migration in migrations:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            pending.append(migration)
        for migration in pending:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    f"INSERT INTO {history} (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
        return pending
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
