"""One request budget per Stripe account, and per endpoint of it, shared by every process through Postgres.

Stripe limits requests per account (100/s live, 25/s test) and, unless documented otherwise, per endpoint
(25/s: "API endpoints have a default limit of 25 requests per second", docs.stripe.com/rate-limits),
both counted across every client of the account. Every process that reads an account (workers importing
and polling, the web process testing keys, fetching discounts, reconciling) draws each request from two
token buckets — the account's and the endpoint's — kept in `stripe_request_budgets` and refilled at
their budget's rate (`stripe_budget_take`, one row lock per lease). A bucket holds at most Stripe's limit
minus our budget and `LATE_S` (50 ms) of it, and no more than `MAX_BURST_S` of the budget (5.5 live, 4 test, 3 per
endpoint with the defaults; never fewer than `MIN_CAPACITY`, 3, and the settings keep that much between budget and
limit), so no one-second window of the schedule holds more than Stripe's limit from us. On the wire, a busy event
loop may still send late tokens in a bunch: the account's buckets leave room for sends 50 ms late with the default
budgets, an endpoint's does not (3 + 22 × 1.05 = 26.1 against 25, and its requests wait for the account's token
after taking the endpoint's). A process leases up to 50 ms of the budget at a time and spends it locally: 4 tokens
a lease for the account's bucket live, one for an endpoint's or test mode's (an import at the live budget costs
about 22 + 88 statements a second).

Priorities: bulk work (the importer) never takes the bucket's last `reserve` token, so the few
interactive requests (the poller, a key Test, a reconcile, a discount lookup) find one at once even
during a long import. Among one process's bulk requests waiting for the account's bucket, those to the
endpoint with the most left to list go first (`AccountBudget.rank_endpoints`): in live mode the import of the
largest resource is bound by its endpoint's budget (22/s), so every account token another resource takes from
it while it waits makes the whole import longer. Between processes, leases are first come: so that one process's
queue of other resources does not book the account's schedule far ahead of another's largest resources, while
processes share an import only the requests of the endpoints that lead its work left book `LEASE_HORIZON_S` ahead,
the others `BEHIND_HORIZON_S` (`AccountBudget.leads`). (Each of those requests took its endpoint's token before it
queued: an endpoint ranked low that is ranked first later sends its waiting requests at once, on top of its
endpoint's schedule — docs/import.md says why that is left.) A 429 from Stripe (the tenant's own systems share the
account's limit) blocks the bucket it names (`Stripe-Rate-Limited-Reason`: the endpoint's for `endpoint-*`, else the
account's) for `Retry-After` or a second, for every process. Without a database, a local token bucket stands in.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import asyncpg
from aiolimiter import AsyncLimiter

from plumbing.postgres import database_errors
from plumbing.settings import STRIPE_BUCKET_MIN_CAPACITY, STRIPE_LATE_SEND_S

DEFAULT_BLOCK_S = 1.0  # how long a 429 without Retry-After blocks the bucket
LEASE_HORIZON_S = 0.25  # how far ahead bulk leases are scheduled: more than a busy event loop runs late
# How far ahead bulk requests that do not lead (`Bucket.lane_leads`) book: about how long another process's leading
# requests wait behind them for the account's tokens. Used only while processes share an import: a loop late by more
# than about 0.15 s then loses some of their tokens to a full bucket (unless another process's requests wait).
BEHIND_HORIZON_S = 0.1
# While processes share an import, an endpoint with at least this share of the most work left leads
# (`AccountBudget.leads`): on a bulk migration's history charges, invoices and payment intents have about as much, each
# bound by its endpoint's 22/s, and which of them has the most changes as they page.
LEADING_SHARE = 0.5
INTERACTIVE_HORIZON_S = 5.0  # an interactive lease is granted whenever it is due (within a block's wait)
BULK_LEASE_S = 0.05  # a bulk lease holds about this much of the budget's tokens
MIN_CAPACITY = STRIPE_BUCKET_MIN_CAPACITY  # room for the interactive reserve, one bulk lease and the lag of asking
LATE_S = STRIPE_LATE_SEND_S  # how late a loaded process may send its tokens within Stripe's limit
MAX_BURST_S = 0.25  # a low budget (room left for the tenant's own systems) bursts no more than this much of it


@dataclass(frozen=True)
class Rate:
    """One budget: requests per second, and Stripe's limit above it (the difference, less the room left for late
    sends, is the bucket's burst)."""

    per_second: float
    limit: float

    @property
    def capacity(self) -> float:
        """The bucket's burst: Stripe's limit minus a second of the budget and `LATE_S` of it. A token sent late goes
        out in a later second than the schedule's: two workers, each late by tens of milliseconds now and then on a
        loaded machine, had 101 and 102 requests in their busiest second with a burst of the whole difference (10
        live). Live 5.5, test 4; an endpoint's keeps `MIN_CAPACITY` (3). A low budget leaves the rest of Stripe's
        limit to the tenant's own systems, so its burst is `MAX_BURST_S` of it, not the whole difference (live at 1/s:
        3, not 98.95)."""
        return max(MIN_CAPACITY, min(self.limit - self.per_second * (1 + LATE_S), self.per_second * MAX_BURST_S))


