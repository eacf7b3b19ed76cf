"""One request budget per Stripe account (and per endpoint) across processes: two processes together stay
within it, the importer never starves the few interactive requests, a 429 stops every process, and two
workers importing one account share its slices within the limit Stripe enforces."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from ingestor.errors import StripeRateLimitedError
from ingestor.sources import import_pass
from ingestor.sources.checkpoints import PostgresCheckpoints
from ingestor.sources.slices import Peers
from ingestor.stripe_api.client import RetryPolicy, StripeReader
from ingestor.stripe_api.request_budget import (
    BEHIND_HORIZON_S,
    LATE_S,
    LEASE_HORIZON_S,
    AccountBudget,
    Priority,
    Rate,
    RateBudgets,
    SharedBucket,
)
from plumbing.settings import Settings
from schemas import Envelope
from service.worker import Worker, open_worker
from stripe_sim import SimServer
from tests.helpers import LoopLateness, topic_size, wait_for
from tests.ingestor.conftest import ControlClient, connect, published_envelopes, sim_objects
from tests.ingestor.test_importer import by_type

pytestmark = pytest.mark.integration

CHARGES = "GET /v1/charges"


@pytest.fixture
async def two_pools(clean_database: str) -> AsyncIterator[list[asyncpg.Pool]]:
    """Two pools: two processes' views of the one database."""
    pools = [await asyncpg.create_pool(clean_database, min_size=1, max_size=3) for _ in range(2)]
    yield pools
    for pool in pools:
        await pool.close()


def _busiest_second(times: list[float]) -> int:
    times, busiest, first = sorted(times), 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= 1.0:
            first += 1
        busiest = max(busiest, last - first + 1)
    return busiest


async def _spend(budget: AccountBudget, endpoint: str, seconds: float, into: list[float]) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        await budget.acquire(Priority.BULK, endpoint)
        into.append(time.monotonic())


async def test_two_processes_together_stay_within_one_accounts_budget(two_pools: list[asyncpg.Pool]) -> None:
    rate = Rate(40.0, limit=50.0)
    budgets = [RateBudgets(test=rate, pool=pool).for_account("conn_shared", False) for pool in two_pools]
    spent: list[list[float]] = [[], []]
    started = time.monotonic()
    await asyncio.gather(*(_spend(b, CHARGES, 2.5, into) for b, into in zip(budgets, spent) for _ in range(3)))
    elapsed = time.monotonic() - started
    lease = SharedBucket(two_pools[0], "x", rate).bulk_lease
    everything = spent[0] + spent[1]
    # Any second: Stripe's limit (the budget and the bucket's burst), plus what each process had leased.
    assert _busiest_second(everything) <= rate.limit + 2 * lease
    assert len(everything) <= rate.per_second * elapsed + rate.capacity + 2 * lease
    assert spent[0] and spent[1]  # both processes were served


async def test_requests_whose_leased_tokens_a_429_voided_are_still_served(two_pools: list[asyncpg.Pool]) -> None:
    """Every waiting request's token leased and on its way (the leaser done), then a 429 voids them: the
    requests must get new ones once the block ends. An import's slices all wait here, so none would come to
    ask again: before, they waited for ever, and the worker's pass with them."""
    bucket = SharedBucket(two_pools[0], "conn_void", Rate(20.0, limit=25.0))
    await bucket._take(4, 0, 1.0)  # a new bucket holds a lease to start with: taken, the next ones are due 0.2 s on
    waiting = [asyncio.create_task(bucket.acquire(Priority.BULK)) for _ in range(2)]

    async def all_leased_and_leaser_done() -> bool:
        return bucket._coming == 2 and bucket._leaser is not None and bucket._leaser.done()

    await wait_for(all_leased_and_leaser_done, 5, "both tokens leased ahead")
    await bucket.block(0.3)
    done, _ = await asyncio.wait(waiting, timeout=5)
    assert len(done) == 2, "requests left waiting after a 429 voided their tokens"
    assert all(t.exception() is None for t in done)


async def test_requests_an_import_gave_up_leave_nothing_to_send_later(
        two_pools: list[asyncpg.Pool]) -> None:
    """Requests cancelled while they queue for tokens (an import's pages, were it stopped so): the tokens leased
    for them (up to the horizon ahead) come due with no one to take them. Kept, the next import of this process
    sent them at once, on top of the bucket's schedule."""
    rate = Rate(80.0, limit=100.0)
    buckets = [SharedBucket(pool, "conn_gave_up", rate) for pool in two_pools]
    stopped = buckets[0]
    queued = [asyncio.create_task(stopped.acquire(Priority.BULK)) for _ in range(400)]

    async def horizon_leased() -> bool:
        return stopped._coming >= math.floor(rate.per_second * LEASE_HORIZON_S) - 1

    async def all_came_due() -> bool:
        return stopped._coming == 0 and stopped._leaser is not None and stopped._leaser.done()

    await wait_for(horizon_leased, 5, "the horizon's tokens to be leased for the queued pages")
    for task in queued:
        task.cancel()
    await asyncio.gather(*queued, return_exceptions=True)
    assert stopped._waiting() == 0  # nothing more is leased for them
    await wait_for(all_came_due, 5, "the leased tokens to come due")
    await asyncio.sleep(LEASE_HORIZON_S + 0.1)  # time passes: the stopped import's last tokens were due a while ago
    await stopped.acquire(Priority.BULK)
    assert stopped._due == 0  # nothing of what came due for the requests that gave up was kept

    spent: list[float] = []

    async def spend(bucket: SharedBucket) -> None:
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            await bucket.acquire(Priority.BULK)
            spent.append(time.monotonic())

    await asyncio.gather(*(spend(b) for b in buckets for _ in range(3)))
    assert _busiest_second(spent) <= rate.limit + 2 * stopped.bulk_lease


