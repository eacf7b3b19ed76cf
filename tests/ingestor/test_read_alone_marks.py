"""What a worker makes of a tenant's read-alone mark as its passes read it (pure): a person's clear is followed
without a restart, and a row read before what the worker itself stored or learnt changes nothing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ingestor.sources.read_alone_marks import MarkAction, ReadAloneMarks

SINCE = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def test_a_mark_is_read_alone_and_its_clear_puts_the_tenant_back_in_the_pool() -> None:
    marks = ReadAloneMarks()
    assert marks.seen("t", None, asked_at=1.0) is MarkAction.KEEP  # never marked: nothing to do
    assert marks.seen("t", SINCE, asked_at=2.0) is MarkAction.ALONE  # learnt from the database
    assert marks.seen("t", SINCE, asked_at=3.0) is MarkAction.ALONE and marks.knows("t")
    assert marks.seen("t", None, asked_at=4.0) is MarkAction.TOGETHER  # a person cleared it
    assert not marks.knows("t")
    assert marks.seen("t", None, asked_at=5.0) is MarkAction.KEEP  # once


def test_a_death_here_not_yet_stored_is_not_undone_by_a_pass_that_found_no_mark() -> None:
    marks = ReadAloneMarks()
    assert marks.seen("t", None, asked_at=1.0) is MarkAction.KEEP and not marks.knows("t")  # so the pass stores it


def test_a_row_read_before_this_worker_stored_the_mark_does_not_clear_it() -> None:
    """Passes over a tenant's live and test connections run at once: the test pass read its row, the live pass
    then stored the mark (a page of it killed a process), and only then does the test pass look at its row."""
    marks = ReadAloneMarks()
    marks.stored("t", SINCE, stored_at=2.0)
    assert marks.seen("t", None, asked_at=1.5) is MarkAction.ALONE and marks.knows("t")  # stale: as last learnt
    assert marks.seen("t", None, asked_at=2.5) is MarkAction.TOGETHER  # read after: a person cleared it


def test_a_row_read_before_a_clear_another_pass_saw_does_not_put_the_tenant_back_alone() -> None:
    marks = ReadAloneMarks()
    marks.seen("t", SINCE, asked_at=1.0)
    assert marks.seen("t", None, asked_at=3.0) is MarkAction.TOGETHER  # one pass saw the clear
    assert marks.seen("t", SINCE, asked_at=2.0) is MarkAction.KEEP and not marks.knows("t")  # asked before it
    later = SINCE + timedelta(minutes=5)
    assert marks.seen("t", later, asked_at=4.0) is MarkAction.ALONE  # marked again since (a new death)


def test_a_mark_cleared_and_set_again_since_this_worker_last_looked_forgets_the_old_deaths() -> None:
    """Another worker's page died again after the clear and marked the tenant anew: this worker, which never saw
    the mark gone, must still forget the deaths from before the clear (a first death is retried, not a second)."""
    marks = ReadAloneMarks()
    assert marks.seen("t", SINCE, asked_at=1.0) is MarkAction.ALONE
    later = SINCE + timedelta(hours=2)
    assert marks.seen("t", later, asked_at=2.0) is MarkAction.ANEW
    assert marks.seen("t", later, asked_at=3.0) is MarkAction.ALONE
    assert marks.seen("t", SINCE, asked_at=1.5) is MarkAction.ALONE  # a row read before: stale, still alone
    assert marks.seen("t", None, asked_at=1.5) is MarkAction.ALONE


def test_tenants_are_followed_apart() -> None:
    marks = ReadAloneMarks()
    marks.seen("a", SINCE, asked_at=1.0)
    assert marks.seen("b", None, asked_at=2.0) is MarkAction.KEEP and marks.knows("a") and not marks.knows("b")


def test_a_pass_stores_the_mark_only_for_a_death_the_database_may_not_show() -> None:
    marks = ReadAloneMarks()
    never_died = lambda since: False  # noqa: E731
    assert not marks.to_store("t", False, never_died, pass_started=1.0)  # read in the pool: nothing to store
    assert marks.to_store("t", True, never_died, pass_started=1.0)  # blamed here, never stored
    marks.storing("t")
    assert marks.seen("t", None, asked_at=2.0) is MarkAction.KEEP  # the store failed: the death is not forgotten
    assert marks.to_store("t", True, never_died, pass_started=3.0)  # so the next pass tries again
    marks.stored("t", SINCE, stored_at=4.0)
    died_at = [3.5]  # a page died at 3.5, before the mark learnt at 4.0 (the pass over the other connection stored
    # it), in a pass that began at 3.0: storing it again after a person cleared the mark would undo the clear
    assert not marks.to_store("t", True, lambda since: died_at[0] >= since, pass_started=3.0)
    died_at[0] = 5.0  # a death after the mark was learnt (a person may have cleared it since): stored
    assert marks.to_store("t", True, lambda since: died_at[0] >= since, pass_started=3.0)
    assert marks.seen("t", None, asked_at=6.0) is MarkAction.TOGETHER
    assert marks.to_store("t", True, never_died, pass_started=7.0)  # read alone again after the clear: a new death
