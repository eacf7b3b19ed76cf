"""One request budget per Stripe account, and per endpoint of it, shared by every process through Postgres.

Stripe limits requests per account (100/s live, 25/s test) and, unless documented otherwise, per endpoint
(25/s: "API endpoints have a default limit of 25 requests per second", docs.stripe.com/rate-limits),
both counted across every client of the account. Every process that reads an account (workers importing
and polling, the web process testing keys, fetching discounts, reconciling) draws each request from two
token buckets — the account's and the endpoint's — kept in `stripe_request_budgets` and refilled at
their budget's rate (`stripe_budget_take`, one row lock per lease). A bucket holds at most Stripe's limit
minus our budget (10 live, 5 test, 3 per endpoint with the defaults), so no one-second window sees more
than Stripe's limit from us. A process leases a few tokens at a time and spends them locally, so the
database sees tens of statements per second per account, not one per request.

Priorities: bulk work (the importer) never takes the bucket's last `reserve` token, so the few
interactive requests (the poller, a key Test, a reconcile, a discount lookup) find one at once even
during a long import. A 429 from Stripe (the tenant's own systems share the account's limit) blocks
the bucket it names (`Stripe-Rate-Limited-Reason`: the endpoint's for `endpoint-*`, else the account's)
for `Retry-After` or a second, for every process. Without a database, a local token bucket stands in.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
from aiolimiter import AsyncLimiter

from plumbing.postgres import database_errors

DEFAULT_BLOCK_S = 1.0  # how long a 429 without Retry-After blocks the bucket
MIN_CAPACITY = 3.0  # room for the interactive reserve, one bulk lease and the lag of asking for the next


@dataclass(frozen=True)
class Rate:
    """One budget: requests per second, and Stripe's limit above it (the difference is the bucket's burst)."""

    per_second: float
    limit: float

    @property
    def capacity(self) -> float:
        return max(MIN_CAPACITY, self.limit - self.per_second)


class Priority(enum.Enum):
    """Who is asking: interactive requests are few and waited on; bulk ones are many."""

    INTERACTIVE = "interactive"
    BULK = "bulk"


class Bucket:
    """One token bucket: acquire a token per request; a 429 blocks it."""

    async def acquire(self, priority: Priority) -> None:
        """Waits until one request may be made now."""
        raise NotImplementedError

    async def block(self, seconds: float) -> None:
        """No one asks through this bucket for `seconds`."""
        raise NotImplementedError


class LocalBucket(Bucket):
    """A token bucket of this process only (no database at hand)."""

    def __init__(self, rate: Rate):
        self._limiter = AsyncLimiter(rate.capacity, rate.capacity / rate.per_second)
        self._blocked_until = 0.0

    async def acquire(self, priority: Priority) -> None:
        wait = self._blocked_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await self._limiter.acquire()

    async def block(self, seconds: float) -> None:
        self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)


@dataclass
class SharedBucket(Bucket):
    """One bucket in Postgres; tokens leased a few at a time and spent here.

    Bulk work leases half of what the bucket can hold above the interactive reserve (the other half absorbs
    the lag between asking and getting, so no token is lost to a full bucket) and waits until that much is
    there; interactive work leases one token and may take the reserve.
    """

    pool: asyncpg.Pool
    key: str
    rate: Rate
    _tokens: int = 0
    _leasing: dict[Priority, asyncio.Lock] = field(default_factory=lambda: {p: asyncio.Lock() for p in Priority})

    @property
    def reserve(self) -> float:
        return max(1.0, self.rate.capacity / 4)

    @property
    def bulk_lease(self) -> int:
        return max(1, math.floor((self.rate.capacity - self.reserve) / 2))

    async def acquire(self, priority: Priority) -> None:
        while True:
            if self._tokens > 0:
                self._tokens -= 1
                return
            async with self._leasing[priority]:
                if self._tokens > 0:
                    continue
                bulk = priority is Priority.BULK
                lease = self.bulk_lease if bulk else 1
                granted, wait_s = await self._take(lease, self.reserve if bulk else 0.0)
                if granted:
                    self._tokens += granted
                    continue
                await asyncio.sleep(min(max(wait_s, 0.002), 1.0))

    async def _take(self, lease: int, reserve: float) -> tuple[int, float]:
        with database_errors():
            row = await self.pool.fetchrow("SELECT * FROM stripe_budget_take($1, $2, $3, $4, $5)",
                                           self.key, lease, self.rate.per_second, self.rate.capacity, reserve)
        return int(row["granted"]), float(row["wait_s"])

    async def block(self, seconds: float) -> None:
        self._tokens = 0
        with database_errors():
            await self.pool.execute(
                "UPDATE stripe_request_budgets SET blocked_until = GREATEST(coalesce(blocked_until, now()), "
                "clock_timestamp() + make_interval(secs => $2)), tokens = 0 WHERE budget_key = $1", self.key, seconds)


class AccountBudget:
    """What a reader draws on before each request: its account's bucket and the endpoint's."""

    def __init__(self, account: Bucket, endpoint_bucket: Callable[[str], Bucket | None]):
        self._account = account
        self._endpoint_bucket = endpoint_bucket

    async def acquire(self, priority: Priority, endpoint: str) -> None:
        """Waits until one request to `endpoint` (e.g. "GET /v1/charges") may be made now."""
        bucket = self._endpoint_bucket(endpoint)
        if bucket is not None:
            await bucket.acquire(priority)
        await self._account.acquire(priority)

    async def rate_limited(self, endpoint: str, reason: str | None, retry_after_s: float | None) -> None:
        """Stripe answered 429: blocks the bucket it names (for every process) for Retry-After or a second."""
        bucket = self._endpoint_bucket(endpoint) if reason and reason.startswith("endpoint") else None
        await (bucket or self._account).block(retry_after_s or DEFAULT_BLOCK_S)


class RateBudgets:
    """The budgets of every account this process reads: shared through Postgres when given a pool."""

    def __init__(self, test: Rate = Rate(20.0, 25.0), live: Rate = Rate(90.0, 100.0),
                 endpoint: Rate = Rate(22.0, 25.0), pool: asyncpg.Pool | None = None):
        self.test = test
        self.live = live
        self.endpoint = endpoint
        self._pool = pool
        self._buckets: dict[str, Bucket] = {}
        self._budgets: dict[str, AccountBudget] = {}

    def _bucket(self, key: str, rate: Rate) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = SharedBucket(self._pool, key, rate) if self._pool is not None else LocalBucket(rate)
            self._buckets[key] = bucket
        return bucket

    def for_account(self, account: str, livemode: bool) -> AccountBudget:
        """Returns the budget of `account` (a connection id)."""
        budget = self._budgets.get(account)
        if budget is None:
            budget = self._budgets[account] = self._budget(account, livemode, self._bucket)
        return budget

    def for_unconnected_key(self, livemode: bool) -> AccountBudget:
        """Returns a budget for one key Test of a key without a connection: local to the caller, not kept.

        A Test makes a handful of requests, so sharing it buys nothing, and keeping a bucket per key ever
        pasted (in Postgres or here) would let bad input grow state without bound.
        """
        buckets: dict[str, Bucket] = {}

        def local_bucket(key: str, rate: Rate) -> Bucket:
            if key not in buckets:
                buckets[key] = LocalBucket(rate)
            return buckets[key]

        return self._budget("key", livemode, local_bucket)

    def _budget(self, account: str, livemode: bool, bucket: Callable[[str, Rate], Bucket]) -> AccountBudget:
        """The account's budget: its bucket and, where the endpoint budget is the tighter one, one per endpoint."""
        rate = self.live if livemode else self.test

        def endpoint_bucket(endpoint: str) -> Bucket | None:
            if self.endpoint.per_second >= rate.per_second:
                return None  # the account's budget is the tighter one
            return bucket(f"{account} {endpoint}", self.endpoint)

        return AccountBudget(bucket(account, rate), endpoint_bucket)
