"""Time slices of an import (pure): every second of the window belongs to exactly one slice whatever the
splits, a split leaves the cursor with the newer half, and only a slice worth it is split."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestor.sources.listed_pages import ListedObject
from ingestor.sources.slices import (
    ImportSlice,
    Peers,
    SlicePlanner,
    initial_ranges,
    initial_slice_count,
    slices_per_endpoint,
    slices_wanted,
    split_point,
)


def _slice(start: int, end: int, oldest: int | None = None, published: int = 0, slice_id: int = 0,
           resource: str = "charges") -> ImportSlice:
    return ImportSlice("conn", resource, "run", slice_id, start, end, "ch_x" if oldest else None, oldest, published)


@given(st.integers(0, 10**9), st.integers(0, 10**8), st.integers(1, 300))
def test_initial_ranges_cover_the_window_once(start: int, length: int, count: int) -> None:
    ranges = initial_ranges(start, start + length, count)
    assert ranges[0][0] == start and ranges[-1][1] == start + length
    assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous, no second twice
    assert all(lo <= hi for lo, hi in ranges) and len(ranges) == min(count, length + 1)


@given(st.lists(st.tuples(st.integers(0, 50), st.floats(0.0, 0.95), st.integers(1, 100)), min_size=1, max_size=60),
       st.sampled_from([1, 60]))
def test_any_sequence_of_splits_keeps_a_partition_of_the_window(steps: list[tuple[int, float, int]],
                                                                 min_span_s: int) -> None:
    """Each step pages part of a slice (a page of `count` objects at its oldest: within the cursor's second, a burst)
    and splits what it has left."""
    start, end = 1_700_000_000, 1_700_000_000 + 365 * 86400
    slices = [_slice(lo, hi, slice_id=i) for i, (lo, hi) in enumerate(initial_ranges(start, end, 4))]
    for which, share, count in steps:
        piece = slices[which % len(slices)]
        lo, hi = piece.left()
        piece.read_page([hi - int((hi - lo) * share)] * count)
        piece.counted(count)
        point = split_point(piece, min_span_s, 200)
        if point is None:
            continue
        assert piece.oldest_created is not None
        assert piece.range_start + min_span_s <= point <= piece.oldest_created - min_span_s  # the cursor stays
        slices.append(piece.older_half(len(slices), point))  # inside the newer half, each half min_span_s or more
        piece.range_start = point
    covered = sorted((s.range_start, s.range_end) for s in slices)
    assert covered[0][0] == start and covered[-1][1] == end
    assert all(a[1] + 1 == b[0] for a, b in zip(covered, covered[1:]))


def test_a_slice_is_split_only_when_each_half_should_fill_a_page() -> None:
    day = 86400
    fresh = _slice(0, 30 * day)
    assert split_point(fresh, 60, 200) is None  # nothing paged yet: its density is unknown
    sparse = _slice(0, 30 * day, oldest=29 * day, published=5)  # 5 objects a day: ~145 left
    assert split_point(sparse, 60, 200) is None
    dense = _slice(0, 30 * day, oldest=29 * day, published=100)  # 100 a day: ~2,900 left
    assert split_point(dense, 60, 200) == 29 * day // 2
    short = _slice(0, 100, oldest=100, published=10_000)
    assert split_point(short, 60, 200) is None  # under two minimum spans


def test_a_page_in_flight_during_a_split_keeps_only_what_is_still_the_slices() -> None:
    piece = _slice(1000, 2000, oldest=1800, published=100)
    requested_start = piece.range_start
    piece.range_start = 1400  # split while the page was in flight: [1000, 1399] is the new slice's

    def page(*created: int | None) -> list[ListedObject]:
        return [ListedObject(c, f"ch_{i}", (b"key", b"value"), None) for i, c in enumerate(created)]

    assert [o.created for o in piece.keep(page(1700, 1400, 1399, 1000), requested_start)] == [1700, 1400]
    # An object outside what was asked (stripe-mock ignores filters) is not another slice's: kept.
    assert [o.created for o in piece.keep(page(5), requested_start)] == [5]
    # Nor is one without an integer created time (refused by the snapshot step, and counted): kept.
    assert piece.keep(page(None, None), requested_start) == page(None, None)


def test_the_work_left_per_resource_is_what_its_slices_expect_and_unknown_counts_as_the_most() -> None:
    """The account's budget serves the resource with the most left first (`AccountBudget.rank_endpoints`): one whose
    first page is still out may be the largest."""
    planner = SlicePlanner(60, 200)
    planner.add(_slice(0, 10_000, oldest=9_000, published=100, slice_id=1))  # 0.1/s over 9,000 s: 900 left
    planner.add(_slice(20_000, 30_000, oldest=29_000, published=200, slice_id=2))  # 1,800 left
    planner.add(_slice(0, 10_000, slice_id=3, resource="subscriptions"))  # first page out, nothing else known
    planner.add(_slice(0, 10_000, slice_id=4, resource="customers"))  # not yet paged (given by another process)
    planner.add(_slice(20_000, 30_000, oldest=29_000, published=100, slice_id=5, resource="customers"))
    left = planner.work_left()  # customers' unpaged slice at their density: 0.1/s over 10,000 s
    assert left == {"charges": 2_700, "customers": 1_000 + 900, "subscriptions": float("inf")}


def test_the_planner_splits_the_slice_with_most_left() -> None:
    planner = SlicePlanner(60, 200)
    assert planner.to_split(96) is None and not planner.active_count()
    small = _slice(0, 10_000, oldest=9_000, published=100, slice_id=1)  # ~900 left
    big = _slice(20_000, 90_000, oldest=89_000, published=100, slice_id=2)  # ~6,900 left
    planner.add(small)
    planner.add(big)
    victim, point = planner.to_split(96)  # type: ignore[misc]
    assert victim is big and 20_000 < point < 89_000
    planner.release(big)
    assert planner.to_split(96)[0] is small  # type: ignore[index]


def test_a_worker_letting_a_slice_go_does_not_forget_it_for_the_worker_that_took_it_again() -> None:
    """Once let go in the database, another worker of the process may claim the slice again (a fresh copy) before the
    first forgets it: the planner must still count the slice as paged here, or a lapsed lease of the new holder's
    is taken a third time. A slice of a newer run with the same id is another slice."""
    planner = SlicePlanner(60, 200)
    first = _slice(0, 10_000, slice_id=1)
    planner.add(first)
    again = _slice(0, 10_000, slice_id=1)
    planner.add(again)
    planner.release(first)
    assert planner.paging() == [again.key] and planner.active_count() == 1
    newer_run = dataclasses.replace(again, run_id="run-2")
    planner.add(newer_run)
    assert sorted(planner.paging()) == sorted([again.key, newer_run.key])
    planner.release(again)
    assert planner.paging() == [newer_run.key]


def test_while_a_first_page_is_out_the_resource_that_answered_first_takes_only_half_an_even_share() -> None:
    """Else it takes every slice wanted, and the resource with the most to list waits for them to end. Not a whole
    even share: a small resource split to one keeps slices the largest one needs once it has answered (they end only
    with their pages), and its requests wait for the account's budget behind the largest one's anyway."""
    planner = SlicePlanner(60, 200)
    charges = _slice(0, 90_000, slice_id=1)  # its first page is out: nothing known of it yet
    planner.add(charges)
    subscriptions = [_slice(0, 90_000, oldest=89_000, published=100, slice_id=i, resource="subscriptions")
                     for i in range(2, 6)]
    for piece in subscriptions:
        planner.add(piece)
    assert planner.to_split(16) is None  # 4 of the 16 wanted: subscriptions have half of an even share
    assert planner.to_split(20)[0] in subscriptions  # type: ignore[index]  # 4 < 5, half their share of 20
    charges.oldest_created, charges.objects_published = 89_900, 100  # charges answered: ten times as dense
    assert planner.to_split(16)[0] is charges  # type: ignore[index]  # the one with most left, as before


def test_a_slice_not_yet_paged_of_a_resource_known_by_its_other_slices_holds_no_one_to_half_a_share() -> None:
    """A slice given to this process by another (or claimed before its first page) has no density of its own; its
    resource is known by its other slices, so it is no first page out that the others must leave room for."""
    planner = SlicePlanner(60, 200)
    planner.add(_slice(0, 90_000, oldest=89_000, published=100, slice_id=1))  # charges: known
    planner.add(_slice(0, 40_000, slice_id=2))  # charges: given, not yet paged
    subscriptions = [_slice(0, 90_000, oldest=80_000, published=2_000, slice_id=i, resource="subscriptions")
                     for i in range(3, 7)]  # each 16,000 left, charges' known one 8,900
    for piece in subscriptions:
        planner.add(piece)
    assert planner.to_split(16)[0] in subscriptions  # type: ignore[index]  # 4 is half an even share: not applied


def test_once_no_slice_holds_two_pages_one_holding_more_than_a_page_is_split_so_its_last_pages_go_at_once() -> None:
    """The import ends with its longest slice: two pages left, one after the other, are two round trips (1.2 s at
    600 ms); split, they are one, for one more part-empty page. While a slice holds two pages, that one is split as
    before, and one holding a page or less never is."""
    def planner(*pieces: ImportSlice, last_pages_objects: int | None = 101) -> SlicePlanner:
        made = SlicePlanner(60, 200, last_pages_objects)
        for piece in pieces:
            made.add(piece)
        return made

    tail = _slice(0, 20_000, oldest=15_000, published=50, slice_id=1)  # 0.01/s over 15,000 s: 150 left
    short = _slice(30_000, 40_000, oldest=38_000, published=20, slice_id=2)  # 0.01/s over 8,000 s: 80 left
    assert planner(tail, short).to_split(96) == (tail, 7_500)  # halves of what is left
    assert planner(tail, short, last_pages_objects=None).to_split(96) is None  # the rule for the rest of the import
    big = _slice(40_001, 90_000, oldest=80_000, published=300, slice_id=3)  # 0.03/s over 39,999 s: 1,200 left
    assert planner(tail, short, big).to_split(96)[0] is big  # type: ignore[index]
    assert planner(short).to_split(96) is None  # its last page alone: one request, one round trip
    at_a_page = _slice(0, 20_000, oldest=10_000, published=100, slice_id=4)  # 0.01/s over 10,000 s: 100 left
    assert planner(at_a_page).to_split(96) is None and planner(at_a_page, last_pages_objects=100).to_split(96)
    narrow = _slice(0, 200, oldest=100, published=10_000, slice_id=5)  # 100/s over 100 s: 10,000 left, but
    assert planner(narrow).to_split(96) is None  # 100 s is less than two slices of 60 s
    tail.last_page_read = True  # its last page is in hand (being published): the older half would be empty
    assert planner(tail, short).to_split(96) is None


def test_a_resource_with_the_slices_its_endpoints_budget_keeps_busy_is_not_split_further() -> None:
    planner = SlicePlanner(60, 200)
    charges = [_slice(0, 90_000, oldest=89_000, published=1000, slice_id=i) for i in range(3)]  # ~89,000 left each
    invoices = _slice(0, 90_000, oldest=89_000, published=100, slice_id=9, resource="invoices")  # ~8,900 left
    for piece in [*charges, invoices]:
        planner.add(piece)
    assert planner.to_split(96)[0] in charges  # type: ignore[index]
    assert planner.to_split(96, per_resource=lambda resource: 3)[0] is invoices  # type: ignore[index]
    assert planner.to_split(96, per_resource=lambda resource: 1) is None


def test_a_resource_pages_what_its_endpoints_budget_keeps_busy() -> None:
    # Alone, 22/s × 0.6 s + 1: more would each end in a part-empty page, a request of the endpoint's budget.
    assert slices_per_endpoint(22, 0.6, Peers(), "charges") == 15
    assert slices_per_endpoint(22, 0.001, Peers(), "charges") == 2  # no latency: one, and one more


def test_processes_sharing_an_import_split_what_the_others_leave_of_an_endpoints_count() -> None:
    """No process is owed a share of a resource: each split up to its own half once, and chose its splits among its
    own few slices of it (sparse ones too), 50-80 slices of charges where one process makes 37."""
    other = Peers(processes=2, paging=20, paging_by_resource=(("charges", 11), ("invoices", 3)))
    assert slices_per_endpoint(22, 0.6, other, "charges") == 4  # 15 in all
    assert slices_per_endpoint(22, 0.6, other, "invoices") == 12
    assert slices_per_endpoint(22, 0.6, other, "customers") == 15  # none of it held elsewhere
    holds_all = Peers(processes=2, paging=15, paging_by_resource=(("charges", 15),))
    assert slices_per_endpoint(22, 0.6, holds_all, "charges") == 0  # split none: it may still claim one let go

    planner = SlicePlanner(60, 200)
    charges = _slice(0, 90_000, oldest=89_000, published=1000)  # ~89,000 left
    invoices = _slice(0, 90_000, oldest=89_000, published=100, slice_id=9, resource="invoices")  # ~8,900 left
    planner.add(charges)
    planner.add(invoices)
    split_with_other = planner.to_split(96, lambda resource: slices_per_endpoint(22, 0.6, other, resource))
    split_with_all_held = planner.to_split(96, lambda resource: slices_per_endpoint(22, 0.6, holds_all, resource))
    assert split_with_other is not None and split_with_other[0] is charges
    assert split_with_all_held is not None and split_with_all_held[0] is invoices


def test_the_imports_work_left_is_every_process_s() -> None:
    """What the account's requests are ranked by (`AccountBudget.rank_endpoints`): a process holding a few of the
    largest resource's slices ranked them by its own few, below its other resources, and they waited 100-500 ms for
    the account's tokens while the other process ranked them first."""
    others = Peers(processes=2, work_left=(("charges", 30_000.0), ("invoices", 1_000.0)))
    assert others.with_work_left({"charges": 500.0, "invoices": 4_000.0, "customers": math.inf}) == {
        "charges": 30_500.0, "invoices": 5_000.0, "customers": math.inf}
    assert Peers().with_work_left({"charges": 500.0}) == {"charges": 500.0}


def test_as_many_slices_as_fill_the_budget_at_the_pages_latency() -> None:
    assert slices_wanted(90, 0.6, 96) == 88  # 90/s × 0.6 s × 1.6 + 1: live at 600 ms
    assert slices_wanted(20, 0.3, 96) == 11  # test at 300 ms
    assert slices_wanted(20, 0.001, 96) == 2  # no latency: hardly any
    assert slices_wanted(90, 5.0, 96) == 96  # never more than the cap


def test_processes_on_one_account_share_the_slices_its_budget_can_use() -> None:
    # 90/s at 600 ms: 88 slices in all.
    assert slices_wanted(90, 0.6, 96, Peers(processes=2, paging=44)) == 44  # each its half
    assert slices_wanted(90, 0.6, 96, Peers(processes=2, paging=10)) == 78  # what a slow one leaves is taken
    assert slices_wanted(90, 0.6, 96, Peers(processes=2, paging=80)) == 44  # a share is never less than half
    assert slices_wanted(90, 0.6, 96, Peers(processes=2, paging=0, wants_more=True)) == 44  # one wants more: half
    assert slices_wanted(90, 0.6, 96, Peers(processes=3, paging=4, wants_more=True)) == 30
    assert slices_wanted(20, 0.001, 96, Peers(processes=4, paging=9, wants_more=True)) == 1  # never none
    assert slices_wanted(90, 5.0, 96, Peers(processes=2, paging=0)) == 96  # nor more than the cap


def test_a_slice_split_off_a_paged_one_may_be_split_again_before_its_first_page() -> None:
    """The ramp to a full budget takes one page's latency, not one per doubling: the half split off inherits
    its parent's density; a slice claimed from the database (nothing known of it) waits for its first page."""
    day = 86400
    parent = _slice(0, 100 * day, oldest=90 * day, published=1000)  # 100 objects a day over the last 10 days
    point = split_point(parent, 60, 200)
    assert point is not None
    half = parent.older_half(1, point)
    assert half.objects_left() == 100 / day * (point - 1)
    assert split_point(half, 60, 200) is not None
    assert split_point(_slice(0, point - 1), 60, 200) is None  # from the database: no estimate yet
    sparse = ImportSlice("conn", "charges", "run", 2, 0, day, inherited_density=100 / (30 * day), inherited_span=day)
    assert split_point(sparse, 60, 200) is None  # ~3 objects expected: not worth a second part-empty page


def test_a_pages_density_is_its_objects_over_the_seconds_from_the_cursor_above_it() -> None:
    piece = _slice(0, 1_000)
    piece.read_page([999, 995, 990])  # its first page: from the range's end
    assert piece.oldest_created == 990 and piece.page_density == 3 / 10
    piece.read_page([500] * 100)  # 100 objects created in one second, 490 s below the cursor
    assert piece.oldest_created == 500 and piece.page_density == 100 / 490
    piece.read_page([500] * 100)  # the same second again: one second, not none
    assert piece.page_density == 100.0
    piece.read_page([])  # nothing kept (a split raised the start above the page)
    assert piece.oldest_created == 500 and piece.page_density == 100.0


def test_a_burst_below_the_cursor_shows_in_the_last_pages_density_and_is_split_down_to_seconds() -> None:
    """A bulk migration creates thousands of customers within a minute. A slice that paged months of one or two a day
    and then a page of the burst has an average that says a page or so is left; its last page says the burst goes on,
    and a range of seconds is still split (Stripe's created filter is in seconds; at 60 s, the old minimum, 10,000
    customers created within a minute were 100 pages one after the other)."""
    day = 86400
    piece = _slice(0, 200 * day, oldest=100 * day, published=150)  # 1.5 a day over the top 100 days
    assert split_point(piece, 1, 200) is None  # 150 left by the average: not worth a second part-empty page
    piece.read_page([100 * day - 2] * 50 + [100 * day - 1] * 50)  # 100 objects within its next 2 s: 50/s
    assert piece.density() == 50.0
    expected = piece.objects_left()
    assert expected == 50.0 * 200 + 150 / (100 * day) * (100 * day - 2 - 200)  # the burst for 100 pages' seconds, then
    # the density before it
    point = split_point(piece, 1, 200)
    assert point == 100 * day - 2 - math.ceil(expected / 2 / 50)  # half of what is expected is above it, in the burst
    half = piece.older_half(1, point)
    assert half.density() == 150 / (100 * day)  # the density before the burst: the burst goes on in the kept one
    burst = _slice(1_000, 1_020, oldest=1_019, published=100)  # its first page: 100 objects in its top second
    assert split_point(burst, 1, 200) == 1_009 and split_point(burst, 60, 200) is None


def test_a_burst_is_split_near_the_cursor_not_at_the_middle_of_the_months_left() -> None:
    """Extrapolated over the month left below it, a burst (a bulk migration's monthly renewals, 100 pages within a
    minute) made its slice split at the middle of that month, then of the half kept, and so on down to the burst:
    each half split off on the way held sparse weeks and ended in a part-empty page (14 % of charges' requests in the
    benchmark's migration). Expected only as far as it has been seen (100 pages' seconds), the burst is split within
    itself at once: one half split off reaches below it, the rest each hold part of it."""
    day = 86400
    piece = _slice(0, 30 * day, oldest=20 * day, published=15)  # 1.5 a day over the top 10 days
    piece.read_page([20 * day - 1] * 100)  # then 100 objects within a second
    planner = SlicePlanner(1, 200, 101)
    planner.add(piece)
    halves: list[ImportSlice] = []
    while len(halves) < 8 and (split := planner.to_split(96)) is not None:  # eight workers free
        parent, point = split
        halves.append(parent.older_half(len(halves) + 1, point))
        parent.range_start = point
        planner.add(halves[-1])
    reach = 20 * day - 1 - 100  # 100 pages' seconds below the cursor
    assert [half.range_start < reach for half in halves] == [True] + [False] * 6  # before: all, at 10 days, 5, … 2 h
    assert piece.left_span() <= 1 and sum(half.range_end - half.range_start + 1 for half in halves[1:]) <= 100


def test_a_half_whose_top_is_in_a_burst_sees_its_first_page_as_one() -> None:
    """A half split off a burst guesses the density around it; its first page, 100 objects within a second, is its
    whole average, so against that it is no burst: it is compared with what it inherited, and expected only as far
    as a burst reaches (before: 100/s over the weeks of its range, split at their middle and on down)."""
    day = 86400
    half = ImportSlice("conn", "charges", "run", 1, 0, 10 * day, inherited_density=100 / day, inherited_span=day)
    half.read_page([10 * day] * 100)
    assert half.in_burst() and half.objects_left() == 100.0 * 100 + 100 / day * (10 * day - 100)
    assert split_point(half, 1, 200) == 10 * day - math.ceil(half.objects_left() / 2 / 100)  # type: ignore[operator]
    assert half.older_half(2, 10 * day - 60).inherited_density == 100 / day  # below: the density around the burst
    busier = ImportSlice("conn", "charges", "run", 3, 0, 10 * day, inherited_density=100 / day, inherited_span=day)
    busier.read_page(list(range(10 * day, 10 * day - 100 * 288, -288)))  # 300 a day: a busier season, not a burst
    assert not busier.in_burst() and busier.objects_left() == (busier.page_density or 0) * busier.left_span()  # on
    assert split_point(busier, 1, 200) == (10 * day - 99 * 288) // 2
    steady = ImportSlice("conn", "charges", "run", 3, 0, 10 * day, inherited_density=100 / day, inherited_span=day)
    steady.read_page(list(range(10 * day, 10 * day - 100 * 864, -864)))  # 100 a day, as inherited
    assert not steady.in_burst() and split_point(steady, 1, 200) == (10 * day - 99 * 864) // 2  # the middle


def test_pages_whose_objects_were_refused_leave_no_negative_density() -> None:
    """A page's objects the import cannot read are counted apart, not published: what a slice saw before its last
    page is what it published, never less than nothing (a negative guess passed to every half split off)."""
    day = 86400
    piece = _slice(0, 30 * day)
    piece.read_page([30 * day - 1] * 3)
    piece.counted(3)
    piece.read_page(list(range(29 * day, 29 * day - 100 * 60, -60)))  # a page of 100: 5 of them refused
    piece.counted(95)
    piece.read_page(list(range(28 * day, 28 * day - 100 * 60, -60)))  # a page of 100: every one refused
    piece.counted(0)
    assert piece.reference_density() == 98 / (day + 99 * 60)  # what it published above that page, over its seconds
    left = piece.objects_left()
    guess = piece.older_half(1, 10 * day).inherited_density
    assert left is not None and left > 0 and guess is not None and guess == piece.density() and guess > 0


def test_once_a_burst_is_paged_the_sparse_page_below_it_is_what_the_slice_and_its_halves_expect() -> None:
    """The average of a slice that paged a burst counts the burst: guessed for the months below it, every half split
    off would look full. A page as sparse as the history around the burst says it is over."""
    day = 86400
    piece = _slice(0, 180 * day, oldest=179 * day, published=10_100)  # a day, with 10,000 created within a minute
    piece.read_page([178 * day])  # its next page: one object over a day
    assert piece.density() == 1 / day  # not 10,101 a day
    half = piece.older_half(1, 89 * day)
    assert half.density() == 1 / day
    assert split_point(half, 1, 200) is None  # 89 days at one a day: not worth a second part-empty page


def test_the_page_in_hand_counts_in_the_average_before_it_is_published() -> None:
    """Between reading a page (its oldest object moves the cursor) and counting it as published, the average would
    spread the pages before it over its seconds too: at the second page, half the true density, and that page's own
    density twice it, a burst by noise alone."""
    piece = _slice(0, 100_000)
    piece.read_page(list(range(99_999, 99_899, -1)))  # 100 objects, one a second
    piece.counted(100)
    piece.read_page(list(range(99_899, 99_799, -1)))
    assert piece.average_density() == piece.page_density == 1.0 and piece.density() == 1.0
    piece.counted(100)
    assert piece.objects_published == 200 and piece.average_density() == 1.0


def test_a_density_seen_over_a_second_is_not_guessed_for_the_months_below_it() -> None:
    """A slice whose first page is a burst at its top (100 objects within a second, months of range below) splits
    what it has left (its own pages say so), but the halves split off it guess nothing until their first page:
    guessed over months, 100/s made each look full, to be split again before any of them paged (in the importer's
    test, dozens of empty slices of a second or two at the window's start held all the endpoint's slices while the
    burst was paged one page after another)."""
    day = 86400
    top = _slice(0, 180 * day, oldest=180 * day - 1, published=100)
    point = split_point(top, 1, 200)
    assert point is not None
    half = top.older_half(1, point)
    assert half.inherited_span == 1 and half.density() is None and split_point(half, 1, 200) is None
    smooth = _slice(0, 50 * day, oldest=49 * day, published=100)  # the ramp: a page over a fiftieth of the range
    half = smooth.older_half(1, split_point(smooth, 1, 200))  # type: ignore[arg-type]
    assert half.inherited_span == day and split_point(half, 1, 200) is not None  # guessed 24.5 days below it
    quarter = half.older_half(2, split_point(half, 1, 200))  # type: ignore[arg-type]
    assert quarter.inherited_span == day and quarter.density() == half.density() == 100 / day


def test_a_slice_not_worth_splitting_leaves_the_split_to_the_next_one_with_the_most_left() -> None:
    """The one with the most objects expected left may have too short a range (a burst's last seconds): before, no
    slice was split then, and a wider one waited for its pages one after the other. The tail rule the same."""
    def planner(*pieces: ImportSlice) -> SlicePlanner:
        made = SlicePlanner(60, 200, 101)
        for piece in pieces:
            made.add(piece)
        return made

    narrow = _slice(0, 100, oldest=50, published=10_000, slice_id=1)  # 200/s: 10,000 left, but 50 s
    wide = _slice(1_000, 101_000, oldest=91_000, published=100, slice_id=2)  # 0.01/s × 90,000 s: 900 left
    assert planner(narrow, wide).to_split(96) == (wide, 46_000)
    tail = _slice(1_000, 21_000, oldest=16_000, published=50, slice_id=3)  # 0.01/s × 15,000 s: 150 left
    assert planner(narrow, tail).to_split(96) == (tail, 8_500)  # more than a page: its last pages at once
    assert planner(narrow, wide, tail).to_split(96) == (wide, 46_000)  # two pages before the tail rule


def test_while_pages_wait_for_the_cpu_no_slice_is_added_and_the_count_comes_back_after() -> None:
    """The page pool at work nearly all the time (or a late event loop) means this machine's CPU is what pages wait
    for: more slices would only queue there, each ending in one more part-empty page (measured at 300 ms: 96
    slices, a second's wait per page for a pool process)."""
    from ingestor.sources.import_pass import ImportPass  # the pass's decisions; its I/O is the importer's

    cpu_bound = [False]
    run = ImportPass(SlicePlanner(60, 200), deadline=float("inf"), requests_per_second=90.0, most=96,
                worker_stop=asyncio.Event(), cpu_bound=lambda: cpu_bound[0], page_s=0.5)
    for n in range(3):
        run.planner.add(_slice(0, 10_000, slice_id=n))
    budget_keeps_busy = slices_wanted(90.0, 0.5, 96)
    assert run.wanted() == budget_keeps_busy and run.has_room()
    cpu_bound[0] = True
    assert run.wanted() == 3 and not run.has_room()
    run.planner.release(_slice(0, 10_000, slice_id=2))
    assert run.wanted() == 3  # held where it was when the CPU became the bottleneck, not at what is left
    cpu_bound[0] = False
    assert run.wanted() == budget_keeps_busy and run.has_room()


def test_a_pass_whose_last_slice_ended_asks_at_once_whether_the_import_is_still_paged_elsewhere(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the last slice a process pages ends, it asks again at once: by a claim, or, while it leaves free slices to
    another process that wants more, by a look at whether any other process still pages some of the import. Its last
    answer may be from while one did: taken for still shared, its pass waited (up to `SHARE_WAIT_S` where it left free
    slices to the other) before it ended an import it had paged the last page of. It looks again each second while
    one does, not in a loop, and a process whose claims found nothing yet does not count as wanting more (whatever
    the monotonic clock's origin)."""
    from ingestor.sources import import_pass
    from ingestor.sources.import_pass import ImportPass

    now = [1_000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    run = ImportPass(SlicePlanner(60, 200), deadline=math.inf, requests_per_second=90.0, most=96,
                worker_stop=asyncio.Event(), cpu_bound=lambda: False, page_s=0.5)
    assert not run.wants_more() and run.claim_worth_trying()  # no claim found nothing yet
    last = _slice(0, 10_000, slice_id=1)
    run.planner.add(last)
    run.found_nothing_to_claim(paged_elsewhere=True)  # an idle worker's claim, while another process paged
    run.refreshed(Peers(processes=2, paging=1, wants_more=True))
    now[0] += 2 * import_pass.CLAIM_AGAIN_S  # this process's claim is not recent: it leaves free slices to the other
    assert not run.claims_free_slices() and not run.looks_again()  # it pages a slice: nothing to ask
    run.planner.release(last)
    run.ran_out()
    assert run.looks_again() and not run.claim_worth_trying()  # asked now, not at SHARE_WAIT_S's end
    run.looked(paged_elsewhere=True)  # the other still pages: asked again a second later, not in a loop
    assert not run.looks_again()
    now[0] += import_pass.CLAIM_AGAIN_S
    assert run.looks_again()
    run.looked(paged_elsewhere=False)
    assert not run.looks_again() and not run.waits_for_share()  # nothing left anywhere: the pass ends
    run.refreshed(Peers(processes=2))  # nobody wants more: the last slice's end makes a claim at once
    run.found_nothing_to_claim(paged_elsewhere=True)
    run.planner.add(last)
    run.planner.release(last)
    run.ran_out()
    assert run.claim_worth_trying()


async def test_each_page_ranks_the_accounts_queue_by_the_work_each_resource_has_left() -> None:
    """The pass tells the account's budget, as its slices page, which endpoint has the most left: those requests
    take the account's tokens first while pages queue for them (`AccountBudget.rank_endpoints`)."""
    from ingestor.sources.import_pass import ImportPass
    from ingestor.stripe_api.request_budget import AccountBudget, LocalBucket, Rate

    budget = AccountBudget(LocalBucket(Rate(90.0, 100.0)), lambda endpoint: None)
    run = ImportPass(SlicePlanner(60, 200), deadline=float("inf"), requests_per_second=90.0, most=96,
                worker_stop=asyncio.Event(), cpu_bound=lambda: False, page_s=0.5, budget=budget)
    charges = _slice(0, 10_000, oldest=9_000, published=100, slice_id=1)  # 900 left
    customers = _slice(0, 10_000, oldest=9_000, published=1_000, slice_id=2, resource="customers")  # 9,000 left
    run.planner.add(charges)
    run.planner.add(customers)
    await run.changed()
    assert budget.rank("GET /v1/customers") == -9_000 and budget.rank("GET /v1/charges") == -900
    customers.oldest_created, customers.objects_published = 100, 9_900  # nearly done: charges go first now
    await run.changed()
    assert budget.rank("GET /v1/customers") > budget.rank("GET /v1/charges")
    # Another process imports the same connection and holds most of the charges: ranked by this process's few, they
    # waited 100-500 ms a time behind its customers for the account's tokens (the other process ranked them first).
    run.refreshed(Peers(processes=2, work_left=(("charges", 20_000.0),)))
    await run.changed()
    assert budget.rank("GET /v1/charges") == -20_900 < budget.rank("GET /v1/customers")



def test_a_new_import_starts_as_what_the_budget_serves_in_one_of_stripes_round_trips() -> None:
    """On the live budget (90/s, 22/s per endpoint) each resource starts as its endpoint's count at the measured round
    trip: 22/s × 0.3 s + 1, 8 (whichever is the long pole fills its endpoint from the first round trip); at 600 ms 15.
    On the test budget (20/s, no endpoint budget below it) an even share of the account's count. Without a measure,
    at a latency where one request each fills the round trip, or while the worker's pages in flight are shared by
    many imports, the setting's count."""
    def count(stripe_s: float | None, resources: int = 5, pages: int = 96, endpoint: float | None = 22.0) -> int:
        return initial_slice_count(2, 90.0, endpoint, stripe_s, resources, pages)

    assert count(0.3) == 8 and count(0.6) == 15
    assert count(0.6, endpoint=None) == 11  # 90/s × 0.6 s over five
    assert count(None) == 2 and count(0.02) == 2
    assert count(0.6, pages=128 // 16) == 2  # sixteen imports share the worker's 128 pages in flight
    assert count(0.6, pages=50) == 10  # this import's share, over its five resources
    assert initial_slice_count(2, 20.0, None, 0.6, 5, 96) == 3  # the test budget


def test_a_page_that_lists_the_cursor_again_or_anything_above_it_is_told() -> None:
    """After its cursor (`ch_x`, the oldest object published, at second 500), a page may hold only older objects, or
    others of the cursor's second listed after it; the cursor itself again, or a newer second, means the cursor was
    not followed (the same page would be published at every request)."""
    def item(created: int, object_id: str) -> ListedObject:
        return ListedObject(created, object_id, None, None)

    paged = _slice(0, 1000, oldest=500, published=100)
    assert not paged.lists_above_cursor([item(500, "ch_same_second"), item(499, "ch_older")])
    assert paged.lists_above_cursor([item(500, "ch_x"), item(499, "ch_older")])
    assert paged.lists_above_cursor([item(501, "ch_newer")])
    assert not _slice(0, 1000).lists_above_cursor([item(900, "ch_x")])  # no cursor sent: its first page
    gone = dataclasses.replace(paged, last_object_id=None)  # its cursor deleted at Stripe: its second read again
    assert not gone.lists_above_cursor([item(500, "ch_x"), item(500, "ch_same_second")])
    assert not paged.lists_above_cursor([ListedObject(None, "ch_no_time", None, None), item(499, None)])  # refused