async def test_when_few_requests_come_a_lease_holds_only_what_they_need(two_pools: list[asyncpg.Pool]) -> None:
    """One slice paging at Stripe's latency asks for a token every few hundred milliseconds. A lease of 4 for each
    left 3 tokens in the process, sent later on top of the bucket's schedule (3 per process in one second, and with
    two workers 101.5 requests against Stripe's 100), or thrown away: spent from the shared budget for nothing. Each
    lease now holds what the waiting requests need, so every token drawn from the bucket is a request sent."""
    rate = Rate(90.0, limit=100.0)
    bucket = SharedBucket(two_pools[0], "conn_trickle", rate)
    assert bucket.bulk_lease >= 2

    for _ in range(4):
        await bucket.acquire(Priority.BULK)
        assert bucket._due == 0 and bucket._coming == 0  # nothing left over in this process to send later
        await asyncio.sleep(LEASE_HORIZON_S + 0.05)  # a page's round trip at Stripe's latency


async def test_a_busy_process_still_gets_its_whole_budget(two_pools: list[asyncpg.Pool]) -> None:
    """An importer whose event loop is held up by CPU work (parsing and redacting pages) for 200 ms at a time
    still gets the budget's rate: its leases are scheduled ahead, so tokens are used late, not lost."""
    rate = Rate(22.0, limit=25.0)  # an endpoint's budget: a bucket of three tokens fills in 136 ms
    budget = RateBudgets(test=Rate(90, 100), endpoint=rate, pool=two_pools[0]).for_account("conn_hog", False)
    spent: list[float] = []
    hog_s, every_s, run_s = 0.2, 0.3, 4.0

    async def cpu_hog() -> None:
        until = time.monotonic() + run_s
        while time.monotonic() < until:
            time.sleep(hog_s)  # the event loop is blocked, as by a page's synchronous work
            await asyncio.sleep(every_s - hog_s)

    started = time.monotonic()
    await asyncio.gather(cpu_hog(), *(_spend(budget, CHARGES, run_s, spent) for _ in range(10)))
    steady = [t for t in spent if t >= spent[0] + 1.0]  # after the first second (a new bucket holds one lease)
    achieved = (len(steady) - 1) / (steady[-1] - steady[0])
    assert achieved >= 0.9 * rate.per_second, f"{achieved:.1f} requests/s of {rate.per_second:g}"
    # Never more in all than the bucket's schedule since it started: its rate, its burst and what was leased
    # ahead. Tokens due while the loop was blocked are used late, not lost, so at the start (a blocked loop and
    # the first round trips) they bunch: measured from the first token used, the rate looks higher than it is.
    ahead = math.ceil(rate.per_second * LEASE_HORIZON_S)
    assert len(spent) <= rate.per_second * (spent[-1] - started) + rate.capacity + ahead
    # Once under way, tokens due during a block go out together when it ends: on the schedule, late.
    assert _busiest_second(steady) <= rate.limit + math.ceil(rate.per_second * hog_s)


async def test_each_endpoint_has_its_own_budget_within_the_accounts(two_pools: list[asyncpg.Pool]) -> None:
    endpoint = Rate(15.0, limit=20.0)
    budgets = [RateBudgets(live=Rate(90, 100), endpoint=endpoint, pool=pool).for_account("conn_ep", True)
               for pool in two_pools]
    charges: list[float] = []
    invoices: list[float] = []
    await asyncio.gather(*(_spend(b, CHARGES, 2.5, charges) for b in budgets),
                         *(_spend(b, "GET /v1/invoices", 2.5, invoices) for b in budgets))
    lease = SharedBucket(two_pools[0], "x", endpoint).bulk_lease
    assert _busiest_second(charges) <= endpoint.limit + 2 * lease
    assert _busiest_second(invoices) <= endpoint.limit + 2 * lease
    assert _busiest_second(charges) > 5 and _busiest_second(invoices) > 5  # one endpoint does not starve another


async def test_while_pages_queue_for_the_account_the_endpoint_with_most_left_is_served_first(
        two_pools: list[asyncpg.Pool]) -> None:
    """The import ends when its largest resource does; in live mode that one is bound by its endpoint's 25/s, so an
    account token another resource takes from it makes the whole import longer. Queued after the others, charges
    still go first; endpoints of equal rank keep their order of arrival."""
    budget = RateBudgets(test=Rate(20.0, limit=25.0), pool=two_pools[0]).for_account("conn_ranked", False)
    budget.rank_endpoints({CHARGES: 30_000, "GET /v1/customers": 2_000, "GET /v1/invoices": 2_000})
    served: list[str] = []

    async def one(endpoint: str, n: int) -> None:
        await budget.acquire(Priority.BULK, endpoint)
        served.append(f"{endpoint} {n}")

    await asyncio.gather(*(one("GET /v1/customers", n) for n in range(4)), *(one("GET /v1/invoices", n) for n in range(4)),
                         *(one(CHARGES, n) for n in range(6)))
    assert served == [f"{CHARGES} {n}" for n in range(6)] + [f"GET /v1/customers {n}" for n in range(4)] + [
        f"GET /v1/invoices {n}" for n in range(4)]
    budget.rank_endpoints({CHARGES: 0})  # charges nearly done: the others' requests go first now
    served.clear()
    await asyncio.gather(one(CHARGES, 0), one("GET /v1/customers", 0), one("GET /v1/coupons/{id}", 0))
    assert served == ["GET /v1/coupons/{id} 0", "GET /v1/customers 0", f"{CHARGES} 0"]  # not ranked: not starved


