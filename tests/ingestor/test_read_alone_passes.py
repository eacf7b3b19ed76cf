"""The importer's passes follow a tenant's read-alone mark as its passes race (pure: the store, checkpoints and key
session are stand-ins, the page pool and `run_connection` are real): a clear is not undone without a new death, a
death after a clear is stored even when the store failed once, and a pause is written whatever the store does."""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

import pytest

from ingestor.sources import importer as importer_module
from ingestor.sources.importer import StripeImporter
from ingestor.sources.key_session import StopReading
from ingestor.sources.page_pool import PagePoolBrokenError
from plumbing.settings import ImporterSettings

TENANT = "ten_once_hostile"
Pass = Callable[[], Awaitable[tuple[list[BaseException | None], int]]]


class Database:
    """The tenant's two connections and their marks, as `stripe_connections` holds them."""

    def __init__(self) -> None:
        self.marks: dict[str, datetime | None] = {"live": None, "test": None}
        self.store_fails = False
        self.paused: list[str] = []
        self.late_rows: dict[str, asyncio.Event] = {}  # a row read now but handed over once the event is set

    def mark(self) -> datetime | None:
        return min((m for m in self.marks.values() if m is not None), default=None)

    def clear(self) -> None:  # `ingestor read-alone clear`
        self.marks = dict.fromkeys(self.marks)

    async def get_connection(self, connection_id: str) -> types.SimpleNamespace:
        since = self.mark()
        if connection_id in self.late_rows:
            await self.late_rows.pop(connection_id).wait()
        return types.SimpleNamespace(connection_id=connection_id, tenant_id=TENANT, status="connected",
                                     pages_read_alone_since=since, livemode=False)

    async def set_pages_read_alone(self, tenant_id: str) -> datetime | None:
        if self.store_fails:
            raise ConnectionError("Postgres away")
        now = datetime.now(timezone.utc)
        self.marks = {c: m or now for c, m in self.marks.items()}
        return self.mark()

    async def import_checkpoints(self, connection_id: str) -> list[object]:
        return []

    async def prepare_slices(self, *args: object) -> None: ...

    async def begin_pass(self, connection_id: str) -> None: ...

    async def pause_import(self, connection_id: str, reason: str) -> bool:
        self.paused.append(reason)
        return True

    async def finish_resources(self, connection_id: str) -> bool:
        return False

    async def last_import_finished(self, connection_id: str) -> None:
        return None


class _Session:
    def __init__(self, *args: object) -> None: ...

    async def close(self) -> None: ...


@pytest.fixture
def db() -> Database:
    return Database()


@pytest.fixture
def importer(db: Database, monkeypatch: pytest.MonkeyPatch) -> StripeImporter:
    monkeypatch.setattr(importer_module, "KeySession", _Session)
    deps = types.SimpleNamespace(store=db, checkpoints=db, readers=None, publisher=None, clock=time.time)
    return StripeImporter(deps, ImporterSettings(page_processes=0))  # type: ignore[arg-type]


def scripted(importer: StripeImporter, passes: dict[str, Pass]) -> None:
    """Each connection's pass does what its script says instead of paging."""
    async def page_in_slices(session: object, connection_id: str,
                             stop: object) -> tuple[list[BaseException | None], int]:
        return await passes[connection_id]()
    importer._page_in_slices = page_in_slices  # type: ignore[method-assign]


def dies(importer: StripeImporter) -> Pass:
    """A pass in which a page of the tenant kills the process reading it alone."""
    async def one() -> tuple[list[BaseException | None], int]:
        importer._pages.read_alone(TENANT)
        importer._pages._last_death[TENANT] = time.monotonic()
        return [PagePoolBrokenError("a page killed the process reading it")], 1
    return one


async def fine() -> tuple[list[BaseException | None], int]:
    return [None], 1


async def marked(importer: StripeImporter) -> dict[str, Pass]:
    """The tenant blamed in a pass over its live connection, and its mark stored; the passes to script next."""
    passes: dict[str, Pass] = {"live": dies(importer), "test": fine}
    scripted(importer, passes)
    await importer.run_connection("live")
    return passes


def clear_then_die(importer: StripeImporter, db: Database, store_fails: bool = False) -> Pass:
    """A pass in which a person clears the mark, then a page of the tenant kills its process again."""
    died = dies(importer)

    async def one() -> tuple[list[BaseException | None], int]:
        db.clear()
        db.store_fails = store_fails
        return await died()
    return one


async def test_a_clear_is_not_undone_by_a_pass_that_began_before_a_death_its_other_connection_stored(
        importer: StripeImporter, db: Database) -> None:
    passes = await marked(importer)
    released = asyncio.Event()

    async def slow() -> tuple[list[BaseException | None], int]:
        await released.wait()
        return [None], 1

    passes["live"] = slow
    live = asyncio.create_task(importer.run_connection("live"))
    await asyncio.sleep(0)  # the live pass has begun
    passes["test"] = dies(importer)
    await importer.run_connection("test")  # a death in the test pass, stored there
    db.clear()
    released.set()
    await live
    assert db.mark() is None  # the live pass saw no death of its own


async def test_a_death_after_a_clear_whose_store_failed_is_stored_by_the_next_pass(
        importer: StripeImporter, db: Database) -> None:
    passes = await marked(importer)
    passes["live"] = clear_then_die(importer, db, store_fails=True)
    with pytest.raises(ConnectionError):
        await importer.run_connection("live")
    db.store_fails, passes["live"] = False, fine
    await importer.run_connection("live")  # finds no mark: must not forget the death
    assert db.mark() is not None and importer._pages.reads_alone(TENANT)


async def test_a_conviction_pauses_the_import_even_when_the_mark_cannot_be_stored(
        importer: StripeImporter, db: Database) -> None:
    died = dies(importer)

    async def convicted() -> tuple[list[BaseException | None], int]:
        await died()
        db.store_fails = True
        return [StopReading("unreadable_page")], 1

    scripted(importer, {"live": convicted})
    with pytest.raises(ConnectionError):
        await importer.run_connection("live")
    assert db.paused == ["unreadable_page"]


async def test_a_row_read_before_a_clear_and_handed_over_after_it_does_not_put_the_tenant_back_alone(
        importer: StripeImporter, db: Database) -> None:
    passes = await marked(importer)
    passes["live"] = fine
    db.late_rows["live"] = late = asyncio.Event()
    live = asyncio.create_task(importer.run_connection("live"))  # reads the mark, hands it over late
    await asyncio.sleep(0)
    db.clear()
    await importer.run_connection("test")
    assert not importer._pages.reads_alone(TENANT)
    late.set()
    await live
    assert not importer._pages.reads_alone(TENANT) and db.mark() is None


async def test_a_death_after_a_clear_in_a_pass_begun_before_it_marks_the_tenant_again(
        importer: StripeImporter, db: Database) -> None:
    passes = await marked(importer)
    passes["live"] = clear_then_die(importer, db)
    await importer.run_connection("live")
    assert db.mark() is not None


async def test_a_mark_cleared_and_set_again_by_another_worker_forgets_this_workers_deaths_before_it(
        importer: StripeImporter, db: Database) -> None:
    """Else a single death after the clear would be taken for a second one within the hour, and pause the import."""
    passes = await marked(importer)
    importer._pages._first_death[TENANT] = importer._pages._last_death[TENANT]
    db.clear()
    await db.set_pages_read_alone(TENANT)  # another worker's page died after the clear: a new mark
    passes["live"] = fine
    await importer.run_connection("live")
    assert importer._pages.reads_alone(TENANT)
    assert TENANT not in importer._pages._first_death and TENANT not in importer._pages._last_death