class Priority(enum.Enum):
    """Who is asking: interactive requests are few and waited on; bulk ones are many."""

    INTERACTIVE = "interactive"
    BULK = "bulk"


def _unranked(lane: str) -> float:
    return 0.0


def _leads(lane: str) -> bool:
    return True


class Bucket:
    """One token bucket: acquire a token per request; a 429 blocks it.

    Where bulk requests queue for tokens, they queue in lanes (one per endpoint): the lane of the lowest
    `lane_rank` goes first, as ranked when a token comes, and first come first within a lane; in a bucket shared
    through Postgres, lanes that do not `lane_leads` book less far ahead (`BEHIND_HORIZON_S`)."""

    def __init__(self) -> None:
        self.lane_rank: Callable[[str], float] = _unranked
        self.lane_leads: Callable[[str], bool] = _leads

    async def acquire(self, priority: Priority, lane: str = "") -> None:
        """Waits until one request may be made now."""
        raise NotImplementedError

    async def block(self, seconds: float) -> None:
        """No one asks through this bucket for `seconds`."""
        raise NotImplementedError

    def leads_changed(self) -> None:
        """Which lanes lead changed (`lane_leads`): requests waiting may now book further ahead."""


class LocalBucket(Bucket):
    """A token bucket of this process only (no database at hand)."""

    def __init__(self, rate: Rate):
        super().__init__()
        self._limiter = AsyncLimiter(rate.capacity, rate.capacity / rate.per_second)
        self._blocked_until = 0.0

    async def acquire(self, priority: Priority, lane: str = "") -> None:
        wait = self._blocked_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await self._limiter.acquire()

    async def block(self, seconds: float) -> None:
        self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)


