"""The asyncpg pool every process uses; one place that knows how we connect to Postgres."""

from __future__ import annotations

import asyncio

import asyncpg
from asyncpg.exceptions import InternalClientError, OperatorInterventionError, PostgresConnectionError

from plumbing.settings import PostgresSettings


# Postgres restarting, shutting down or unreachable, a connection lost mid-query: wait and retry
# the same work, never skip it. Anything else is a bug and must be seen. InternalClientError is how
# asyncpg reports a connection that broke in mid-protocol (e.g. "cannot switch to state 15" while the
# pool resets it after Postgres went away); the pool then discards that connection.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError, asyncio.TimeoutError, PostgresConnectionError, OperatorInterventionError, asyncpg.InterfaceError,
    InternalClientError,
)


async def create_pool(settings: PostgresSettings) -> asyncpg.Pool:
    """Opens a connection pool; raises OSError or asyncpg errors when the server is unreachable."""
    pool = await asyncpg.create_pool(
        settings.dsn.get_secret_value(),
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        command_timeout=settings.command_timeout_s,
    )
    if pool is None:  # asyncpg's typing allows it; it only happens when the pool is closed at once
        raise RuntimeError("asyncpg returned no pool")
    return pool
