"""The asyncpg pool every process uses, and where Postgres's transient errors become ours.

Postgres restarting, shutting down or unreachable, or a connection lost mid-query, enters as one of
several asyncpg and socket errors; the stores translate them into `DatabaseUnavailableError`
(`retriable`), so callers follow the one retry rule (`plumbing.errors.is_retriable`). So do the server's
own limits (out of memory, disk full, too many connections) where the SQL is ours. Anything else asyncpg
raises (a constraint, bad data) is about the work itself and passes through unchanged; `refusal_text`
says what it was without quoting the row.
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
# The server's state, not the work's, by SQLSTATE: a connection error (08), a resource short (53: out of memory,
# disk full, too many connections), shutting down (57), an I/O error (58), a transaction aborted whole (40001,
# 40P01), a commit of unknown outcome (40003), a lock not granted in time (55P03). Our own SQL meeting one succeeds
# once the server recovers, so it is retried, never taken for a record's fault (the projector would dead-letter
# every record of the batch). A reader's SQL is anyone's, and a tenant's own query can exhaust its memory or its
# role's connections, so the read path (`database_errors()` without `server_state`) tells those apart itself.
_SERVER_STATE_CLASSES = ("08", "53", "57", "58")
_SERVER_STATE_CODES = ("40001", "40P01", "40003", "55P03")
# What a refused statement's SQLSTATE class means, in words that quote nothing of the row.
_REFUSALS = {
    "22": "a value the column cannot hold",
    "23": "the row breaks a constraint of the table",
    "42": "the statement does not fit the tables",
    "54": "a value beyond a Postgres limit",
}


P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)


class DatabaseUnavailableError(Exception):
    """Postgres is restarting, unreachable, dropped the connection or is short of a resource: nothing was done,
    retry the same work."""

    retriable = True


def is_server_state(exc: BaseException) -> bool:
    """Tells whether a Postgres error comes from the server's state (see _SERVER_STATE_CLASSES), not the work."""
    sqlstate = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
    return isinstance(sqlstate, str) and (sqlstate[:2] in _SERVER_STATE_CLASSES or sqlstate in _SERVER_STATE_CODES)


@contextlib.contextmanager
def database_errors(server_state: bool = False) -> Iterator[None]:
    """Translates Postgres's transient errors raised inside the block into DatabaseUnavailableError; with
    `server_state` (SQL of our own), the server's resource limits too."""
    try:
        yield
    except Exception as exc:
        if not (isinstance(exc, _TRANSIENT) or (server_state and is_server_state(exc))):
            raise
        raise DatabaseUnavailableError(f"Postgres unavailable: {type(exc).__name__}") from exc


def refusal_text(exc: asyncpg.PostgresError) -> str:
    """Says what Postgres refused without the row: condition, SQLSTATE, a fixed explanation, the table, column and
    constraint. Postgres's own message and DETAIL quote values ("Failing row contains (…, visa, 4242, …)"), and
    asyncpg's for an argument it cannot encode quotes the argument, so neither is kept."""
    sqlstate = str(getattr(exc, "sqlstate", None) or "?")
    names = [f"{what} {value}" for what in ("table", "column", "constraint")
             if (value := getattr(exc, f"{what}_name", None))]
    explained = _REFUSALS.get(sqlstate[:2], "Postgres refused the statement")
    return f"{type(exc).__name__} (SQLSTATE {sqlstate}): {'; '.join([explained, *names])}"


def _translating(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with database_errors(server_state=True):
            return await method(*args, **kwargs)
    return wrapper


def translates_database_errors(cls: C) -> C:
    """Class decorator for a Postgres store: every public coroutine method raises DatabaseUnavailableError
    for Postgres's transient errors and the server's resource limits (where they enter; a store's SQL is ours),
    and everything else unchanged."""
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
        with attempt, database_errors(server_state=True):
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
