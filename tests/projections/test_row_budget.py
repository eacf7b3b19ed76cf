"""The row budget on its own: it follows Postgres's messages however the socket cuts them, counts only result
rows, and ends the connection at the header of the row that would pass the budget, before its body is read.
(The same against a real server: tests/projections/test_read_layer.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from projections.read.row_budget import RowBudget


def message(kind: bytes, body: bytes) -> bytes:
    return kind + (len(body) + 4).to_bytes(4, "big") + body


# An answer as Postgres sends it: a row description, three rows (the last large), the end of the command.
ROWS = [b"\x00\x01\x00\x00\x00\x05small", b"\x00\x01\x00\x00\x00\x06medium", b"\x00\x01\x00\x00\x03\xe8" + b"x" * 1000]
STREAM = (message(b"T", b"\x00\x01x" + b"\x00" * 18) + b"".join(message(b"D", r) for r in ROWS)
          + message(b"C", b"SELECT 3\x00") + message(b"Z", b"I"))


class Received(asyncio.Protocol):
    """What reached asyncpg's side."""

    def __init__(self) -> None:
        self.data = b""

    def data_received(self, data: bytes) -> None:
        self.data += data


class Socket:
    """The transport's one method the budget calls."""

    aborted = False

    def abort(self) -> None:
        self.aborted = True


def feed(budget: int | None, chunk: int) -> tuple[RowBudget, Received, Socket]:
    inner, socket = Received(), Socket()
    meter = RowBudget(inner, socket)  # type: ignore[arg-type]
    if budget is not None:
        meter.arm(budget)
    for at in range(0, len(STREAM), chunk):
        meter.data_received(STREAM[at:at + chunk])
    return meter, inner, socket


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 4096])
def test_rows_within_the_budget_pass_whole_and_are_counted(chunk: int) -> None:
    meter, inner, socket = feed(len(STREAM), chunk)
    rows = [5 + len(r) for r in ROWS]
    assert inner.data == STREAM and not socket.aborted
    assert meter.received == sum(rows) and meter.largest == max(rows) and meter.room == len(STREAM) - sum(rows)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 4096])
def test_the_row_past_the_budget_ends_the_connection_at_its_header(chunk: int) -> None:
    small = sum(5 + len(r) for r in ROWS[:2])
    meter, inner, socket = feed(small + 500, chunk)
    header = STREAM.index(message(b"D", ROWS[2]))
    assert socket.aborted and meter.refused == 5 + len(ROWS[2])
    assert len(inner.data) <= header + 5 and STREAM.startswith(inner.data), "nothing of the large row's body passed"


def test_unarmed_it_only_passes_the_data_on() -> None:
    meter, inner, socket = feed(None, 7)
    assert inner.data == STREAM and not socket.aborted and meter.received == 0 and meter.room == 0


def test_it_hands_the_connections_end_to_asyncpg() -> None:
    lost: list[Any] = []

    class Inner(Received):
        def connection_lost(self, exc: Exception | None) -> None:
            lost.append(exc)

    meter = RowBudget(Inner(), Socket())  # type: ignore[arg-type]
    meter.connection_lost(None)
    assert lost == [None]
