"""The pages one worker has in flight, shared fairly among the connections it imports.

A page holds its permit from its request's turn in the budget to Kafka's acknowledgement of its records (the page's
memory). A tenant whose Stripe account is rate-limited (its own systems use the limit, and every process waits out
the 429s) keeps its slices waiting for tokens, each with a permit: with one pool for all, two such tenants held the
worker's 128 and every other import stood still. Each connection importing here may hold its share of them (the
total over the connections importing now, at least one). Beyond its share it may borrow free ones while no
connection under its share waits, as long as a share's worth stays free: one big import beside fifteen small passes
is not held to an eighth of the pages, and a tenant blocked with borrowed pages leaves the others room to go on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager


class FairShares:
    """`total` permits; a connection importing here holds at most its share while others import too."""

    def __init__(self, total: int):
        self.total = total
        self._in_use = 0
        self._held: dict[str, int] = {}
        self._importing: dict[str, int] = {}  # connection → its passes running here (one, unless run twice)
        self._waiters: deque[tuple[str, asyncio.Future[None]]] = deque()

    def share(self) -> int:
        """What one connection may hold: the total over the connections importing here, at least one."""
        return max(1, self.total // max(1, len(self._importing)))

    @contextmanager
    def importing(self, connection: str) -> Iterator[None]:
        """The connection's pass runs here: its share counts it."""
        self._importing[connection] = self._importing.get(connection, 0) + 1
        try:
            yield
        finally:
            self._importing[connection] -= 1
            if not self._importing[connection]:
                del self._importing[connection]
            self._grant()  # the others' shares grew

    @asynccontextmanager
    async def permit(self, connection: str) -> AsyncIterator[None]:
        """Holds one of the connection's permits for the block (waits for one first)."""
        await self._acquire(connection)
        try:
            yield
        finally:
            self._release(connection)

    def held(self, connection: str) -> int:
        return self._held.get(connection, 0)

    def _grantable(self, connection: str) -> bool:
        """Under its share: whenever one is free. Over it (borrowing): while no one under its share waits, and a
        share's worth stays free."""
        if self._in_use >= self.total:
            return False
        share = self.share()
        if self._held.get(connection, 0) < share:
            return True
        return self._in_use < self.total - share and not any(
            not waiter.done() and self._held.get(other, 0) < share for other, waiter in self._waiters)

    async def _acquire(self, connection: str) -> None:
        if self._grantable(connection) and not any(c == connection for c, _ in self._waiters):
            self._take(connection)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((connection, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(connection)  # granted as it was cancelled: the next one gets it
            elif (connection, waiter) in self._waiters:  # `_grant` may have dropped it already
                self._waiters.remove((connection, waiter))
            raise

    def _take(self, connection: str) -> None:
        self._in_use += 1
        self._held[connection] = self._held.get(connection, 0) + 1

    def _release(self, connection: str) -> None:
        self._in_use -= 1
        self._held[connection] -= 1
        if not self._held[connection]:
            del self._held[connection]
        self._grant()

    def _grant(self) -> None:
        """Wakes the longest-waiting requests that may take a permit now, in order of arrival: those under their
        connection's share first, then those borrowing. Every page let go calls this, with hundreds of slices queued:
        the queue is walked once, up to the first request no permit is left for (the borrowing rule is decided once,
        not again for each request: once the walk is done, no one under its share waits unserved)."""
        share = self.share()
        passed: deque[tuple[str, asyncio.Future[None]]] = deque()
        while self._waiters and self._in_use < self.total:
            connection, waiter = self._waiters.popleft()
            if waiter.done():
                continue  # gave up
            if self._held.get(connection, 0) < share:
                self._take(connection)
                waiter.set_result(None)
            else:
                passed.append((connection, waiter))
        if not self._waiters:  # every one under its share was served: borrowers next, a share's worth kept free
            while passed and self._in_use < self.total - share:
                connection, waiter = passed.popleft()
                self._take(connection)
                waiter.set_result(None)
        passed.extend(self._waiters)
        self._waiters = passed
