"""Debian's PostgreSQL: installed with apt-get where missing, started with pg_ctlcluster, role and databases created."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stack import StackError
from stack.progress import say

ROLE = "ingestor"
PASSWORD = "ingestor"  # a local development password; production DSNs come from settings
# What only a superuser can do, once per database (the product's file, for production DBAs too).
DATABASE_SETUP = Path(__file__).resolve().parents[1] / "service" / "sql" / "database_setup.sql"
DATABASES = ("ingestor", "ingestor_test", "ingestor_bench")


@dataclass(frozen=True)
class Cluster:
    """One row of `pg_lsclusters`."""

    version: str
    name: str
    port: int
    online: bool


# Debian's clusters serve TLS (a snakeoil certificate) and asyncpg asks for it by default: over loopback it protects
# nothing, and its writes alone were 7 % of the importer's event loop in a profile (every checkpoint and budget lease).
LOOPBACK = "sslmode=disable"


def dsn(cluster: Cluster, database: str) -> str:
    """Returns the connection string of `database` on `cluster` as the project's role."""
    return f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{cluster.port}/{database}?{LOOPBACK}"


def reader_dsn(cluster: Cluster, database: str = "ingestor") -> str:
    """Returns the readers' server and database (each tenant's role and password come from the vault)."""
    return f"postgresql://127.0.0.1:{cluster.port}/{database}?{LOOPBACK}"


def ensure_installed() -> None:
    """Installs Debian's postgresql package if the server tools are missing."""
    if shutil.which("pg_ctlcluster") and shutil.which("pg_lsclusters") and _clusters_or_versions():
        return
    say("PostgreSQL is missing: installing Debian's postgresql with apt-get…")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        result = subprocess.run(_as_root(cmd), capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise StackError(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")


def _clusters_or_versions() -> bool:
    return os.path.isdir("/usr/lib/postgresql") and bool(os.listdir("/usr/lib/postgresql"))


def clusters() -> list[Cluster]:
    """Returns the clusters `pg_lsclusters` knows."""
    out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            found.append(Cluster(parts[0], parts[1], int(parts[2]), parts[3].startswith("online")))
    return found


def start() -> Cluster:
    """Starts (or creates and starts) the first cluster and returns it; reuses a running one."""
    ensure_installed()
    found = clusters()
    if not found:
        version = sorted(os.listdir("/usr/lib/postgresql"), key=int)[-1]
        say(f"creating PostgreSQL {version} cluster 'main'…")
        _run(["pg_createcluster", version, "main"])
        found = clusters()
    cluster = found[0]
    if not cluster.online:
        say(f"starting PostgreSQL {cluster.version}/{cluster.name} on port {cluster.port}…")
        _run(["pg_ctlcluster", cluster.version, cluster.name, "start"])
        cluster = Cluster(cluster.version, cluster.name, cluster.port, True)
    _ensure_role_and_databases(cluster)
    say(f"PostgreSQL ready on 127.0.0.1:{cluster.port}")
    return cluster


def stop() -> None:
    """Stops the running clusters (a no-op when none runs)."""
    for cluster in clusters():
        if cluster.online:
            say(f"stopping PostgreSQL {cluster.version}/{cluster.name}…")
            _run(["pg_ctlcluster", cluster.version, cluster.name, "stop", "-m", "fast"])


def restart(cluster: Cluster) -> None:
    """Restarts a cluster (used by fault tests)."""
    _run(["pg_ctlcluster", cluster.version, cluster.name, "restart", "-m", "fast"])


def _ensure_role_and_databases(cluster: Cluster) -> None:
    role_sql = (
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN "
        f"CREATE ROLE {ROLE} LOGIN CREATEROLE PASSWORD '{PASSWORD}'; END IF; END $$;"
    )
    _psql(cluster, role_sql)
    existing = _psql(cluster, "SELECT datname FROM pg_database", tuples=True).split()
    for database in DATABASES:
        if database not in existing:
            _psql(cluster, f"CREATE DATABASE {database} OWNER {ROLE}")
        _psql(cluster, DATABASE_SETUP.read_text(), database=database)


def ensure_database(cluster: Cluster, database: str) -> None:
    """Creates one more database owned by the project's role, if missing."""
    if not database.replace("_", "").isalnum():
        raise StackError(f"not a plain database name: {database!r}")
    if database not in _psql(cluster, "SELECT datname FROM pg_database", tuples=True).split():
        _psql(cluster, f"CREATE DATABASE {database} OWNER {ROLE}")
    _psql(cluster, DATABASE_SETUP.read_text(), database=database)


def _psql(cluster: Cluster, sql: str, tuples: bool = False, database: str = "postgres") -> str:
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-p", str(cluster.port), "-d", database, "-c", sql]
    if tuples:
        cmd[1:1] = ["-A", "-t"]
    return _run(_as_postgres(cmd))


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return ["sudo", "-n", "-u", "postgres", *cmd]


def _as_root(cmd: list[str]) -> list[str]:
    return cmd if os.geteuid() == 0 else ["sudo", "-n", *cmd]


def _run(cmd: list[str]) -> str:
    result = subprocess.run(_as_root(cmd) if cmd[0].startswith("pg_") else cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    return result.stdout
