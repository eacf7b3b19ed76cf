"""Time slices of an import: each resource's created range paged by many cursors at once.

A Stripe list is one cursor (newest first), so one resource paged alone makes one request at a time:
at Stripe's real latency (hundreds of ms per page) five resources use a tenth of the budget. The
import splits each resource's range into slices, each its own cursor (`created[gte]`/`[lte]` and
`starting_after`), pages many of them concurrently, and splits a slice further while requests could
be in flight and a slice still has a long range left — so the request rate stays at the budget
whatever the latency (Little's law: in flight = rate × latency). Each slice keeps its own checkpoint
(the oldest object published so far and its created time) and is claimed by one process at a time,
so several workers share one import. Pure: the importer and the checkpoints do the I/O.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

HEADROOM = 1.6  # pages take longer now and then, and slices of a busy endpoint wait for its budget: more in flight
# A density seen over one span is guessed for a slice not yet paged at most this many times as long. The first page of
# a smooth history's newer initial slice spans a fiftieth (3,000 customers' charges) to a five-hundredth (12,000
# customers') of its range, so the ramp's guesses hold; one page of a bulk migration's objects spans a second, and
# guessed over the months below it made every half split off look full and split again before any of them paged.
GUESS_REACH = 1000
# A page this many times as dense as its slice's average (or as sparse) tells what is just below better than the
# average does: a burst goes on, or is over. A steady history's pages of 100 spread within about a third of the
# average (Poisson); counting that noise made near-empty slices look worth splitting, one more part-empty page each on
# the endpoint the import waits for.
BURST = 2.0
# A burst is expected to go on at most this many times the seconds its page spans below the cursor (as many pages
# again), and the slice's usual density below that: extrapolated over what was left (up to a month), a burst made its
# slice the first to be split, at the middle of that month, and so on down to the burst, each half split off on the
# way sparse weeks that end in a part-empty page (a bulk migration's monthly renewals: 14 % of charges' requests).
# A migration through Stripe's API writes at most 100 objects a second (its live write limit): 100 pages over 100 s.
BURST_REACH = 100
# Only a page this many times as dense as what its slice saw before it is such a burst: a level change (a busier
# season, day against night, a business that was busier before) is a few times the density around it and goes on,
# where a migration's burst is thousands of times it (10,000 within a minute against a few a day).
SPIKE = 10.0


class _Listed(Protocol):
    """A listed item as `keep` and `lists_above_cursor` need it (`listed_pages.ListedObject`)."""

    @property
    def created(self) -> int | None: ...

    @property
    def cursor_id(self) -> str | None: ...


_Item = TypeVar("_Item", bound=_Listed)


@dataclass
class ImportSlice:
    """One slice of one resource's range: [range_start, range_end] in `created` seconds, paged newest first.

    `last_object_id` is the cursor (the oldest object published so far, for `starting_after`), and
    `oldest_created` that object's created time: what is left is [range_start, oldest_created].
    """

    connection_id: str
    resource: str
    run_id: str
    slice_id: int
    range_start: int
    range_end: int
    last_object_id: str | None = None
    oldest_created: int | None = None
    objects_published: int = 0
    done: bool = False
    # Objects per second of `created`, known before the slice's first page when it was split off a paged one
    # (so a slice can be split again at once: the ramp to a full budget takes one page's time, not one per
    # doubling), unless its range reaches too far below where that was seen (`GUESS_REACH`). Stored with the slice
    # (migration 0083), for whichever process claims it; an initial slice has none, and waits for its first page.
    inherited_density: float | None = None
    inherited_span: int = 0  # the seconds that density was seen over (`GUESS_REACH`)
    # Its last page is in hand (being published): nothing is left to split off, though `done` is set only once the
    # page is published. Not stored.
    last_page_read: bool = False
    # Objects per second of `created` in its last page read (from the cursor before it to the page's oldest): a
    # burst (a bulk migration's customers, created within a minute) shows here at once, where the slice's average
    # over its months paged says a few objects are left. Not stored.
    page_density: float | None = None
    page_span: int = 0  # the seconds that page spans (`BURST_REACH`)
    published_above: int = 0  # objects published before that page, over the seconds above it (`reference_density`)
    seconds_above: int = 0
    objects_read: int = 0  # of that page, not yet counted in `objects_published` (it is being published)
    published_unsaved: int = 0  # of that page, published and not yet saved (`StripeImporter.objects_published_unsaved`)

    @property
    def key(self) -> tuple[str, str, int]:
        """Which slice of the connection this is: (resource, run id, slice id)."""
        return self.resource, self.run_id, self.slice_id

    def left(self) -> tuple[int, int]:
        """The range still to page: from the start to the oldest created time seen (or the end)."""
        return self.range_start, self.range_end if self.oldest_created is None else self.oldest_created

    def left_span(self) -> int:
        start, end = self.left()
        return max(0, end - start)

    def paged_span(self) -> int:
        """The seconds of range its density is seen over: what it has paged, else what its parent had."""
        if self.oldest_created is None:
            return self.inherited_span
        return max(1, self.range_end - self.oldest_created)

    def average_density(self) -> float | None:
        """Objects per second of range: of what the slice has paged, else what it inherited (unless its range reaches
        too far below where that was seen, `GUESS_REACH`); None if neither."""
        if self.oldest_created is None:
            if self.left_span() > GUESS_REACH * self.inherited_span:
                return None
            return self.inherited_density
        return (self.objects_published + self.objects_read) / self.paged_span()

    def reference_density(self) -> float | None:
        """What its last page is compared with to tell a burst, and what is expected below a burst's reach: what it
        published above that page over the seconds above it, or at its first page the density it inherited (whatever
        its reach: a half whose top is in a burst sees its first page as the burst it is, not as its whole average)."""
        if self.page_density is None:
            return self.average_density()
        if self.published_above == 0 and self.seconds_above == 0:  # its first page
            return self.inherited_density
        return self.published_above / max(1, self.seconds_above)

    def burst(self) -> tuple[float, int, float] | None:
        """If its last page is a burst expected to end within `BURST_REACH` (`SPIKE` times as dense as what it saw
        before): its density, how many seconds below the cursor it is expected to reach, and the density below."""
        reference = self.reference_density()
        if reference is None or self.page_density is None or self.page_density <= SPIKE * reference:
            return None
        return self.page_density, BURST_REACH * self.page_span, reference

    def in_burst(self) -> bool:
        """Its last page is such a burst (`burst`)."""
        return self.burst() is not None

    def _page_denser(self, factor: float) -> bool:
        reference = self.reference_density()
        return reference is not None and self.page_density is not None and self.page_density > factor * reference

    def density(self) -> float | None:
        """Objects per second expected just below the cursor: the average, or its last page's if that is a burst or
        the end of one (`BURST`, against `reference_density`)."""
        reference = self.reference_density()
        if reference is not None and self.page_density is not None and not (
                reference / BURST <= self.page_density <= BURST * reference):
            return self.page_density
        return self.average_density()

    def read_page(self, created: list[int]) -> None:
        """Its next page is read, with these created times (of the objects it keeps): the oldest is where what is
        left ends (before the page is published: a split while it is sent leaves the page's objects to this slice),
        and the page's density is known."""
        if not created:
            return
        above = self.range_end if self.oldest_created is None else self.oldest_created
        self.oldest_created = min(created)
        self.published_above, self.seconds_above = self.objects_published, self.range_end - above
        self.page_span = max(1, above - self.oldest_created)
        self.page_density = len(created) / self.page_span
        self.objects_read = len(created)

    def counted(self, published: int) -> None:
        """The page read last is published: `published` of its objects (those it could read)."""
        self.objects_published += published
        self.objects_read = 0

    def objects_left(self) -> float | None:
        """Objects expected in what is left, at the slice's density (none once its last page is read); a burst's only
        as far as `BURST_REACH`. None before anything is known of it."""
        if self.last_page_read:
            return 0.0
        left, burst = self.left_span(), self.burst()
        if burst is not None:
            density, reach, below = burst
            return density * min(left, reach) + below * max(0, left - reach)
        usual = self.density()
        return None if usual is None else usual * left

    def older_half(self, slice_id: int, at: int) -> ImportSlice:
        """The slice split off below `at` (the range start is then raised to `at`): until its first page, it guesses
        this one's density (its last page's if that is less than half of what it saw before: a burst paged before is
        over), never a burst's but the density seen before it. Part of a burst may go on in it (below a point near
        the cursor, `split_point`); its first page then shows it, against that guess. Guessed over its range, the
        burst would make it look full, to be split at its middle and on down to the burst again."""
        if self.oldest_created is None:  # not paged yet: its own guess, passed on
            guess = self.inherited_density
        elif self._page_denser(BURST):  # the burst goes on in the kept half: below it, what was seen before it
            guess = self.reference_density()
        else:
            guess = self.density()
        return ImportSlice(self.connection_id, self.resource, self.run_id, slice_id, self.range_start, at - 1,
                           inherited_density=guess, inherited_span=self.paged_span())

    def lists_above_cursor(self, items: list[_Item]) -> bool:
        """Whether a page asked for after the cursor lists the cursor's object again, or one newer than its second:
        the request's `starting_after` (or `created[lte]`) was not followed, by Stripe or something between. Kept, the
        page would be published again at every request, and the slice never end where a second holds more than a
        page of objects (a bulk migration's)."""
        if self.last_object_id is None:
            return False
        top = self.oldest_created
        return any(item.cursor_id == self.last_object_id or (top is not None and item.created is not None
                                                            and item.created > top) for item in items)

    def keep(self, items: list[_Item], requested_start: int) -> list[_Item]:
        """The page's items this slice publishes: a split while the page was in flight (or being made into
        records) raised the start from `requested_start`, and what is now below it belongs to the slice split off
        (which pages it). An item without an integer created time is kept: the snapshot step refused it, and it
        is counted."""
        start = self.range_start
        return [item for item in items
                if not (item.created is not None and requested_start <= item.created < start)]


def initial_ranges(start: int, end: int, count: int) -> list[tuple[int, int]]:
    """Splits [start, end] into `count` contiguous ranges (fewer for a short window), oldest first."""
    count = max(1, min(count, end - start + 1))
    bounds = [start + (end - start + 1) * i // count for i in range(count + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(count)]


def split_point(piece: ImportSlice, min_span_s: int, min_objects_left: int) -> int | None:
    """Where to split what is left of a slice in two halves, or None if not worth it: too short a range, or
    fewer objects expected than fill a page in each half (every slice ends in a part-empty page). The halves are
    of equal range, or in a burst (`in_burst`) of equal objects expected: the point is then near the cursor, and
    the half split off holds what may be left of the burst below it and the sparser range below that.

    The slice keeps [point, …] (with its cursor, which is newer than the point), the new one gets
    [start, point − 1]: no second is in both or in neither; each has at least `min_span_s`.
    """
    start, end = piece.left()
    expected = piece.objects_left()
    if end - start < 2 * min_span_s or expected is None or expected < min_objects_left:
        return None
    burst = piece.burst()
    if burst is None:
        return start + (end - start) // 2
    density, reach, below = burst  # half of what is expected lies above the point: within the reach, or below it
    above = expected / 2
    seconds = above / density if density * reach >= above else reach + (above - density * reach) / below
    point = end - math.ceil(seconds)
    return max(start + min_span_s, min(point, end - min_span_s))


@dataclass(frozen=True, slots=True)
class Peers:
    """The other processes importing the same connection, as this one last saw them."""

    processes: int = 1  # this one included
    paging: int = 0  # slices the others page
    wants_more: bool = False  # one of them has room for more slices and finds none to claim or split
    # The slices of each resource the others hold (claimed, not done), as (resource, count), sorted: a resource whose
    # endpoint has a budget of its own pages what the others leave of that budget's count (`slices_per_endpoint`).
    paging_by_resource: tuple[tuple[str, int], ...] = ()
    # The objects they expect left per resource in those slices, as (resource, objects), sorted (infinite for a
    # resource whose first page is out): the account's requests are ranked by the import's work left, not one
    # process's (`with_work_left`).
    work_left: tuple[tuple[str, float], ...] = ()

    def paging_of(self, resource: str) -> int:
        """Slices of `resource` the others hold."""
        return next((count for name, count in self.paging_by_resource if name == resource), 0)

    def with_work_left(self, mine: Mapping[str, float]) -> dict[str, float]:
        """The import's objects left per resource: this process's (`mine`) and the others'."""
        total = dict(mine)
        for resource, objects in self.work_left:
            total[resource] = total.get(resource, 0.0) + objects
        return total


ALONE = Peers()


def slices_wanted(requests_per_second: float, page_s: float, most: int, peers: Peers = ALONE) -> int:
    """Slices one process pages at once, so that together the processes importing the account keep its budget
    busy (Little's law: in flight = rate × time per page, the time from sending a request to its checkpoint),
    and no more: each slice ends in a part-empty page. A process takes what the others leave of that count (one
    may be slow to take its share), and only its share while another wants more than it finds."""
    total = _in_flight(requests_per_second, page_s)
    share = math.ceil(total / max(1, peers.processes))
    return min(most, share if peers.wants_more else max(share, total - peers.paging))


def slices_per_endpoint(requests_per_second: float, page_s: float, peers: Peers, resource: str) -> int:
    """Slices of one resource one process splits up to when its endpoint has a budget of its own, below the
    account's (Stripe's 25/s per endpoint in live mode): what that budget keeps busy, less what the other processes
    importing the connection hold of it. More would only wait for the endpoint's budget, while a resource with more to
    list waits for a slice, and each slice ends in a part-empty page: on the import's long pole, every one of those
    is a request of its endpoint's 22/s.

    The count is Little's plus one, without the account's headroom: `page_s` is a moving average of the time a page
    takes but for its wait for the budget, so that count keeps the endpoint's budget busy (Little's law holds for the
    mean, whatever the spread), and a page late now and then is covered by the endpoint bucket's burst (3 live).
    Experiment runs at 600 ms, 3,000 customers (31.7k objects, 92 charge pages): charges in 22-23 slices and 100-101
    requests instead of 31-34 and 107-108, the import 0.69-0.71 of what the budgets allow instead of 0.67 (eight runs
    against three).

    Shared, no process is owed a share of a resource: it splits what the others leave, and claims what they let go.
    Each process once split up to a share of its own (half the count with the account's headroom, 1.6): each then
    chose its splits among its own few slices of the resource, often sparse ones, and the import made 50-80 slices of
    charges where one process makes 37 (each ending in a part-empty page): 385-390 requests where one process sends
    366, on a bulk migration's history at 300 ms. The import was 0.82-0.85 of the ceiling in six runs (median 0.83),
    0.83-0.90 (median 0.87) in seven with this and the ranking by the import's work left (`Peers.work_left`)."""
    total = _in_flight(requests_per_second, page_s, headroom=1.0)
    return max(0, total - peers.paging_of(resource))


def initial_slice_count(least: int, requests_per_second: float, endpoint_requests_per_second: float | None,
                        stripe_s: float | None, resources: int, pages_in_flight: int) -> int:
    """Slices each of `resources` starts as: what its endpoint's budget keeps busy over one of Stripe's round trips
    (`stripe_s`, as measured on this process's pages of any account), or where the account's budget is the tighter
    one an even share of what that keeps busy; at most the pages this import may have in flight over its resources,
    and at least `least` (also without a measure: a process's first import).

    A resource's density is unknown until its first page is back, so no slice is split before it: started as two,
    each resource had two requests in the first round trip, and the import's long pole (charges, bound by its
    endpoint's 22/s) lost most of a round trip. Which resource that is nobody knows yet, so each starts as its
    endpoint's count (more than the account serves in that round trip: the rest go out as its budget allows). Each
    slice ends in a part-empty page, and made blind (a split waits for two pages' worth expected) many are empty on
    a small history: a 5-customer tenant's import at 300 ms sends 41 requests and takes 0.8 s instead of 11 and 0.47
    s (within its own account's budget, once per import, as the gain is). On a large one the long pole's slices
    would have been split off anyway, and the other resources have requests to spare. Experiment runs, 3,000
    customers (31.7k objects) at 300 ms: 0.870 and 0.875 of the ceiling with a fixed eight each, 0.871 and 0.873
    with this count, 0.841-0.858 with an even share of the account's count (six each, four runs), 0.827-0.849 with
    two (four runs); at 600 ms 0.747 and 0.759 with a fixed fifteen, 0.751 and 0.759 with this count, 0.744 with
    eleven, 0.719 and 0.723 with two."""
    if stripe_s is None or resources < 1:
        return least
    if endpoint_requests_per_second is None:
        count = math.ceil(requests_per_second * stripe_s / resources)
    else:
        count = _in_flight(endpoint_requests_per_second, stripe_s, headroom=1.0)
    return max(least, min(count, pages_in_flight // resources))


def _in_flight(requests_per_second: float, page_s: float, headroom: float = HEADROOM) -> int:
    """Pages in flight that keep a budget busy (Little's law), with headroom."""
    return math.ceil(requests_per_second * page_s * headroom) + 1


class SlicePlanner:
    """The slices this process is paging: which one to split when a worker needs work and none is free."""

    def __init__(self, min_span_s: int, min_objects_left: int, last_pages_objects: int | None = None):
        self._active: dict[tuple[str, str, int], ImportSlice] = {}  # by (resource, run, slice id)
        self._min_span_s = min_span_s
        self._min_objects_left = min_objects_left
        # Once no slice that may be split is expected to hold `min_objects_left` (the import's end, or a smaller
        # resource's while the largest has all its endpoint's slices), one expected to hold more than a page (this
        # many) is still split: its page in flight and the older half's first page then go at once, where two pages
        # one after the other take two round trips, and the import ends with its longest slice. The requests are
        # mostly as many; part of the page in flight is read again by the older half.
        self._last_pages_objects = last_pages_objects

    def add(self, piece: ImportSlice) -> None:
        """A worker of this process pages the slice now."""
        self._active[piece.key] = piece

    def release(self, piece: ImportSlice) -> None:
        """The worker is done with the slice (finished, lost, or stopped). Only that worker's: once let go in the
        database, another worker here may have claimed the same slice again, and it pages it now."""
        if self._active.get(piece.key) is piece:
            del self._active[piece.key]

    def active_count(self) -> int:
        """How many slices are being paged here."""
        return len(self._active)

    def paging(self) -> list[tuple[str, str, int]]:
        """The slices being paged here, as (resource, run id, slice id)."""
        return list(self._active)

    def work_left(self) -> dict[str, float]:
        """Objects expected left per resource, in the slices paged here. A slice not yet paged counts at its
        resource's density in the others (their objects over their paged seconds), and a resource known by none as
        infinite: its first page is out, and it may be the largest."""
        paged: dict[str, tuple[int, int]] = {}
        for piece in self._active.values():
            if piece.oldest_created is not None:
                objects, seconds = paged.get(piece.resource, (0, 0))
                paged[piece.resource] = (objects + piece.objects_published, seconds + piece.paged_span())
        left: dict[str, float] = {}
        for piece in self._active.values():
            expected = piece.objects_left()
            if expected is None and piece.resource in paged:
                objects, seconds = paged[piece.resource]
                expected = objects / seconds * piece.left_span()
            left[piece.resource] = left.get(piece.resource, 0.0) + (math.inf if expected is None else expected)
        return left

    def split_point(self, piece: ImportSlice) -> int | None:
        """Where to split one of the slices, if it is worth it."""
        return split_point(piece, self._min_span_s, self._min_objects_left)

    def to_split(self, wanted: int, per_resource: Callable[[str], int] | None = None) -> tuple[ImportSlice, int] | None:
        """The slice to split and where, if any is worth it: the one with the most objects expected to be left that
        may be split, of a resource with fewer than `per_resource` slices (what its endpoint's budget keeps busy)
        and, while a resource's first page is out (nothing known of its density), fewer than half an even share of
        the `wanted` slices. A slice split off (or given to another process) before its first page does not count:
        its resource is known by its other slices.

        Without that share, the resource whose first page came back first is split to every slice wanted, and the
        one with the most to list (whose page came last) waits for those slices to end: at the endpoint's rate,
        the long pole of the whole import. Half, not a whole share: the first to answer is as likely a small
        resource, whose slices (its requests served after the largest one's, `AccountBudget.rank_endpoints`) would
        hold the count the largest one needs until they end (a whole share held charges at 17 of 22 requests/s for
        the first 4 s of a 128,000-object import at 600 ms; half: 22/s from the first second)."""
        counts = Counter(piece.resource for piece in self._active.values())
        most = {resource: wanted if per_resource is None else per_resource(resource) for resource in counts}
        known = {piece.resource for piece in self._active.values()  # paged, or split off a paged slice (even one
                 if piece.oldest_created is not None or piece.inherited_density is not None}  # too wide for its guess)
        if known != set(counts):  # a resource whose first page is out: nothing known of it yet
            most = {resource: min(most[resource], math.ceil(wanted / (2 * len(counts)))) for resource in counts}
        candidates = sorted((piece for piece in self._active.values() if counts[piece.resource] < most[piece.resource]),
                            key=lambda piece: piece.objects_left() or 0.0, reverse=True)
        thresholds = [self._min_objects_left]
        if self._last_pages_objects is not None:  # none holds two pages: the tail (see `__init__`)
            thresholds.append(self._last_pages_objects)
        for objects in thresholds:
            for piece in candidates:  # the one with the most left may not be worth it (too short a range)
                point = split_point(piece, self._min_span_s, objects)
                if point is not None:
                    return piece, point
        return None
