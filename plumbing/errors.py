"""The one retry rule every process follows: an error says whether the same work may succeed if retried.

Errors of this project carry a `retriable` attribute (as aiokafka's `KafkaError` does); third-party
errors are translated where they enter (Postgres in `plumbing.postgres`, Kafka in `plumbing.kafka`,
Stripe in `ingestor.stripe_api.client`), so a retry loop branches on this one property.
"""

from __future__ import annotations

import traceback


def is_retriable(exc: BaseException) -> bool:
    """Tells whether retrying the same work may succeed (the error says so with `retriable = True`)."""
    return getattr(exc, "retriable", False) is True


def error_site(exc: BaseException) -> str:
    """Where `exc` was raised (file and line), to log an unexpected error without its message: a message may
    quote the input that caused it, and that input may be a tenant's card data. An error standing for one raised
    in another process (`ingestor.sources.page_pool.PageBugError`) gives that one's site."""
    site = getattr(exc, "site", None)
    if isinstance(site, str):
        return site
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{type(exc).__name__} at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames \
        else type(exc).__name__
