"""The one retry rule every process follows: an error says whether the same work may succeed if retried.

Errors of this project carry a `retriable` attribute (as aiokafka's `KafkaError` does); third-party
errors are translated where they enter (Postgres in `plumbing.postgres`, Kafka in `plumbing.kafka`,
Stripe in `ingestor.stripe_api.client`), so a retry loop branches on this one property.
"""

from __future__ import annotations


def is_retriable(exc: BaseException) -> bool:
    """Tells whether retrying the same work may succeed (the error says so with `retriable = True`)."""
    return getattr(exc, "retriable", False) is True
