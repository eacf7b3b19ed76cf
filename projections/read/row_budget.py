"""The reader's connections: each can hold the rows it receives for one statement to a budget of bytes.

Postgres announces every message's length in its first five bytes, so a result row (a DataRow) of a hundred
megabytes is announced before any of it follows. asyncpg has no limit of its own: it gathers the whole message,
then decodes it. `RowBudget` sits between the socket and asyncpg's protocol and, while armed for a statement,
adds up the sizes of the rows announced; the header of a row that would take them past the budget closes the
connection there. So the process holds at most the budget (and one read from the socket), and Postgres, whose
next send fails, ends the statement and frees what it built. Unarmed, it only passes the data on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

_HEADER = 5  # a message's type byte and its length (which counts itself, not the type byte)
_DATA_ROW = ord("D")


class RowBudget(asyncio.Protocol):
    """Passes a connection's incoming bytes to asyncpg's protocol, counting the rows while armed."""

    def __init__(self, inner: Any, transport: asyncio.Transport):
        self._inner = inner
        self._transport = transport
        self._budget: int | None = None
        self._header = bytearray()
        self._left = 0  # bytes of the current message's body still to come
        self.received = 0  # bytes of the rows announced since arm()
        self.largest = 0  # the largest of those rows
        self.refused: int | None = None  # the size of the row that ended the connection

    def arm(self, budget: int) -> None:
        """Counts the rows of the statements that follow; call between statements (the stream is then at a
        message's start)."""
        self._budget, self._header, self._left = budget, bytearray(), 0
        self.received = self.largest = 0
        self.refused = None

    def disarm(self) -> None:
        """Stops counting."""
        self._budget = None

    @property
    def room(self) -> int:
        """The bytes of rows still allowed (0 unarmed)."""
        return 0 if self._budget is None else self._budget - self.received

    def data_received(self, data: bytes) -> None:
        if self.refused is not None:
            return  # the connection is closing: nothing more reaches asyncpg
        if self._budget is not None and not self._count(data, self._budget):
            self._transport.abort()
            return
        self._inner.data_received(data)

    def _count(self, data: bytes, budget: int) -> bool:
        """Follows the messages in `data`; returns False at the header of a row past the budget."""
        view, at = memoryview(data), 0
        while at < len(view):
            if self._left:
                step = min(self._left, len(view) - at)
                at, self._left = at + step, self._left - step
                continue
            take = min(_HEADER - len(self._header), len(view) - at)
            self._header += view[at:at + take]
            at += take
            if len(self._header) < _HEADER:
                break
            kind, length = self._header[0], int.from_bytes(self._header[1:], "big")
            self._header.clear()
            self._left = max(0, length - 4)
            if kind == _DATA_ROW:
                if self.received + length + 1 > budget:
                    self.refused = length + 1
                    return False
                self.received += length + 1
                self.largest = max(self.largest, length + 1)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        eof_received = getattr(self._inner, "eof_received", None)
        return eof_received() if eof_received is not None else None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class ReaderConnection(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection whose incoming rows pass through a RowBudget (`row_budget`)."""

    def __init__(self, protocol: Any, transport: Any, *args: Any, **kwargs: Any):
        super().__init__(protocol, transport, *args, **kwargs)
        self.row_budget = RowBudget(protocol, transport)
        transport.set_protocol(self.row_budget)  # set up and idle: the next byte starts a message
