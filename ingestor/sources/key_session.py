"""One connection's stored key as a Stripe reader, for the poller and the importer.

Decrypts the key just before use and keeps it only inside the reader. A 401 is checked against
the stored key version: if the key was rotated while the request was in flight, the request is
retried with the new key and the import or poll carries on; if not, the connection moves to
`key_invalid` at once and reading stops. A 403 moves it to `permission_missing` and stops too.
Other failures (Stripe down, rate-limited past our retries) are recorded and raised to the caller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import TypeVar

from ingestor.connections.status import HealthReporter
from ingestor.connections.store import Connection, PostgresConnectionStore
from ingestor.errors import IngestError, KeyInvalidError, PermissionMissingError
from ingestor.stripe_api.client import StripeReader
from ingestor.stripe_api.readers import StripeReaders
from ingestor.stripe_api.request_budget import Priority

T = TypeVar("T")


class StopReading(IngestError):
    """The connection must not be read any more until a person acts (key invalid, permission, disconnected)."""

    def __init__(self, reason: str):
        super().__init__(f"reading stopped: {reason}", reason)
        self.reason = reason


class KeySession:
    """Reads Stripe with a connection's current key, following rotations made while in flight."""

    def __init__(
        self, connection: Connection, store: PostgresConnectionStore, readers: StripeReaders,
        clock: Callable[[], float] = time.time, priority: Priority = Priority.INTERACTIVE,
    ):
        self.connection = connection
        self._priority = priority
        self._store = store
        self._readers = readers
        self._health = HealthReporter(store)
        self._clock = clock
        self._reader: StripeReader | None = None
        self._version = -1
        self._all_readers: list[StripeReader] = []
        self._switching = asyncio.Lock()
        self._succeeded = False
        self._stopped: str | None = None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), tz=timezone.utc)

    async def _load(self) -> tuple[StripeReader, int]:
        stored = await self._store.load_key(self.connection.connection_id)
        if stored is None:
            raise StopReading("disconnected")
        key, version = stored
        reader = self._readers.reader(key, self.connection.connection_id, self.connection.livemode,
                                      priority=self._priority)
        self._all_readers.append(reader)
        self._reader, self._version = reader, version
        return reader, version

    async def _current(self) -> tuple[StripeReader, int]:
        async with self._switching:
            if self._reader is None:
                return await self._load()
            return self._reader, self._version

    @property
    def requests_made(self) -> int:
        """Returns how many requests this session's readers made."""
        return sum(r.requests_made for r in self._all_readers)

    async def call(self, request: Callable[[StripeReader], Awaitable[T]]) -> T:
        """Runs `request` with the current reader. Raises StopReading, or the retriable IngestError it gave up on."""
        while True:
            if self._stopped is not None:
                raise StopReading(self._stopped)  # requests still waiting to start never go to Stripe
            reader, version = await self._current()
            try:
                result = await request(reader)
            except (KeyInvalidError, PermissionMissingError) as exc:
                if await self._rotated_since(version):
                    continue
                if await self._health.failed(self.connection.connection_id, version, exc, self._now()):
                    self._stopped = exc.code
                    raise StopReading(exc.code) from exc
                continue  # the key changed between our check and the update: try the new one
            except IngestError as exc:
                await self._health.failed(self.connection.connection_id, version, exc, self._now())
                raise
            if not self._succeeded:
                self._succeeded = True
                await self._health.succeeded(self.connection.connection_id, self._now())
            return result

    async def failed(self, error: IngestError) -> None:
        """Records in the connection's health a failure found in what Stripe answered, after the request (a page
        that says more with no objects): the caller raises it."""
        await self._health.failed(self.connection.connection_id, self._version, error, self._now())

    async def _rotated_since(self, version: int) -> bool:
        """Loads the stored key if it is newer than `version`; returns whether it was."""
        async with self._switching:
            if self._version != version:
                return True  # another request already switched
            stored = await self._store.load_key(self.connection.connection_id)
            if stored is None:
                raise StopReading("disconnected")
            if stored[1] == version:
                return False
            await self._load()
            return True

    async def close(self) -> None:
        """Closes every reader this session opened."""
        for reader in self._all_readers:
            await reader.close()
        self._all_readers.clear()
