"""Which pending imports a worker passes over next (`ImportTurns`): no round waits for its slowest pass."""

from __future__ import annotations

from ingestor.sources.import_turns import ImportTurns


def test_a_freed_place_goes_to_the_import_passed_over_longest_ago_never_passed_first() -> None:
    turns = ImportTurns(rest_s=5.0)
    assert turns.next(["a", "b", "c"], running=[], places=2, now=0.0) == ["a", "b"]  # the database's order at first
    turns.ended("a", "more", now=1.0)
    # "b" still runs; "c" never passed here goes before "a", whose pass here is the latest.
    assert turns.next(["a", "b", "c"], running=["b"], places=1, now=1.0) == ["c"]
    assert turns.next(["a", "b", "c"], running=["b", "c"], places=1, now=1.0) == ["a"]  # more to do: at once
    assert turns.next(["a", "b", "c", "new"], running=["a", "b", "c"], places=1, now=2.0) == ["new"]  # meanwhile


def test_an_import_whose_pass_ended_without_more_rests_and_does_not_take_every_freed_place() -> None:
    """A pass that failed (a bug met in its data, Stripe away) or found the import paused or held elsewhere: tried
    again at once, it would take every place as it frees it."""
    turns = ImportTurns(rest_s=5.0)
    assert turns.next(["bad", "fine"], running=[], places=2, now=0.0) == ["bad", "fine"]
    turns.ended("bad", "failed", now=1.0)
    assert turns.next(["bad", "fine"], running=["fine"], places=1, now=1.0) == []
    assert turns.next(["bad", "fine"], running=["fine"], places=1, now=5.9) == []
    assert turns.next(["bad", "fine"], running=["fine"], places=1, now=6.0) == ["bad"]  # its rest is over


def test_no_more_are_started_than_places_and_none_twice() -> None:
    turns = ImportTurns(rest_s=5.0)
    assert turns.next([f"c{n}" for n in range(10)], running=[], places=0, now=0.0) == []
    assert turns.next(["a"], running=["a"], places=3, now=0.0) == []


def test_an_import_pending_again_after_it_was_not_counts_as_never_passed_over() -> None:
    """Paused then resumed, or done then a catch-up run: nothing is kept of its passes before."""
    turns = ImportTurns(rest_s=5.0)
    assert turns.next(["a", "b"], running=[], places=1, now=0.0) == ["a"]
    turns.ended("a", "more", now=1.0)
    assert turns.next(["a", "b"], running=[], places=1, now=1.0) == ["b"]  # "a" passed over last: "b" first
    turns.ended("b", "more", now=2.0)
    turns.forget(["b"])  # "a" is no longer pending
    assert turns.next(["b", "a"], running=[], places=1, now=3.0) == ["a"]  # pending again: as if never passed over


def test_an_import_done_is_not_rested_so_a_new_run_of_it_starts_at_the_next_scan() -> None:
    """An on-demand import asked for just after the last one finished: rested, it waited a scan interval more."""
    turns = ImportTurns(rest_s=5.0)
    assert turns.next(["a"], running=[], places=1, now=0.0) == ["a"]
    turns.ended("a", "done", now=1.0)
    assert turns.next(["a"], running=[], places=1, now=1.5) == ["a"]