class SharedBucket(Bucket):
    """One bucket in Postgres; tokens leased a few at a time, ahead of need, and spent here.

    Bulk work (the importer's many requests) draws from a pipeline: while bulk requests wait for more tokens
    than are on their way, one task per bucket leases up to `bulk_lease` tokens at a time (`stripe_budget_take`),
    each lease granted at once with the time its tokens are due (when the bucket would have held them above
    the interactive reserve), up to `horizon_s` ahead; each due token goes to the longest-waiting request of
    the lane ranked first at that moment (one wake-up per token, not one per waiter per lease: a hundred
    requests queue in an import). So the bucket's schedule is kept full even while this process's event loop
    runs late (the tokens are then used late, never lost to a full bucket), and sends never run ahead of it.
    A lease holds no more tokens than the waiting requests need, so none is left over to go out later on top of the
    schedule. A request that gives up (its import stopped) leaves its lane; tokens that come due with no request
    left to take them (leased for requests that gave up) are kept for the horizon, then void.
    Interactive work (the poller, a key Test) leases one token at a time, may take the reserve, and waits at most
    about `horizon_s` behind an import.

    Leases are first come in the database, whichever process asks: a process with many requests waiting books the
    schedule up to `horizon_s` ahead, and another's requests wait that long behind them (longer: the busy one asks
    again as soon as a lease is granted), whatever their rank. Two workers importing a bulk migration's history at
    300 ms: one process's queue of smaller resources booked the account ahead of the other's charges (a few waiting
    at a time, each after its round trip), the import's long pole, whose 22/s fell to 13-19 in some seconds while the
    account's 90/s was all used, in runs traced for it (untraced runs of that code show it less: docs/import.md). The
    test of it: `test_another_process_queue_does_not_hold_back_the_imports_largest_resource`. So a lease
    on the long horizon holds tokens for the waiting requests of leading lanes only (`lane_leads`), and one for the
    others (every waiting request of a leading lane covered by what is due or coming) books `BEHIND_HORIZON_S` ahead;
    refused, its leaser asks again at once when a leading request comes uncovered. Leading lanes that ask for the
    whole account's budget (test mode has no endpoint budgets) may so take it from another process's other lanes, as
    they do within one process, until their work left falls below the others'.
    """

    def __init__(self, pool: asyncpg.Pool, key: str, rate: Rate, horizon_s: float = LEASE_HORIZON_S):
        super().__init__()
        self.pool = pool
        self.key = key
        self.rate = rate
        self.horizon_s = horizon_s
        self._due = 0  # bulk tokens whose time has come, not yet handed to a request
        self._due_at = 0.0  # when the last of them came due (loop time): after the horizon, few are kept
        self._coming = 0  # bulk tokens leased, due later
        # Bulk requests waiting for a token, per lane (first come first), each with its place in arrival order.
        self._lanes: dict[str, deque[tuple[int, asyncio.Future[None]]]] = {}
        self._arrivals = itertools.count()
        self._leaser: asyncio.Task[None] | None = None
        self._generation = 0  # a 429 voids what was leased before it
        self._leader_came = asyncio.Event()  # a request of a leading lane queued (the leaser may wait for it)
        # Interactive requests ask the database one at a time: those beyond the horizon wait here, not in the database.
        self._interactive_turn = asyncio.Lock()

    @property
    def reserve(self) -> float:
        return max(1.0, self.rate.capacity / 4)

    @property
    def bulk_lease(self) -> int:
        """Tokens per bulk lease: about 50 ms of the budget (fewer statements), at least one."""
        return max(1, math.floor(self.rate.per_second * BULK_LEASE_S))

    async def acquire(self, priority: Priority, lane: str = "") -> None:
        if priority is Priority.INTERACTIVE:
            await self._acquire_one()
            return
        if self._due > 0 and not self._waiting():
            if asyncio.get_running_loop().time() - self._due_at > self.horizon_s:
                # Leased for requests that gave up (a lease holds no more than the requests waiting need): sent
                # now, they would go on top of the bucket's schedule.
                self._due = 0
            if self._due > 0:
                self._due -= 1
                return
        token: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        place = (next(self._arrivals), token)
        self._lanes.setdefault(lane, deque()).append(place)
        if self.lane_leads(lane) and self._leading_uncovered() > 0:
            self._leader_came.set()  # not covered by what is due or coming: a lease on the long horizon
        self._keep_leasing()
        try:
            await token  # handed over by `_hand_out` (one wake-up per token), or the leaser's failure
        except asyncio.CancelledError:
            if token.done() and not token.cancelled() and token.exception() is None:
                self._due += 1  # handed over as the request was cancelled: the next one gets it
                self._hand_out()
            elif place in self._lanes.get(lane, ()):
                self._lanes[lane].remove(place)  # nothing is leased for a request that gave up
            raise

    async def _acquire_one(self) -> None:
        """Leases one token, up to `INTERACTIVE_HORIZON_S` ahead, and waits for its time. Requests asking further
        ahead queue in this process, and only the first asks the database again, as the next token comes within
        reach: each asking on its own (about once a second), 600 discount lookups at once on one test-mode account
        made 7,760 row-locking statements in 2.5 s, in the database every tenant shares; now about 200."""
        while True:
            async with self._interactive_turn:
                while True:
                    generation = self._generation
                    granted, wait_s = await self._take(1, 0.0, INTERACTIVE_HORIZON_S)
                    if granted:
                        break
                    await asyncio.sleep(min(max(wait_s, 0.002), 1.0))
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            if generation == self._generation:
                return
            # a 429 here meanwhile voided it: ask again, behind the block

    def _keep_leasing(self) -> None:
        """Starts the leaser unless it runs: requests wait for more tokens than are due or coming."""
        if self._waiting() and (self._leaser is None or self._leaser.done()):
            self._leaser = asyncio.create_task(self._lease_while_wanted(), name=f"budget {self.key}")

    async def _lease_while_wanted(self) -> None:
        """Leases ahead while more bulk requests wait than tokens are due or coming, no more tokens than they need (a
        lease's remainder, kept for requests that came later, went out on top of the schedule of its bucket: up to 3
        per process live); ends when none wait."""
        loop = asyncio.get_running_loop()
        try:
            while (wanted := self._waiting() - self._due - self._coming) > 0:
                self._leader_came.clear()
                generation = self._generation
                leading = self._leading_uncovered()
                if leading > 0:
                    lease, horizon_s = min(self.bulk_lease, leading), self.horizon_s
                else:  # none for the other lanes on the long horizon (a lease's remainder would be theirs)
                    lease, horizon_s = min(self.bulk_lease, wanted), min(self.horizon_s, BEHIND_HORIZON_S)
                granted, wait_s = await self._take(lease, self.reserve, horizon_s)
                if generation != self._generation:
                    continue  # a 429 came while this lease was granted: its tokens are void, as those before it
                if not granted:
                    pause_s = min(max(wait_s, 0.002), 1.0)
                    if leading > 0:
                        await asyncio.sleep(pause_s)
                    else:  # a leading request coming uncovered meanwhile (or a lane made leading) asks at once
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._leader_came.wait(), pause_s)
                    continue
                self._coming += granted
                loop.call_later(wait_s, self._release, granted, generation)
        except Exception as exc:  # Postgres away: the waiting requests fail as a request would
            for lane in self._lanes.values():
                while lane:
                    _, waiter = lane.popleft()
                    if not waiter.done():
                        waiter.set_exception(exc)

    def _release(self, granted: int, generation: int) -> None:
        """A lease's tokens are due: hand them to the waiters (unless a 429 voided them meanwhile)."""
        if generation != self._generation:
            return
        self._coming -= granted
        self._due += granted
        self._due_at = asyncio.get_running_loop().time()
        self._hand_out()

    def leads_changed(self) -> None:
        self._leader_came.set()  # a leaser waiting after a lease refused on the short horizon asks again

    def _leading_uncovered(self) -> int:
        """Bulk requests of leading lanes (`lane_leads`) waiting beyond the tokens due or coming (handed out by rank,
        those go to them first)."""
        return sum(len(lane) for name, lane in self._lanes.items() if self.lane_leads(name)) - self._due - self._coming

    def _waiting(self) -> int:
        """Bulk requests waiting (a cancelled one leaves its lane as it gives up)."""
        return sum(len(lane) for lane in self._lanes.values())

    def _hand_out(self) -> None:
        """Gives each due token to the longest-waiting request of the lane ranked first now (ties: the one waiting
        longest); a cancelled one is skipped."""
        while self._due > 0:
            lanes = [(self.lane_rank(name), lane[0][0], name) for name, lane in self._lanes.items() if lane]
            if not lanes:
                return
            _, _, name = min(lanes)
            _, waiter = self._lanes[name].popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._due -= 1

    async def _take(self, lease: int, reserve: float, horizon_s: float) -> tuple[int, float]:
        with database_errors():
            row = await self.pool.fetchrow("SELECT * FROM stripe_budget_take($1, $2, $3, $4, $5, $6)", self.key,
                                           lease, self.rate.per_second, self.rate.capacity, reserve, horizon_s)
        return int(row["granted"]), float(row["wait_s"])

    async def block(self, seconds: float) -> None:
        voided = self._due + self._coming  # leased here, not sent: the bucket gets them back
        self._generation += 1  # what this process leased ahead is void: the next leases wait for the block
        self._due = self._coming = 0
        try:
            with database_errors():
                # It refills from the block's end, from empty or what other processes booked ahead (their promised
                # tokens stay promised): setting the level to 0 alone, the refill counted from before the block, so
                # the bucket came back full, and other processes' bookings were forgotten. This process's bookings
                # are void, and given back: kept, they were charged again after the block (up to a quarter second
                # of the budget waited for nothing).
                await self.pool.execute(
                    "UPDATE stripe_request_budgets SET blocked_until = GREATEST(coalesce(blocked_until, now()), "
                    "clock_timestamp() + make_interval(secs => $2)), tokens = LEAST(tokens + $3, 0), refilled_at = "
                    "GREATEST(coalesce(blocked_until, now()), clock_timestamp() + make_interval(secs => $2)) "
                    "WHERE budget_key = $1", self.key, seconds, voided)
        finally:
            # The leaser may have ended with every waiting request's token on its way; those tokens are void
            # now, and no new request may come to start it again (an import's slices all wait here): lease for
            # them (its first lease fails them if Postgres is away, as a request would fail).
            self._keep_leasing()


