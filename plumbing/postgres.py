"""The asyncpg pool every process uses, and where Postgres's transient errors become ours.

Postgres restarting, shutting down or unreachable, or a connection lost mid-query, enters as one of
several asyncpg and socket errors; the stores translate them into `DatabaseUnavailableError`
(`retriable`), so callers follow the one retry rule (`plumbing.errors.is_retriable`). Anything else
asyncpg raises (a constraint, bad data) is about the work itself and passes through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import ParamSpec, TypeVar

import asyncpg
from asyncpg.exceptions import (
    DeadlockDetectedError,
    InternalClientError,
    OperatorInterventionError,
    PostgresConnectionError,
    SerializationError,
)
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

from plumbing.settings import PostgresSettings

# Postgres restarting, shutting down or unreachable, a connection lost mid-query: wait and retry
# the same work, never skip it. Anything else is a bug and must be seen. InternalClientError is how
# asyncpg reports a connection that broke in mid-protocol (e.g. "cannot switch to state 15" while the
# pool resets it after Postgres went away); the pool then discards that connection.
# A deadlock or serialization failure (two projector members upserting the same rows in different orders, e.g.
# after partitions were added) aborts the transaction whole: the same work retried succeeds, so it is transient
# too, never a "refused" record to dead-letter.
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError, asyncio.TimeoutError, PostgresConnectionError, OperatorInterventionError, asyncpg.InterfaceError,
    InternalClientError, DeadlockDetectedError, SerializationError,
)


P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)


class DatabaseUnavailableError(Exception):
    """Postgres is restarting, unreachable or dropped the connection: nothing was done, retry the same work."""

    retriable = True


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """Translates Postgres's transient errors raised inside the block into DatabaseUnavailableError."""
    try:
        yield
    except _TRANSIENT as exc:
        raise DatabaseUnavailableError(f"Postgres unavailable: {type(exc).__name__}") from exc


def _translating(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with database_errors():
            return await method(*args, **kwargs)
    return wrapper


def translates_database_errors(cls: C) -> C:
    """Class decorator for a Postgres store: every public coroutine method raises DatabaseUnavailableError
    for Postgres's transient errors (where they enter), and everything else unchanged."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(member):
            setattr(cls, name, _translating(member))
    return cls


async def create_pool(settings: PostgresSettings) -> asyncpg.Pool:
    """Opens a connection pool, waiting up to `startup_wait_s` for a Postgres that is restarting or not
    yet up; raises DatabaseUnavailableError after that."""
    async for attempt in AsyncRetrying(retry=retry_if_exception_type(DatabaseUnavailableError),
                                       wait=wait_random_exponential(multiplier=0.2, max=3),
                                       stop=stop_after_delay(settings.startup_wait_s), reraise=True):
        with attempt, database_errors():
            pool = await asyncpg.create_pool(
                settings.dsn.get_secret_value(),
                min_size=settings.pool_min_size,
                max_size=settings.pool_max_size,
                command_timeout=settings.command_timeout_s,
            )
            if pool is None:  # asyncpg's typing allows it; it only happens when the pool is closed at once
                raise RuntimeError("asyncpg returned no pool")
            return pool
    raise DatabaseUnavailableError("no attempt was made")  # unreachable: tenacity reraises
