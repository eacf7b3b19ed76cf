"""One pass of this process over one connection's import: the decisions it takes as it goes, apart from the I/O.

How many slices to page at once, when to split one, claim a free one, let one go to another process or wait for
one, and how the account's budget ranks the resources' requests: `ImportPass`, driven by `importer.StripeImporter`
(which pages, checkpoints and publishes). Pure but for the time it reads and the events it waits on.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from ingestor.envelope.discounts import Expanded
from ingestor.sources.slices import ALONE, ImportSlice, Peers, SlicePlanner, slices_per_endpoint, slices_wanted
from ingestor.stripe_api.client import list_endpoint
from ingestor.stripe_api.request_budget import AccountBudget

# What a connection's first pass assumes a page takes until its pages are timed (Stripe's lists take hundreds of
# milliseconds); later passes start from the previous pass's measure.
FIRST_PAGE_S = 0.5
# How often a pass says it still imports the connection (how many slices it pages, whether it wants more than it
# finds) and learns what the other processes importing it do; a process that died counts no more after
# SHARE_LEASE_S. One with nothing to page waits up to SHARE_WAIT_S for another to let a slice go before its pass ends.
SHARE_REFRESH_S = 1.0
SHARE_LEASE_S = 5.0
SHARE_WAIT_S = 5.0
CLAIM_AGAIN_S = 1.0  # after a claim found no free slice (another process may let one go meanwhile)


def moving_average(average: float | None, sample: float) -> float:
    """A time's moving average with one more sample (a fifth of its weight); the first sample is the average."""
    return sample if average is None else average + 0.2 * (sample - average)