class AccountBudget:
    """What a reader draws on before each request: its account's bucket and the endpoint's."""

    def __init__(self, account: Bucket, endpoint_bucket: Callable[[str], Bucket | None]):
        self._account = account
        self._endpoint_bucket = endpoint_bucket
        self._ranks: dict[str, float] = {}
        self._leading: frozenset[str] | None = None  # None: every endpoint leads (no other process imports)
        account.lane_rank = self.rank  # the account's lanes are endpoints
        account.lane_leads = self.leads

    def rank_endpoints(self, work_left: Mapping[str, float], shared: bool = False) -> None:
        """Bulk requests to the endpoints with more `work_left` (pages, or seconds: any one measure) take the
        account's tokens first while requests queue for them; endpoints not given keep their rank.

        While another process imports the account too (`shared`), the endpoints that lead this `work_left` (at least
        `LEADING_SHARE` of the most left, or unknown: infinite, a first page out) book the account's tokens further
        ahead than the others (`BEHIND_HORIZON_S`). Alone, a process ranks all its requests itself, and every
        endpoint leads: booked less far ahead, an event loop late by more than 0.15 s would lose tokens to a full
        bucket."""
        self._ranks.update({endpoint: -left for endpoint, left in work_left.items()})
        leading = None
        if shared:
            most = max((left for left in work_left.values() if left != math.inf), default=math.inf)
            leading = frozenset(endpoint for endpoint, left in work_left.items() if left >= LEADING_SHARE * most)
        if leading != self._leading:
            self._leading = leading
            self._account.leads_changed()

    def rank(self, endpoint: str) -> float:
        """Where bulk requests to `endpoint` queue for the account's tokens, lower first. An endpoint not ranked goes
        first: bulk requests other than the import's lists are few, and behind an import they would wait for its
        end."""
        return self._ranks.get(endpoint, -math.inf)

    def leads(self, endpoint: str) -> bool:
        """Whether bulk requests to `endpoint` book the account's tokens as far ahead as leases go: those of an
        endpoint that leads the last work left ranked (`rank_endpoints`), or never ranked (not the import's). The work
        left is the import's (the others' as of their last report, up to a second old), so the processes mostly agree
        on what leads."""
        return self._leading is None or endpoint in self._leading or endpoint not in self._ranks

    async def acquire(self, priority: Priority, endpoint: str) -> None:
        """Waits until one request to `endpoint` (e.g. "GET /v1/charges") may be made now."""
        bucket = self._endpoint_bucket(endpoint)
        if bucket is not None:
            await bucket.acquire(priority)
        await self._account.acquire(priority, endpoint)

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

    async def spent_before(self, account: str, livemode: bool, requests: int) -> None:
        """Starts `account`'s shared bucket as if `requests` had just been drawn from it full (or lower, if it holds
        less): those of the key Test that made the connection, which drew on a budget of its own
        (`for_unconnected_key`).
        Otherwise the import, started at once, had the new bucket's first lease and a second's refill on top of
        them: 7 Test requests and 22 of the import's in one second, against test mode's 25 (a CI run's busiest
        second, 29), and live 7 + 96.5 against 100. The import's first lease now waits for the refill (0.25 s in test
        mode, 0.08 s live). An endpoint's bucket starts at its reserve and a lease (2), so the Test's one read there
        and a second's 22 stay within 25 (26 if that read was retried: not seeded). A Test run on its own just before
        (`POST …/key-tests`, then Connect within a fraction of a second) is not counted either."""
        if self._pool is None:
            return
        rate = self.live if livemode else self.test
        with database_errors():
            # A request of the new connection (a poller's) may have made the bucket first: it keeps the lower level.
            await self._pool.execute(
                "INSERT INTO stripe_request_budgets AS b (budget_key, tokens, refilled_at) "
                "VALUES ($1, $2, clock_timestamp()) ON CONFLICT (budget_key) DO UPDATE SET refilled_at = "
                "excluded.refilled_at, tokens = LEAST(excluded.tokens, b.tokens + $3 * "
                "extract(epoch FROM excluded.refilled_at - b.refilled_at)::float8, $4) "
                "WHERE b.refilled_at <= excluded.refilled_at",  # not while a 429's block holds it
                account, rate.capacity - requests, rate.per_second, rate.capacity)

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