async def test_another_process_queue_does_not_hold_back_the_imports_largest_resource(
        two_pools: list[asyncpg.Pool]) -> None:
    """Two workers share an import, and both rank charges first (the import's largest resource): one holds most of
    its slices, each asking for a token after its page's round trip; the other, a few of them and many requests of
    smaller resources. Leases are first come in the database: the busy one, asking again as soon as a lease was
    granted, kept the account's schedule booked a quarter second ahead, and the first one's charges waited 0.29-0.33 s
    for each token (median). While processes share an import, the requests not among the leading resources book a
    tenth of a second ahead: 0.11 s."""
    account = Rate(90.0, limit=100.0)
    budgets = [RateBudgets(live=account, endpoint=Rate(200.0, limit=250.0), pool=pool).for_account("conn_lead", True)
               for pool in two_pools]  # no endpoint budget: the account's is the one both queue for
    for budget in budgets:
        budget.rank_endpoints({CHARGES: 30_000, "GET /v1/invoices": 10_000}, shared=True)
    waits: list[list[float]] = [[], []]
    round_trip_s, run_s = 0.3, 3.0

    async def slice_of_charges(process: int) -> None:
        until = time.monotonic() + run_s
        while time.monotonic() < until:
            asked = time.monotonic()
            await budgets[process].acquire(Priority.BULK, CHARGES)
            waits[process].append(time.monotonic() - asked)
            await asyncio.sleep(round_trip_s)  # the page's round trip at Stripe's latency

    invoices: list[float] = []
    await asyncio.gather(*(slice_of_charges(0) for _ in range(5)), *(slice_of_charges(1) for _ in range(2)),
                         *(_spend(budgets[1], "GET /v1/invoices", run_s, invoices) for _ in range(40)))
    steady = sorted(waits[0][10:])  # after the first round trips (the other's queue builds up meanwhile)
    median_wait = steady[len(steady) // 2]
    assert median_wait < (BEHIND_HORIZON_S + LEASE_HORIZON_S) / 2, f"charges waited {median_wait:.3f} s (median)"
    assert len(invoices) >= 0.8 * (account.per_second * run_s - len(waits[0]) - len(waits[1]))  # the rest is used


async def test_a_lease_on_the_long_horizon_holds_tokens_only_for_the_leading_requests(
        two_pools: list[asyncpg.Pool]) -> None:
    """A lease's tokens go to the requests ranked first, then to the others: leased a quarter second ahead for one
    request of charges with ten others waiting, a lease of four would book three tokens for the others that far
    ahead. It holds one; the others' leases book a tenth of a second ahead."""
    bucket = SharedBucket(two_pools[0], "conn_lease_lead", Rate(90.0, limit=100.0))
    bucket.lane_leads = lambda lane: lane == CHARGES
    taken: list[tuple[int, float]] = []
    take = bucket._take

    async def recorded(lease: int, reserve: float, horizon_s: float) -> tuple[int, float]:
        taken.append((lease, horizon_s))
        return await take(lease, reserve, horizon_s)

    bucket._take = recorded  # type: ignore[method-assign]
    requests = [asyncio.create_task(bucket.acquire(Priority.BULK, CHARGES))]
    requests += [asyncio.create_task(bucket.acquire(Priority.BULK, "GET /v1/invoices")) for _ in range(10)]
    await asyncio.wait_for(asyncio.gather(*requests), 5)
    assert taken[0] == (1, LEASE_HORIZON_S)
    assert all(horizon_s == BEHIND_HORIZON_S for _, horizon_s in taken[1:])


def test_the_endpoints_that_lead_are_those_with_much_of_the_latest_work_left() -> None:
    """Which endpoints book the account's tokens far ahead while processes share an import: those with at least half
    the most work left (in live mode, each of them bound by its own endpoint's budget), or unknown (a first page
    out), as last ranked. One that once led and is done no longer does; alone, a process ranks its own requests and
    every endpoint leads."""
    budget = RateBudgets(pool=None).for_account("conn_leads", True)
    invoices, customers = "GET /v1/invoices", "GET /v1/customers"
    budget.rank_endpoints({CHARGES: math.inf, invoices: 10_000, customers: math.inf}, shared=True)
    assert [budget.leads(e) for e in (CHARGES, invoices, customers)] == [True, True, True]
    budget.rank_endpoints({CHARGES: 30_000, invoices: 10_000}, shared=True)  # customers (first page out) done
    assert budget.leads(CHARGES) and not budget.leads(customers)
    budget.rank_endpoints({CHARGES: 30_000, invoices: 16_000, customers: 14_000}, shared=True)
    assert budget.leads(CHARGES) and budget.leads(invoices) and not budget.leads(customers)
    budget.rank_endpoints({CHARGES: 30_000, invoices: 10_000}, shared=True)  # customers done
    assert budget.leads(CHARGES) and not budget.leads(invoices) and not budget.leads(customers)
    assert budget.leads("GET /v1/coupons/{id}")  # never ranked: not the import's
    budget.rank_endpoints({CHARGES: 30_000, invoices: 10_000}, shared=False)  # the other process left
    assert budget.leads(invoices) and budget.leads(CHARGES)


async def test_requests_queued_under_a_low_rank_are_served_first_once_their_endpoint_is_ranked_first(
        two_pools: list[asyncpg.Pool]) -> None:
    """Ranks change as the import pages (the others' work dwindles): requests that queued while their endpoint was
    ranked low go first from then on, not after every request queued above them (ranked when they queued, they would
    wait for the others' whole import)."""
    endpoint, account = Rate(8.0, limit=10.0), Rate(30.0, limit=35.0)
    budget = RateBudgets(live=account, endpoint=endpoint, pool=two_pools[0]).for_account("conn_flip", True)
    above = [CHARGES, "GET /v1/invoices", "GET /v1/payment_intents", "GET /v1/subscriptions"]
    budget.rank_endpoints({**{e: 3_000 for e in above}, "GET /v1/customers": 100})
    customers: list[float] = []
    others: list[float] = []
    flipped_at: list[float] = []

    async def flip() -> None:
        # Customers wait behind the four above (32/s asked of 30) for a second's worth of the account's tokens.
        await wait_for(lambda: _ready(others, int(account.per_second)), 5, "the four above to have a second's worth")
        flipped_at.append(time.monotonic())
        budget.rank_endpoints({"GET /v1/customers": 10_000})

    await asyncio.gather(flip(), *(_spend(budget, "GET /v1/customers", 3.0, customers) for _ in range(12)),
                         *(_spend(budget, e, 3.0, others) for e in above for _ in range(4)))
    waited_since_start = 12 - sum(t < flipped_at[0] for t in customers)  # one per customers loop still queued
    served_next = [t for t in customers if flipped_at[0] <= t < flipped_at[0] + 0.5]
    assert waited_since_start >= 8 and len(served_next) >= waited_since_start, (waited_since_start, len(served_next))  # its endpoint's rate from the flip on, or near it


async def test_a_new_accounts_first_lease_is_due_at_once(two_pools: list[asyncpg.Pool]) -> None:
    """An import's first pages are asked for at once, not after the bucket refilled its reserve; its burst is not
    spent on the first second (the rate and the whole capacity in one second leave no room for a late send)."""
    rate = Rate(90.0, limit=100.0)
    bucket = SharedBucket(two_pools[0], "conn_new", rate)
    before_first = time.monotonic()
    granted, due = await bucket._take(bucket.bulk_lease, bucket.reserve, bucket.horizon_s)
    assert granted == bucket.bulk_lease and due == 0.0
    granted, due = await bucket._take(bucket.bulk_lease, bucket.reserve, bucket.horizon_s)
    between = time.monotonic() - before_first  # the bucket refilled meanwhile (a loaded CI machine: 44 ms and more)
    refill = bucket.bulk_lease / rate.per_second  # of what the first lease took: it started at that lease
    assert granted == bucket.bulk_lease and max(0.0, refill - between) - 0.005 <= due <= refill + 0.005


def test_a_buckets_burst_leaves_room_for_sends_a_little_late() -> None:
    """A token is sent when its process gets to it: two workers on a loaded machine, each now and then tens of
    milliseconds late, had 101 and 102 requests in one second against Stripe's 100 while the burst was the whole
    difference between limit and budget. With the default budgets, a second of the schedule and 50 ms more of it stay
    within Stripe's limit, and the burst still holds the interactive reserve and a bulk lease (or no lease is ever due
    at once)."""
    stripe = Settings().stripe
    for per_second, limit in ((stripe.live_requests_per_second, stripe.live_limit_per_second),
                              (stripe.test_requests_per_second, stripe.test_limit_per_second)):
        rate = Rate(per_second, limit)
        assert rate.capacity + rate.per_second * (1 + LATE_S) <= limit, (per_second, limit, rate.capacity)
        bucket = SharedBucket(None, "x", rate)  # type: ignore[arg-type]  # its arithmetic only: no lease is taken
        assert rate.capacity >= bucket.reserve + bucket.bulk_lease, (per_second, limit, rate.capacity)
    assert LATE_S * stripe.live_requests_per_second >= 4  # a few requests sent late, live


async def test_interactive_requests_beyond_the_horizon_wait_in_the_process_not_in_the_database(
        two_pools: list[asyncpg.Pool]) -> None:
    """A storm of webhooks needing discount lookups on one test-mode account: 600 interactive requests at once, 20/s
    booked up to 5 s ahead. Those beyond the horizon each asked the database again about every second, with a row
    lock: hundreds of statements a second in the database every tenant shares. Now one asks for them, as each token
    comes within the horizon: two statements per token at most."""
    rate = Rate(20.0, limit=25.0)
    bucket = SharedBucket(two_pools[0], "conn_storm", rate)
    takes = 0
    take = bucket._take

    async def counted_take(lease: int, reserve: float, horizon_s: float) -> tuple[int, float]:
        nonlocal takes
        takes += 1
        return await take(lease, reserve, horizon_s)

    bucket._take = counted_take  # type: ignore[method-assign]
    # Waits for the first ones by count, not a fixed time: on a loaded machine (a slow commit of each lease) fewer go in
    # any given time, and the statements allowed grow with the time taken.
    first_ones = int(rate.capacity + rate.per_second * 2)
    reached = asyncio.Event()
    started = time.monotonic()
    storm = [asyncio.create_task(bucket.acquire(Priority.INTERACTIVE)) for _ in range(600)]
    done_count = 0

    def one_done(_: asyncio.Task[None]) -> None:
        nonlocal done_count
        done_count += 1
        if done_count >= first_ones:
            reached.set()

    for task in storm:
        task.add_done_callback(one_done)
    await asyncio.wait_for(reached.wait(), 60)
    elapsed = time.monotonic() - started
    granted = sum(task.done() for task in storm)
    for task in storm:
        task.cancel()
    await asyncio.gather(*storm, return_exceptions=True)
    booked = rate.capacity + rate.per_second * 5  # what the horizon holds: granted with a wait, one statement each
    assert takes <= booked + 2 * rate.per_second * elapsed + 5, takes  # beyond it: one asks as each token comes
    assert granted <= rate.capacity + rate.per_second * elapsed + 1  # and they go no faster than the budget


async def test_interactive_requests_are_not_queued_behind_an_import(two_pools: list[asyncpg.Pool]) -> None:
    rate = Rate(20.0, limit=25.0)
    bulk_budgets = [RateBudgets(test=rate, pool=pool).for_account("conn_busy", False) for pool in two_pools]
    poller = RateBudgets(test=rate, pool=two_pools[1]).for_account("conn_busy", False)
    bulk_grants: list[float] = []
    importing = [asyncio.create_task(_spend(b, CHARGES, 30, bulk_grants)) for b in bulk_budgets for _ in range(4)]
    try:
        await wait_for(lambda: _ready(bulk_grants, 2 * int(rate.per_second)), 10, "the import to use the whole budget")
        bucket = SharedBucket(two_pools[0], "x", rate)
        for _ in range(5):
            before, asked = len(bulk_grants), time.monotonic()
            await poller.acquire(Priority.INTERACTIVE, "GET /v1/events")
            waited = time.monotonic() - asked
            # Only what the import had leased ahead (its horizon, and one lease per process) goes before it, not
            # the import's queue of 30 seconds of requests; past the horizon, this test's own resumption ran late
            # (a loaded machine), and the import's tokens due meanwhile are on the bucket's schedule, not ahead.
            booked_ahead = math.ceil(rate.per_second * bucket.horizon_s)
            resumed_late = math.ceil(rate.per_second * max(0.0, waited - bucket.horizon_s))
            assert len(bulk_grants) - before <= booked_ahead + 2 * bucket.bulk_lease + 1 + resumed_late
            assert waited < bucket.horizon_s + 1.0  # not the import's 30 s queue
    finally:
        for task in importing:
            task.cancel()
        await asyncio.gather(*importing, return_exceptions=True)


async def _ready(grants: list[float], count: int) -> bool:
    return len(grants) >= count


async def test_after_a_429s_block_the_bucket_refills_from_its_end(two_pools: list[asyncpg.Pool]) -> None:
    """A 429 says the tenant's own systems use the account's limit now. The block set the bucket's level to 0 but
    counted its refill from before the block, so the bucket came back full when the block ended: a burst into an
    account just found busy (23 requests in the first second at test mode's 20/s). It refills from the block's end."""
    rate = Rate(20.0, limit=25.0)
    budget = RateBudgets(test=rate, pool=two_pools[0]).for_account("conn_refill", False)
    await budget.acquire(Priority.INTERACTIVE, CHARGES)
    await budget.rate_limited(CHARGES, "global-rate", 0.5)  # Retry-After: 0.5
    blocked_until = await two_pools[1].fetchval(
        "SELECT extract(epoch FROM blocked_until)::float FROM stripe_request_budgets WHERE budget_key = 'conn_refill'")
    sent: list[float] = []

    async def send_for(seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            await budget.acquire(Priority.BULK, CHARGES)
            sent.append(time.time())

    await asyncio.gather(*(send_for(2.0) for _ in range(4)))
    assert min(sent) >= blocked_until - 0.01  # nothing during the block
    first_second = [t for t in sent if t < blocked_until + 1.0]
    assert len(first_second) <= rate.per_second + 1, len(first_second)


async def test_a_429_gives_back_what_the_process_had_leased_ahead(two_pools: list[asyncpg.Pool]) -> None:
    """Bulk tokens are leased up to a quarter second ahead. A 429 voids them (sent after it, they would meet the
    block), but the bucket kept them as spent: after the block it first refilled what was never sent."""
    rate = Rate(20.0, limit=25.0)
    budget = RateBudgets(test=rate, pool=two_pools[0]).for_account("conn_voided", False)
    waiting = [asyncio.create_task(budget.acquire(Priority.BULK, CHARGES)) for _ in range(40)]

    async def level() -> float:
        return float(await two_pools[1].fetchval(
            "SELECT tokens FROM stripe_request_budgets WHERE budget_key = 'conn_voided'") or 0.0)

    try:
        await wait_for(lambda: _below(level, -2.0), 5, "tokens leased ahead of the schedule")
        await budget.rate_limited(CHARGES, "global-rate", 0.5)
        assert await level() == 0.0  # refilled from empty at the block's end, not from what was never sent
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)


async def _below(level: Callable[[], Awaitable[float]], bound: float) -> bool:
    return await level() < bound


async def test_a_request_of_the_new_connection_before_its_seed_does_not_undo_it(two_pools: list[asyncpg.Pool]) -> None:
    """The key Test's reads are seeded into a new connection's bucket just before its import starts. A poller's
    request in between made the bucket first, at its first lease, and the seed was dropped: 7 + 1 + 20 requests in
    one second against test mode's 25."""
    rate = Rate(20.0, limit=25.0)
    budgets = RateBudgets(test=rate, pool=two_pools[0])
    await budgets.for_account("conn_seeded", False).acquire(Priority.INTERACTIVE, "GET /v1/events")
    await budgets.spent_before("conn_seeded", False, 7)
    level = await two_pools[1].fetchval("SELECT tokens FROM stripe_request_budgets WHERE budget_key = 'conn_seeded'")
    assert level <= rate.capacity - 7


async def test_a_429_blocks_the_named_bucket_for_every_process(two_pools: list[asyncpg.Pool]) -> None:
    one, other = (RateBudgets(pool=p).for_account("conn_429", True) for p in two_pools)
    await one.acquire(Priority.INTERACTIVE, CHARGES)
    await one.rate_limited(CHARGES, "global-rate", 3.0)  # Retry-After: 3
    taken = await two_pools[1].fetchrow("SELECT * FROM stripe_budget_take('conn_429', 1, 90, 9, 0)")
    assert taken["granted"] == 0 and 2.0 < taken["wait_s"] <= 3.0  # the other process waits it out too

    await other.acquire(Priority.INTERACTIVE, "GET /v1/invoices")
    await other.rate_limited("GET /v1/invoices", "endpoint-rate", None)  # no Retry-After: a second
    blocked = {r["budget_key"]: r["blocked"] for r in await two_pools[0].fetch(
        "SELECT budget_key, coalesce(blocked_until > clock_timestamp(), false) AS blocked FROM stripe_request_budgets "
        "WHERE budget_key LIKE 'conn_429%'")}
    assert blocked["conn_429 GET /v1/invoices"] is True and blocked["conn_429 GET /v1/charges"] is False


async def test_a_429_from_stripe_blocks_the_endpoint_it_names(sim: SimServer, two_pools: list[asyncpg.Pool]) -> None:
    account = sim.create_account(customers=3)
    sim.set_rate_limit(account.id, 1000, endpoint_per_second=2)  # Stripe's endpoint limit, made tiny
    budgets = RateBudgets(test=Rate(200, 250), endpoint=Rate(100, 125), pool=two_pools[0])
    reader = StripeReader(account.restricted_key, budgets.for_account("conn_sim429", False), api_base=sim.base_url,
                          retry=RetryPolicy(attempts=1))
    try:
        with pytest.raises(StripeRateLimitedError) as raised:
            for _ in range(10):
                await reader.list_raw_page("charges", {"limit": 1})
    finally:
        await reader.close()
    assert raised.value.reason == "endpoint-rate" and "endpoint-rate" in str(raised.value)
    blocked = await two_pools[1].fetchval("SELECT blocked_until > clock_timestamp() FROM stripe_request_budgets "
                                          "WHERE budget_key = 'conn_sim429 GET /v1/charges'")
    assert blocked is True


# A slice's lease in the tests that share an import between two workers: the suite's 2 s (for the kill tests' quick
# takeovers) lapsed once in a CI run while the loop both workers and the simulator share was held up, and the other
# worker paged the slice again (one charge published twice; `objects_published_unsaved` counts what that publishes).
SHARED_LEASE_S = 15.0


def sharing(settings: Settings, **importer: Any) -> Settings:
    """A worker's settings for sharing an import with another: the production lease (`SHARED_LEASE_S`)."""
    update = {"slice_lease_s": SHARED_LEASE_S, **importer}
    return settings.model_copy(update={"importer": settings.importer.model_copy(update=update)})


async def import_shared(worker: Worker, connection_id: str) -> int:
    """Runs passes until the import is done (by whichever worker); returns the slices this one paged."""
    slices = 0
    while True:
        outcome = await worker.importer.run_connection(connection_id)
        slices += outcome.slices
        if outcome.state == "done":
            return slices
        assert outcome.state in ("more", "busy"), outcome  # "more": its pass ended while the other pages


def assert_no_page_published_twice(envelopes: list[Envelope], total: int, *workers: Worker,
                                   held_up: object = None) -> None:
    """Every object once: a failure names the objects published twice, what the workers published and never saved
    (a lease lapsed under a page out: how sharing doubles a page) and how long the loop was held up."""
    doubled = sorted(key for key, count in Counter((e.object_type, e.object_id) for e in envelopes).items()
                     if count > 1)
    unsaved = [w.importer.objects_published_unsaved for w in workers]
    assert len(envelopes) == total and not doubled, (len(envelopes), total, doubled[:10], unsaved, held_up)


@pytest.mark.parametrize("history, latency_ms", [
    ({"customers": 200}, 30),
    # A bulk migration's burst shared by two processes (at the test budget, 20/s for five resources, it is split only
    # while that leaves room; the kill test splits it at the live budget).
    ({"customers": 20, "migrated_customers": 800, "migration_s": 10, "migration_at": 0.7}, 100),
], ids=["smooth", "burst"])
async def test_two_workers_share_one_import_within_stripes_limit(
    control: ControlClient, sim: SimServer, history: dict[str, Any], latency_ms: int
) -> None:
    account = sim.create_account(**history).id  # Stripe's test-mode limits: 25/s, 25/s per endpoint
    sim.set_faults({"kind": "latency", "latency_ms": latency_ms})
    _, _, connection_id, _ = await connect(control, sim, account)
    async with (open_worker(sharing(control.settings), control.keyring, control.readers) as worker,  # the web app's
                open_worker(sharing(control.settings), control.keyring) as other,  # its own pool and budgets
                LoopLateness(LATE_S) as lateness):
        first, second = await asyncio.gather(import_shared(worker, connection_id), import_shared(other, connection_id))
    sim.set_faults()
    assert first > 0 and second > 0  # both paged
    seen = sim.request_rate(account, livemode=False)
    # Stripe's test-mode limit, 25 in any second; in a run whose loop was held up (28 once in a whole suite's run), by
    # no more than what came due meanwhile (the workers and the simulator share this loop).
    budget = control.settings.stripe.test_requests_per_second
    assert seen["rate_limited"] == 0, seen
    assert seen["busiest_second"] <= 25 + lateness.tokens_due_while_held_up(budget), (seen, lateness.held_up)
    expected = sim_objects(sim, account)
    total = sum(len(v) for v in expected.values())
    envelopes = await published_envelopes(control.settings, total)
    assert by_type(envelopes) == expected
    assert_no_page_published_twice(envelopes, total, worker, other, held_up=lateness.held_up)


async def test_a_lease_that_lapses_under_a_page_out_is_how_sharing_publishes_a_page_twice(
    control: ControlClient, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One worker's leases lapse while its pages are out (a lease shorter than a page, its renewals stopped: a process
    held up past its lease), and the other takes those slices and pages them too. Every object still arrives, and
    what arrives twice is what the held-up worker counted as published and not saved."""
    account = sim.create_account(customers=200).id
    sim.set_faults({"kind": "latency", "latency_ms": 400})
    _, _, connection_id, _ = await connect(control, sim, account)
    async with (open_worker(sharing(control.settings, slice_lease_s=0.3), control.keyring) as held_up,
                open_worker(sharing(control.settings), control.keyring) as other):
        async def renewals_stopped(*args: Any, **kwargs: Any) -> None:
            return None

        monkeypatch.setattr(held_up.importer._checkpoints, "renew_claims", renewals_stopped)  # that worker's only
        first = asyncio.create_task(import_shared(held_up, connection_id))

        async def held_up_pages_several() -> bool:
            return bool(await control.pool.fetchval(
                "SELECT count(*) >= 4 FROM import_slices WHERE connection_id = $1 AND claimed_by = $2 AND NOT done",
                connection_id, held_up.importer._worker_id))

        # The other joins once the held-up one pages several slices (each lapses while its page is out): with room
        # for all of them, its first claims take some (started together, its own slices kept its workers busy, and
        # on a loaded machine it took none of the other's).
        await wait_for(held_up_pages_several, timeout_s=20)
        await asyncio.gather(first, import_shared(other, connection_id))
    sim.set_faults()
    expected = sim_objects(sim, account)
    total = sum(len(v) for v in expected.values())
    unsaved = held_up.importer.objects_published_unsaved
    envelopes = await published_envelopes(control.settings, await topic_size(control.settings.kafka,
                                                                             control.settings.kafka.raw_topic))
    assert by_type(envelopes) == expected
    assert unsaved > 0 and other.importer.objects_published_unsaved == 0  # the fault happened, to that worker only
    assert len(envelopes) == total + unsaved  # each object twice is one counted (its page listed again, as it was)


@pytest.mark.parametrize("latency_ms, first_cap", [
    (100, None),  # the first may split as it likes: over its share once the second wants more, it lets some go
    (400, 5),  # the first is capped at the five it holds, within its share at this latency: it splits one off
], ids=["over_its_share", "within_its_share"])
async def test_a_worker_joining_an_import_another_pages_gets_a_share_in_its_first_pass(
    control: ControlClient, sim: SimServer, latency_ms: int, first_cap: int | None
) -> None:
    """The second process adds its CPU to an import the first one holds every slice of, nothing lost or
    published twice."""
    account = sim.create_account(customers=600).id
    sim.set_faults({"kind": "latency", "latency_ms": latency_ms})
    _, _, connection_id, _ = await connect(control, sim, account)

    second_settings = sharing(control.settings, initial_slices=1)  # five slices: the first process takes them all
    first_settings = second_settings if first_cap is None else sharing(control.settings, initial_slices=1,
                                                                       slices_in_flight=first_cap)
    held = """SELECT count(claimed_by) AS held, count(*) FILTER (WHERE claimed_by IS NULL AND NOT done) AS free
                FROM import_slices WHERE connection_id = $1"""
    async with (open_worker(first_settings, control.keyring) as first,
                open_worker(second_settings, control.keyring) as second):
        first_pass = asyncio.create_task(first.importer.run_connection(connection_id))

        async def first_holds_every_slice() -> bool:  # only the first imports yet
            row = await control.pool.fetchrow(held, connection_id)
            return bool(row["held"] >= 5 and row["free"] == 0)

        await wait_for(first_holds_every_slice, timeout_s=20)
        joined = await second.importer.run_connection(connection_id)
        assert joined.slices > 0, joined  # before sharing: "busy", nothing to claim until the first pass ended
        outcomes = [await first_pass, joined]
        while all(o.state != "done" for o in outcomes):
            outcomes = [await first.importer.run_connection(connection_id)]
    sim.set_faults()
    expected = sim_objects(sim, account)
    total = sum(len(ids) for ids in expected.values())
    envelopes = await published_envelopes(control.settings, total)
    assert by_type(envelopes) == expected
    assert_no_page_published_twice(envelopes, total, first, second)
    assert await control.pool.fetchval("SELECT sum(objects_published) FROM import_runs WHERE connection_id = $1",
                                       connection_id) == total
    assert await control.pool.fetchval("SELECT count(*) FROM import_workers WHERE connection_id = $1",
                                       connection_id) == 0  # each left when its pass ended


async def test_a_process_sees_the_slices_of_each_resource_and_the_work_left_the_others_hold(
    control: ControlClient, sim: SimServer
) -> None:
    """What a process importing with others splits up to (`slices_per_endpoint`) and ranks its requests by
    (`Peers.with_work_left`): the others' claims per resource, and the objects they expect left, a resource whose first
    page is out as infinite."""
    _, _, connection_id, _ = await connect(control, sim, sim.create_account(customers=1).id)
    checkpoints = PostgresCheckpoints(control.pool)
    await checkpoints.start_import(connection_id, ["charges", "invoices"], 0, 10_000, "on_demand")
    for run in await checkpoints.import_checkpoints(connection_id):
        await checkpoints.prepare_slices(run, 3)
    held = [await checkpoints.claim_slice(connection_id, "a", 30) for _ in range(4)]  # the longest first: 3 + 1
    assert all(piece is not None for piece in held)
    await checkpoints.join_import(connection_id, "a", 30, paging=4,
                                  work_left={"charges": 3_000.0, "invoices": math.inf})
    peers = await checkpoints.join_import(connection_id, "b", 30, work_left={"charges": 50.0})
    assert peers.processes == 2
    assert dict(peers.paging_by_resource) == Counter(piece.resource for piece in held if piece is not None)
    assert peers.work_left == (("charges", 3_000.0), ("invoices", math.inf))  # b's own are not in it
    assert (await checkpoints.join_import(connection_id, "a", 30, paging=4)).work_left == (("charges", 50.0),)
    # A third process died holding slices: its row lapses at once, its claims only later. They count for no one
    # (its slices wait for their leases to lapse; counted, they would hold the others back from the resource).
    dead = [await checkpoints.claim_slice(connection_id, "dead", 30) for _ in range(2)]
    assert all(piece is not None for piece in dead)
    await checkpoints.join_import(connection_id, "dead", 0, paging=2)
    assert dict((await checkpoints.join_import(connection_id, "b", 30)).paging_by_resource) == \
        Counter(piece.resource for piece in held if piece is not None)
    await checkpoints.release_slices(connection_id, "a")
    assert (await checkpoints.join_import(connection_id, "b", 30)).paging_by_resource == ()  # let go: none held
    await checkpoints.leave_import(connection_id, "a")
    assert await checkpoints.join_import(connection_id, "b", 30) == Peers()  # alone again: nothing of the others


async def test_a_process_that_died_drops_out_of_the_share_and_renewing_is_not_joining_twice(
    control: ControlClient, sim: SimServer
) -> None:
    _, _, connection_id, _ = await connect(control, sim, sim.create_account(customers=1).id)
    checkpoints = PostgresCheckpoints(control.pool)
    assert await checkpoints.join_import(connection_id, "dead", 0, paging=7) == Peers()  # its lease is over at once
    assert await checkpoints.join_import(connection_id, "a", 30, paging=5) == Peers()  # the dead one does not count
    assert await checkpoints.join_import(connection_id, "b", 30, wants_more=True) == Peers(2, 5, False)
    assert await checkpoints.join_import(connection_id, "a", 30, paging=6) == Peers(2, 0, True)  # renewed: still two
    await checkpoints.leave_import(connection_id, "a")
    assert await checkpoints.join_import(connection_id, "b", 30, paging=3) == Peers()
    await control.pool.execute("UPDATE import_workers SET seen_until = now() - interval '2 minutes' "
                               "WHERE worker_id = 'dead'")
    await checkpoints.leave_import(connection_id, "b")
    assert await control.pool.fetchval("SELECT count(*) FROM import_workers WHERE connection_id = $1",
                                       connection_id) == 0  # a long-dead process's row goes with the next to leave


async def test_keys_pasted_before_a_connection_leave_no_budget_behind(control: ControlClient, sim: SimServer) -> None:
    """A tenant pasting key after key (good or bad) grows no state: a Test without a connection keeps its
    budget to itself, while a connected account's Test draws on the shared one."""
    account = sim.create_account(customers=2)
    tenant, token = await control.tenant("Paster")
    buckets = "SELECT budget_key FROM stripe_request_budgets"
    before = {r["budget_key"] for r in await control.pool.fetch(buckets)}  # other tests' connections
    for key in [sim.create_restricted_key(account.id), "rk_test_" + "x" * 99, sim.create_restricted_key(account.id)]:
        status, body = await control.call("POST", f"/api/tenants/{tenant}/key-tests", token, {"key": key})
        assert status == 200, body
    assert {r["budget_key"] for r in await control.pool.fetch(buckets)} == before

    tenant, token, connection_id, _ = await connect(control, sim, account.id, "Connected")
    status, body = await control.call("POST", f"/api/tenants/{tenant}/connections/test/test", token)
    assert status == 200, body
    added = {r["budget_key"] for r in await control.pool.fetch(buckets)} - before
    assert added and {key.split(" ")[0] for key in added} == {connection_id}


async def test_the_key_test_that_made_a_connection_counts_in_its_accounts_budget(
        control: ControlClient, sim: SimServer) -> None:
    """Connecting tests the key first, on a budget of its own (there is no connection yet), and the import starts at
    once: a new bucket's first lease and a second's refill came on top of the Test's reads, 29 requests in one second
    against test mode's 25 (a CI run). The new connection's bucket starts as if the Test had drawn them from it."""
    account = sim.create_account(customers=2)
    _, _, connection_id, _ = await connect(control, sim, account.id)
    tokens = await control.pool.fetchval("SELECT tokens FROM stripe_request_budgets WHERE budget_key = $1",
                                         connection_id)
    stripe = control.settings.stripe
    full = Rate(stripe.test_requests_per_second, stripe.test_limit_per_second).capacity  # 25 - 20 × 1.05 = 4
    test_reads = sim.request_rate(account.id, livemode=False)["requests"]
    assert test_reads == 7  # one per resource the key must read
    assert tokens is not None and tokens + test_reads == full  # a full bucket, less the Test's reads


async def test_the_process_that_pages_an_imports_last_slice_ends_it_at_once(
    control: ControlClient, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process whose idle workers last asked for a slice while another process paged one, and which then pages the
    import's last slice, asks again as that slice ends: the import is done then, not once a claim is tried again
    (`CLAIM_AGAIN_S`, a second; made longer than the test here, so that waiting for it fails the test). Two workers on
    a bulk migration's history ended 1.3 s after their last page in one run of five (of 18-19 s)."""
    monkeypatch.setattr(import_pass, "CLAIM_AGAIN_S", 3_600.0)
    account = sim.create_account(customers=5).id  # a page per resource: nothing to split
    _, _, connection_id, _ = await connect(control, sim, account)
    checkpoints = PostgresCheckpoints(control.pool)
    for run in await checkpoints.import_checkpoints(connection_id):
        await checkpoints.prepare_slices(run, 1)
    held_elsewhere = ("UPDATE import_slices SET claimed_by = 'another process', claimed_until = now() + interval "
                      "'1 hour' WHERE connection_id = $1 AND resource = 'customers'")
    assert await control.pool.execute(held_elsewhere, connection_id) == "UPDATE 1"
    await checkpoints.join_import(connection_id, "another process", 3_600, paging=1)
    settings = control.settings.model_copy(update={"importer": control.settings.importer.model_copy(
        update={"initial_slices": 1, "pass_s": 3_600.0})})
    charges_left = "SELECT count(*) FROM import_slices WHERE connection_id = $1 AND resource = 'charges' AND NOT done"

    async def only_charges_paged_here() -> bool:  # the others done: this process's idle workers found nothing left
        return bool(await control.pool.fetchval(
            "SELECT bool_and(done) FROM import_slices WHERE connection_id = $1 AND resource NOT IN ('charges', "
            "'customers')", connection_id))

    sim.set_faults({"kind": "latency", "latency_ms": 5_000, "path_prefix": "/v1/charges"})  # paged last
    try:
        async with open_worker(settings, control.keyring) as worker:
            passing = asyncio.create_task(worker.importer.run_connection(connection_id))
            try:
                await wait_for(only_charges_paged_here, 20, "every slice but charges' and the other process's done")
                assert await control.pool.fetchval(charges_left, connection_id) == 1  # its page still out
                assert await control.pool.execute(  # the other process pages its slice to the end meanwhile
                    "UPDATE import_slices SET done = true, claimed_by = NULL, claimed_until = NULL "
                    "WHERE connection_id = $1 AND resource = 'customers'", connection_id) == "UPDATE 1"
                outcome = await asyncio.wait_for(passing, 30)  # before: its pass waited for its hour
            finally:
                passing.cancel()
    finally:
        sim.set_faults()
    assert outcome.state == "done", outcome
    assert await control.pool.fetchval(
        "SELECT count(*) FROM import_runs WHERE connection_id = $1 AND done_at IS NULL", connection_id) == 0
