"""A slice split while one of its pages is in flight, and the split's commit lost (the connection broke on its
answer): only the database knows the slice's start now. The page in hand may hold objects the slice split off
owns, so its worker lets it go unpublished and unsaved; whoever claims the slice next reads its row (pure: the
checkpoints and publisher are stand-ins, `_page_slice`, `_split` and the page-making are the importer's own)."""

from __future__ import annotations

import asyncio
import time
import types
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest

from ingestor.sources.import_pages import Page
from ingestor.sources.import_pass import ImportPass
from ingestor.sources.importer import StripeImporter
from ingestor.sources.slices import ImportSlice, SlicePlanner
from plumbing.settings import ImporterSettings

FETCHED = datetime(2026, 6, 1, tzinfo=timezone.utc)
NEWER, OLDER = 1767225600, 1767225500
SPLIT_AT = 1767225550  # between the page's two charges: the older one belongs to the slice split off
PAGE = orjson.dumps({"object": "list", "has_more": True, "data": [
    {"id": "ch_newer", "object": "charge", "created": NEWER, "amount": 500, "currency": "usd"},
    {"id": "ch_older", "object": "charge", "created": OLDER, "amount": 700, "currency": "usd"}]})


class Checkpoints:
    """The split commits once `answer_split` is set, and its answer is lost; saving a page is recorded."""

    def __init__(self) -> None:
        self.saved: list[int] = []
        self.answer_split = asyncio.Event()

    async def split_slice(self, piece: ImportSlice, at: int, *args: object, keep: bool = True) -> None:
        await self.answer_split.wait()
        raise ConnectionError("connection lost while the split's COMMIT was answered")

    async def save_slice_page(self, piece: ImportSlice, published: int, *args: object) -> bool:
        self.saved.append(published)
        return True


class Publisher:
    def __init__(self) -> None:
        self.records: list[object] = []

    async def publish_records(self, records: list[object], key_hashes: list[int]) -> None:
        self.records += records


async def test_a_page_in_hand_when_its_slices_split_was_lost_is_let_go_unpublished() -> None:
    checkpoints, publisher = Checkpoints(), Publisher()
    deps = types.SimpleNamespace(store=None, checkpoints=checkpoints, readers=None, publisher=publisher,
                                 clock=time.time)
    importer = StripeImporter(deps, ImporterSettings(page_processes=0))  # type: ignore[arg-type]
    asked, answered = asyncio.Event(), asyncio.Event()

    async def fetch(session: object, resource: str, query: dict[str, object]) -> Page:
        asked.set()
        await answered.wait()  # Stripe's latency: the split happens meanwhile
        return Page(PAGE, FETCHED, 0.3)

    importer._fetch = fetch  # type: ignore[method-assign]
    made, make = asyncio.Event(), importer._pages.listed_page

    async def listed_page(*args: Any) -> Any:
        page = await make(*args)
        made.set()  # from here the page goes on without an await until it waits for the split
        return page

    importer._pages.listed_page = listed_page  # type: ignore[method-assign, assignment]
    session = types.SimpleNamespace(connection=types.SimpleNamespace(
        connection_id="conn_lost_split", tenant_id="ten_lost_split", livemode=True))
    piece = ImportSlice("conn_lost_split", "charges", "run_1", 1, range_start=OLDER - 1000, range_end=NEWER + 1000)
    run = ImportPass(SlicePlanner(min_span_s=1, min_objects_left=1), time.monotonic() + 60, 90.0, 4, asyncio.Event(),
                lambda: False, None)

    paging = asyncio.create_task(importer._page_slice(session, piece, run))  # type: ignore[arg-type]
    await asyncio.wait_for(asked.wait(), 5)
    splitting = asyncio.create_task(importer._split(run, piece, SPLIT_AT))
    answered.set()  # the page comes back while the split waits for its commit
    await asyncio.wait_for(made.wait(), 5)
    assert not publisher.records  # it waits for the split to end
    checkpoints.answer_split.set()
    with pytest.raises(ConnectionError):
        await splitting
    await asyncio.wait_for(paging, 5)

    assert publisher.records == [], "the page in hand was published against a start only the database knows"
    assert checkpoints.saved == []
    assert run.stop.is_set()  # the pass ends; the next one reads the slice's row


async def test_a_slice_whose_last_page_is_being_published_is_not_split() -> None:
    """Its last page in hand (has_more false), nothing is left below the page's oldest object: split while the page is
    published (before `done` is set), the older half would be an empty slice, a request of the endpoint's budget."""
    checkpoints, publishing, published = Checkpoints(), asyncio.Event(), asyncio.Event()

    class SlowPublisher(Publisher):
        async def publish_records(self, records: list[object], key_hashes: list[int]) -> None:
            publishing.set()
            await published.wait()
            await super().publish_records(records, key_hashes)

    publisher = SlowPublisher()
    deps = types.SimpleNamespace(store=None, checkpoints=checkpoints, readers=None, publisher=publisher,
                                 clock=time.time)
    importer = StripeImporter(deps, ImporterSettings(page_processes=0))  # type: ignore[arg-type]
    last_page = orjson.loads(PAGE) | {"has_more": False}

    async def fetch(session: object, resource: str, query: dict[str, object]) -> Page:
        return Page(orjson.dumps(last_page), FETCHED, 0.3)

    importer._fetch = fetch  # type: ignore[method-assign]
    session = types.SimpleNamespace(connection=types.SimpleNamespace(
        connection_id="conn_last_page", tenant_id="ten_last_page", livemode=True))
    # 1,000 objects published over the newest 500 s: dense enough that its range below would be split at once.
    piece = ImportSlice("conn_last_page", "charges", "run_1", 1, range_start=OLDER - 1000, range_end=NEWER + 1000,
                        last_object_id="ch_prev", oldest_created=NEWER + 500, objects_published=1000)
    run = ImportPass(SlicePlanner(min_span_s=1, min_objects_left=200, last_pages_objects=101), time.monotonic() + 60,
                90.0, 4, asyncio.Event(), lambda: False, None)
    run.planner.add(piece)
    assert run.to_split() is not None  # before the page: what is left is worth splitting

    paging = asyncio.create_task(importer._page_slice(session, piece, run))  # type: ignore[arg-type]
    await asyncio.wait_for(publishing.wait(), 5)
    assert run.to_split() is None, "split while its last page was published: the older half is empty"
    published.set()
    await asyncio.wait_for(paging, 5)
    assert piece.done and checkpoints.saved == [2] and len(publisher.records) == 2
