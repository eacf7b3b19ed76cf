"""What the poller and the importer share: where connections and checkpoints live, how Stripe is read,
where events go, and the clock. One object, built once by the worker process."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ingestor.connections.store import PostgresConnectionStore
from ingestor.envelope.publisher import RawEventPublisher
from ingestor.sources.checkpoints import PostgresCheckpoints
from ingestor.stripe_api.readers import StripeReaders


@dataclass(frozen=True, slots=True)
class SourceDeps:
    """The poller's and the importer's collaborators."""

    store: PostgresConnectionStore
    checkpoints: PostgresCheckpoints
    readers: StripeReaders
    publisher: RawEventPublisher
    clock: Callable[[], float] = field(default=time.time)
