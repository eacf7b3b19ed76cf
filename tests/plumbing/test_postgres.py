"""Which Postgres errors a store calls temporary (retry the same work) and which it leaves to the caller (the work's
own fault): unit tests over asyncpg's exception classes, no server needed."""

from __future__ import annotations

import asyncpg
import pytest
from asyncpg import exceptions as pg

from plumbing.errors import is_retriable
from plumbing.postgres import DatabaseUnavailableError, refusal_text, translates_database_errors


@translates_database_errors
class _Store:
    """A store whose one query fails with the given error."""

    async def run(self, error: BaseException) -> None:
        """Raises `error` as a query would."""
        raise error


SERVER_STATE = [  # the server short of a resource, stopping, unreachable, or aborting the transaction whole
    pg.InsufficientResourcesError, pg.DiskFullError, pg.OutOfMemoryError, pg.TooManyConnectionsError,
    pg.ConfigurationLimitExceededError, pg.AdminShutdownError, pg.CrashShutdownError, pg.CannotConnectNowError,
    pg.ConnectionFailureError, pg.ClientCannotConnectError, pg.SerializationError, pg.DeadlockDetectedError,
    pg.StatementCompletionUnknownError, pg.LockNotAvailableError, pg.PostgresSystemError, pg.PostgresIOError,
]
THE_WORK = [  # what a row or a value itself causes
    pg.CheckViolationError, pg.NotNullViolationError, pg.UniqueViolationError, pg.CharacterNotInRepertoireError,
    pg.NumericValueOutOfRangeError, pg.DataError, pg.StringDataRightTruncationError, pg.ProgramLimitExceededError,
]


@pytest.mark.parametrize("error", SERVER_STATE, ids=lambda e: f"{e.sqlstate}-{e.__name__}")
async def test_the_servers_state_is_temporary_for_a_store(error: type[asyncpg.PostgresError]) -> None:
    with pytest.raises(DatabaseUnavailableError) as raised:
        await _Store().run(error("the server's message"))
    assert is_retriable(raised.value) and isinstance(raised.value.__cause__, error)


@pytest.mark.parametrize("error", THE_WORK, ids=lambda e: f"{e.sqlstate}-{e.__name__}")
async def test_what_the_work_causes_passes_through_unchanged(error: type[asyncpg.PostgresError]) -> None:
    with pytest.raises(error) as raised:
        await _Store().run(error("the server's message"))
    assert not is_retriable(raised.value)


def test_a_refusal_is_told_by_its_sqlstate_and_names_never_by_the_row() -> None:
    refused = asyncpg.PostgresError.new({  # as the server sends it (asyncpg's str() adds the DETAIL)
        "S": "ERROR", "C": "23514", "s": "projection", "t": "charges", "n": "charges_amounts_not_negative",
        "M": 'new row for relation "charges" violates check constraint "charges_amounts_not_negative"',
        "D": "Failing row contains (ch_1, -1, visa, 4242, jenny@example.com).",
    })
    assert "4242" in str(refused)
    told = refusal_text(refused)
    assert told == ("CheckViolationError (SQLSTATE 23514): the row breaks a constraint of the table; table charges; "
                    "constraint charges_amounts_not_negative")
    unencodable = pg.DataError("invalid input for query argument $3: 4242 (value out of int64 range)")
    assert "4242" not in refusal_text(unencodable) and "SQLSTATE 22000" in refusal_text(unencodable)