class ImportPass:
    """One pass of this process over one connection: its slices, its deadline, how many it pages at once, and
    the wake-up of idle workers.

    Slices paged at once: enough to keep the budget busy (Little's law: requests/s × the time one page takes,
    from asking to checkpoint, measured as the pass goes), and no more — every slice ends in a part-empty
    page, so a slice split off that the budget cannot serve anyway only wastes requests. The count bounds
    claims as well as splits (a later pass finds many slices left by the earlier ones). While the process's
    CPU is the bottleneck (its event loop runs late, or the page pool's processes are at work nearly all the
    time), pages are slow because they queue for the CPU: the count is held where it was then, as one more slice
    would only hold another page in memory (and end in one more part-empty page).

    Processes importing the same connection share that count (`slices_wanted`): each takes what the others
    leave of it, and only its share while one of them wants more than it finds (room for more, and no free slice
    or one of its own worth splitting). For that one, a holder lets slices over its share go at their next
    checkpoints, or splits one off at a checkpoint (once per refresh), and leaves the free slices to it. So a
    second worker adds its CPU to an import another started, instead of waiting for the first one's pass to end.

    While pages queue for the account's budget, those of the resource with the most left go first (`budget`,
    updated as slices page): the import ends when its largest resource does.
    """

    def __init__(self, planner: SlicePlanner, deadline: float, requests_per_second: float, most: int,
                 worker_stop: asyncio.Event, cpu_bound: Callable[[], bool], page_s: float | None,
                 endpoint_requests_per_second: float | None = None, budget: AccountBudget | None = None):
        self.planner = planner
        self._budget = budget
        self.expanded = Expanded()  # tiered prices' tiers by price id, coupons by coupon id: this pass's
        self.deadline = deadline
        self.stop = asyncio.Event()  # a worker failed: the others stop too
        self._worker_stop = worker_stop  # the process is stopping
        self.slices_taken = 0
        self.lock = asyncio.Lock()  # one claim or split at a time
        self._changed = asyncio.Condition()
        self._rate = requests_per_second
        self._endpoint_rate = endpoint_requests_per_second  # None: the account's budget is the tighter one
        self._most = most
        self.page_s = FIRST_PAGE_S if page_s is None else page_s  # the previous pass's measure, or a guess
        self._guessed = page_s is None  # until a page is timed
        self._cpu_bound = cpu_bound  # whether this process's CPU is what pages wait for now
        self._cpu_bound_at: int | None = None  # slices being paged when the CPU became the bottleneck
        # A claim that found no free slice is tried again a second later, not before (-inf: none found nothing yet,
        # whatever the monotonic clock's origin).
        self._claim_again_at = -math.inf
        self._ran_out = False  # since the last claim or look, the last slice paged here ended: one is tried at once
        self._look_again_at = -math.inf  # when whether another process still pages is asked again (`looks_again`)
        self.peers = ALONE  # the other processes importing this connection, as last refreshed
        self._gave_a_split = False  # since that refresh
        self.paged_elsewhere = False  # another process pages some of the import (as of the last failed claim or look)
        self._idle_until: float | None = None  # how long a worker with nothing to page waits for a slice let go
        self.splitting: dict[tuple[str, str, int], asyncio.Event] = {}  # slices being split now, set once done
        self.unsure: set[tuple[str, str, int]] = set()  # slices whose split failed: their start is the database's

    def page_took(self, seconds: float) -> None:
        """One page took `seconds` from sending its request to its checkpoint (waits for the budget excluded).

        A guess is replaced by the first page timed: averaged in, a guess of half a second for a Stripe that
        answers in 50 ms would split a large history into several times the slices the budget can use, each
        holding a page in memory until it ends."""
        self.page_s, self._guessed = moving_average(None if self._guessed else self.page_s, seconds), False

    @property
    def page_timed(self) -> bool:
        """Whether `page_s` is a measure (a page was timed in this pass or the one it started from), not a guess."""
        return not self._guessed

    def wanted(self) -> int:
        """Slices to page at once."""
        wanted = slices_wanted(self._rate, self.page_s, self._most, self.peers)
        if self._cpu_bound():
            if self._cpu_bound_at is None:
                self._cpu_bound_at = max(1, self.planner.active_count())
            return min(wanted, self._cpu_bound_at)
        self._cpu_bound_at = None
        return wanted

    def to_split(self) -> tuple[ImportSlice, int] | None:
        """One of this process's slices to split and where, if any is worth it (`SlicePlanner.to_split`)."""
        endpoint_rate, peers = self._endpoint_rate, self.peers
        if endpoint_rate is None:
            return self.planner.to_split(self.wanted())
        return self.planner.to_split(
            self.wanted(), lambda resource: slices_per_endpoint(endpoint_rate, self.page_s, peers, resource))

    def has_room(self) -> bool:
        return self.planner.active_count() < self.wanted()

    def over_share(self) -> bool:
        """Another process wants more slices than it finds and this one pages more than its share."""
        return self.peers.wants_more and self.planner.active_count() > self.wanted()

    def refreshed(self, peers: Peers) -> None:
        self.peers, self._gave_a_split = peers, False

    def gives_a_split(self) -> bool:
        """Another process wants more slices than it finds: split one off for it at this checkpoint (once per
        refresh)."""
        if not self.peers.wants_more or self._gave_a_split:
            return False
        self._gave_a_split = True
        return True

    def claims_free_slices(self) -> bool:
        """While another process wants more slices than it finds, one that does not leaves the free ones to it."""
        return not self.peers.wants_more or self.wants_more()

    def wants_more(self) -> bool:
        """This process has room for more slices and finds none: a claim found no free one lately, and none of its
        own is worth splitting, were it not held back from its resource by the others' slices of it (asking then
        made the others let slices go and split some off for it: two workers on a bulk migration's history,
        1,349-1,401 requests against 1,325-1,399, median 0.85 of the ceiling against 0.88, five runs each). Left: a
        process whose every slice is of resources the others hold their endpoint's count of pages only those, while
        it could take some of a CPU-bound one's work."""
        return (time.monotonic() < self._claim_again_at + CLAIM_AGAIN_S and self.has_room()
                and self.planner.to_split(self.wanted()) is None)

    def waits_for_share(self) -> bool:
        """Whether a worker with nothing to page here waits for another process to let a slice go: while another
        process pages some of the import, for up to `SHARE_WAIT_S` since this one ran out of slices (the other
        sees this process within `SHARE_REFRESH_S` and lets its excess go at their next checkpoints)."""
        if self.planner.active_count():
            self._idle_until = None
            return True
        if not self.paged_elsewhere:
            return False
        if self._idle_until is None:
            self._idle_until = time.monotonic() + SHARE_WAIT_S
        return time.monotonic() < self._idle_until

    def may_take(self) -> bool:
        """Another slice is wanted and there may be one: a free one to claim, or one of ours worth splitting."""
        return self.has_room() and (self.claim_worth_trying() or self.to_split() is not None)

    def claim_worth_trying(self) -> bool:
        return ((time.monotonic() >= self._claim_again_at or (self._ran_out and not self.planner.active_count()))
                and self.claims_free_slices())

    def looks_again(self) -> bool:
        """Whether to ask the database if another process still pages some of the import, when no claim is tried (free
        slices are left to another process that wants more): nothing is paged here, and the last slice paged here
        ended since the last claim or look (`ran_out`), or the last look, a second ago or more, found one."""
        if self.planner.active_count():
            return False
        return self._ran_out or (self.paged_elsewhere and time.monotonic() >= self._look_again_at)

    def found_nothing_to_claim(self, paged_elsewhere: bool) -> None:
        self._claim_again_at = time.monotonic() + CLAIM_AGAIN_S
        self.looked(paged_elsewhere)  # a claim that found nothing asked whether another process pages, too

    def looked(self, paged_elsewhere: bool) -> None:
        self.paged_elsewhere, self._ran_out = paged_elsewhere, False
        self._look_again_at = time.monotonic() + CLAIM_AGAIN_S

    def ran_out(self) -> None:
        """This process pages none of the import's slices any more: a claim is tried at once, not up to
        `CLAIM_AGAIN_S` after the last one that found nothing, and asks afresh whether another process still pages
        some of the import. The last claim may have asked while one did: if this process then paged the import's
        last slice, its pass waited, taken for still shared, before it ended the import (two workers on a bulk
        migration's history: 1.3 s after the last page of an 18-19 s import, in one run of five; up to
        `SHARE_WAIT_S` where free slices were left to the other process, which never asked again: 0.8 s in a run
        where only a claim was tried at once). The wait for a slice let go (`waits_for_share`) starts again here."""
        self._ran_out, self._idle_until = True, None

    def going(self) -> bool:
        return not (self.stop.is_set() or self._worker_stop.is_set()) and time.monotonic() < self.deadline

    async def changed(self) -> None:
        """A slice paged a page, was taken or let go: a split may now be worth it. The waiters all wait for the
        same thing, so one is woken (it wakes the next once it took a slice), or all once none is left."""
        if self._budget is not None:  # by the import's work left: another process's requests are ranked so too
            self._budget.rank_endpoints({list_endpoint(resource): left for resource, left
                                         in self.peers.with_work_left(self.planner.work_left()).items()},
                                        shared=self.peers.processes > 1)
        async with self._changed:
            if self.planner.active_count() or self.paged_elsewhere:
                self._changed.notify(1)
            else:
                self._changed.notify_all()

    async def wait_for_split(self) -> None:
        """Waits until another slice may be taken or none is left being paged (by any process), or a second (then
        a claim is tried again: another process may have let one go), or the end of the pass."""
        timeout = min(CLAIM_AGAIN_S, max(0.0, self.deadline - time.monotonic()))
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(
                    lambda: self.may_take() or not (self.planner.active_count() or self.paged_elsewhere)), timeout)
        except asyncio.TimeoutError:
            pass
