"""The history import (source=import): pages through the five list endpoints and publishes snapshots.

Place in the flow: Connect (or an on-demand or catch-up request) writes an import run into
`import_runs`; `StripeImporter` finds pending runs, takes the connection's import lock (one
importer per connection across processes) and walks each resource newest-first from its
checkpoint, `created` within the run's window. Each page becomes snapshot envelopes
(`snapshots.py`), published with `publish_many` (acks=all); only then is the checkpoint (last
object id, oldest created, count) saved, so a killed importer resumes at the next page and
fetches again at most the one page per resource it had in flight. Resources run concurrently
within the account's rate budget; memory holds one page per resource.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import stripe

from ingestor.connections.status import STATUSES
from ingestor.envelope.snapshots import snapshot_envelope
from ingestor.errors import IngestError
from ingestor.sources.checkpoints import IMPORT_LOCK, ImportCheckpoint, try_connection_lock
from ingestor.sources.deps import SourceDeps
from ingestor.sources.key_session import KeySession, StopReading
from ingestor.stripe_api.catalog import BY_NAME
from ingestor.stripe_api.client import RawPage, StripeReader
from plumbing.errors import is_retriable
from plumbing.kafka import PublishError
from plumbing.logs import get_logger
from plumbing.settings import ImporterSettings

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """How one importer pass over a connection ended: done, paused (why), busy, or retry_later."""

    connection_id: str
    state: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Page:
    """One fetched page: raw objects, whether more follow, and when it was fetched."""

    objects: list[dict[str, Any]]
    has_more: bool
    fetched_at: datetime


class StripeImporter:
    """Runs pending imports, resumably, one connection at a time per process-wide lock."""

    def __init__(self, deps: SourceDeps, settings: ImporterSettings,
                 on_done: Callable[[str], Awaitable[None]] | None = None):
        self._store = deps.store
        self._checkpoints = deps.checkpoints
        self._readers = deps.readers
        self._publisher = deps.publisher
        self._settings = settings
        self._clock = deps.clock
        self._on_done = on_done  # e.g. the check against Stripe that follows every import

    async def run_pending(self) -> list[ImportOutcome]:
        """Runs every pending import once (burst mode); returns how each ended."""
        pending = await self._checkpoints.connections_with_pending_imports()
        limit = asyncio.Semaphore(self._checkpoints.max_lock_holders(self._settings.max_concurrent_imports))

        async def one(connection_id: str) -> ImportOutcome:
            async with limit:
                return await self.run_connection(connection_id)

        return list(await asyncio.gather(*(one(c) for c in pending)))

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Looks for pending imports every `scan_interval_s` until `stop` is set. Cancellation stops at once."""
        while not stop.is_set():
            try:
                await self.run_pending()
            except Exception as exc:
                if not is_retriable(exc):
                    raise
                log.warning("import pass failed; will retry", error=repr(exc))  # Postgres or Kafka away
            try:
                await asyncio.wait_for(stop.wait(), self._settings.scan_interval_s)
            except asyncio.TimeoutError:
                pass

    async def run_connection(self, connection_id: str) -> ImportOutcome:
        """Imports what is left of the connection's run, under its import lock."""
        async with try_connection_lock(self._checkpoints.lock_pool, IMPORT_LOCK, connection_id) as held:
            if not held:
                return ImportOutcome(connection_id, "busy")
            connection = await self._store.get_connection(connection_id)
            if connection is None or STATUSES[connection.status].stops_reading:
                return ImportOutcome(connection_id, "paused", connection.status if connection else "gone")
            todo = [c for c in await self._checkpoints.import_checkpoints(connection_id)
                    if not c.done and c.paused_reason is None]
            session = KeySession(connection, self._store, self._readers, self._clock)
            try:
                results = await asyncio.gather(*(self._resource(session, c) for c in todo), return_exceptions=True)
            finally:
                await session.close()
            return await self._outcome(connection_id, results)

    async def _outcome(self, connection_id: str, results: list[BaseException | None]) -> ImportOutcome:
        for result in results:
            if isinstance(result, StopReading):
                await self._checkpoints.pause_import(connection_id, result.reason)
                return ImportOutcome(connection_id, "paused", result.reason)
        for result in results:
            if isinstance(result, (IngestError, PublishError)):
                return ImportOutcome(connection_id, "retry_later", str(result))
            if isinstance(result, BaseException):
                raise result
        if await self._checkpoints.last_import_finished(connection_id) is not None:
            await self._store.set_catchup_needed(connection_id, None)
            if self._on_done is not None:
                await self._on_done(connection_id)
            return ImportOutcome(connection_id, "done")
        return ImportOutcome(connection_id, "retry_later", "superseded or unfinished")

    async def _resource(self, session: KeySession, checkpoint: ImportCheckpoint) -> None:
        """Walks one resource from its checkpoint to the end of the window, one acknowledged page at a time."""
        resource = BY_NAME[checkpoint.resource]
        params: dict[str, Any] = {
            "limit": self._settings.page_limit,
            "created": {"gte": checkpoint.window_start, "lte": checkpoint.window_end},
            **resource.list_params,
        }
        after = checkpoint.last_object_id
        while True:
            page = await self._fetch(session, resource.name, params, after)
            await self._publish(session, page)
            after = page.objects[-1]["id"] if page.objects else None
            oldest = min((int(o["created"]) for o in page.objects), default=None)
            done = not (page.has_more and page.objects)
            if not await self._checkpoints.save_import_page(checkpoint, after, oldest, len(page.objects), done):
                return  # a newer run replaced this one
            if done:
                return

    async def _fetch(self, session: KeySession, resource: str, params: dict[str, Any], after: str | None) -> Page:
        query = dict(params, starting_after=after) if after else params

        async def request(reader: StripeReader) -> RawPage:
            return await reader.list_raw_page(resource, query)

        page = await session.call(request)
        fetched_at = datetime.fromtimestamp(self._clock(), tz=timezone.utc)
        return Page(page.objects, page.has_more, fetched_at)

    async def _publish(self, session: KeySession, page: Page) -> None:
        """Publishes the page's snapshots and returns once Kafka acknowledged them all; raises PublishError."""
        connection = session.connection
        await self._publisher.publish_many([
            snapshot_envelope(obj, connection.tenant_id, connection.livemode, stripe.api_version, page.fetched_at)
            for obj in page.objects
        ])
