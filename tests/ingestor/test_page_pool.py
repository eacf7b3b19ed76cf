"""Listed pages made into records in the worker's page pool: the same records as the worker would make itself
(card data redacted there too), an object that cannot be one refused alone, a body that is not a list refused
whole, a pool process that is killed costs no page and does not break the next one, pool processes end
with their worker (and work when it is a container's PID 1), a page that kills its process is its tenant's alone,
and a bug's message stays in the pool process."""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import orjson
import pytest

from ingestor.envelope.snapshots import snapshot_envelope
from ingestor.sources import page_pool
from ingestor.sources.listed_pages import listed_page
from ingestor.sources.page_pool import PageBugError, PageCrashError, PagePool, PagePoolBrokenError, _pools
from plumbing.errors import error_site
from plumbing.partitioning import key_hash
from schemas import EnvelopeCodec

FETCHED = datetime(2026, 6, 1, tzinfo=timezone.utc)
CARD_NUMBER = "4242424242424242"
CHARGE = {"id": "ch_1", "object": "charge", "created": 1767225600, "amount": 500, "currency": "usd",
          "description": f"card {CARD_NUMBER}",
          "payment_method_details": {"type": "card", "card": {"brand": "visa", "last4": "4242", "number": CARD_NUMBER,
                                                               "fingerprint": "fp_1", "cvc_check": "pass"}}}
NO_CREATED = {"id": "ch_2", "object": "charge", "amount": 700, "currency": "usd"}
PAGE = orjson.dumps({"object": "list", "has_more": True,
                     "data": [CHARGE, NO_CREATED, "not an object", {**CHARGE, "id": "ch_3", "created": 1767225500}]})


async def _page(pool: PagePool, body: bytes = PAGE, tenant: str = "tenant_a"):  # type: ignore[no-untyped-def]
    return await pool.listed_page(body, "charges", tenant, True, "2024-06-20", FETCHED)


async def test_the_pool_makes_the_records_the_worker_would_make_itself_card_data_redacted() -> None:
    pooled, inline = await _page(PagePool(2)), await _page(PagePool(0))
    assert pooled == inline and pooled.has_more
    assert pooled.items is not None
    assert [(i.created, i.cursor_id) for i in pooled.items] == [(1767225600, "ch_1"), (None, "ch_2"), (None, None),
                                                                 (1767225500, "ch_3")]
    codec = EnvelopeCodec()
    first = pooled.items[0].record
    assert first == codec.record(snapshot_envelope(CHARGE, "tenant_a", True, "2024-06-20", FETCHED))
    assert first[0] == b"tenant_a:ch_1"  # keyed as every producer keys
    assert [i.key_hash for i in pooled.items] == [key_hash(first[0]), None, None, key_hash(b"tenant_a:ch_3")]
    records = b"".join(key + value for i in pooled.items if i.record for key, value in [i.record])
    assert CARD_NUMBER.encode() not in records and b"fp_1" not in records
    # The two objects that cannot be a snapshot are left out alone, each with its reason and a label that names it.
    refused = [i.refused for i in pooled.items if i.refused is not None]
    assert [(r.label, r.code) for r in refused] == [("ch_2", "malformed_object"), (refused[1].label, "malformed_object")]
    assert refused[1].label.startswith("not an object (str)")


@pytest.mark.parametrize("body", [b"<html>bad gateway</html>", b'{"object": "list", "has_more": false}',
                                  b'{"object": "list", "data": {"id": "ch_1"}, "has_more": false}', b"[]"])
def test_a_body_that_is_not_a_list_page_is_refused_whole(body: bytes) -> None:
    assert listed_page(body, "charges", "tenant_a", True, None, FETCHED).items is None


async def test_a_pool_process_that_is_killed_costs_no_page_and_the_next_page_gets_a_new_pool() -> None:
    pool = PagePool(1)
    assert (await _page(pool)).items  # the pool runs
    executor = _pools[1]
    for process in list(executor._processes.values()):  # type: ignore[attr-defined]
        os.kill(process.pid, signal.SIGKILL)  # out of memory, say
        process.join()
    assert await _page(pool) == await _page(PagePool(0))  # read again alone: not the page's doing
    assert _pools.get(1) is not executor  # let go of: the next page starts a new pool
    assert await _page(pool) == await _page(PagePool(0))
    assert _pools[1] is not executor
    assert not pool.reads_alone("tenant_a")


POISON = orjson.dumps({"object": "list", "has_more": False, "data": [{**CHARGE, "id": "ch_poison"}]})


def dies_on_poison(body: bytes, *args):  # type: ignore[no-untyped-def]
    """In a pool process: as a crash in a C extension or the kernel's out-of-memory killer would end it."""
    if b"ch_poison" in body:
        os._exit(70)
    return page_pool._listed_page_in_pool(body, *args)


def loops_on_poison(body: bytes, *args):  # type: ignore[no-untyped-def]
    """In a pool process: as a page that sends a parser into an endless loop would hold it."""
    while b"ch_poison" in body:
        pass
    return page_pool._listed_page_in_pool(body, *args)


@pytest.mark.parametrize(("make_page", "how"), [(dies_on_poison, "exited with code 70"),
                                                (loops_on_poison, "used up the page CPU time limit")],
                         ids=["kills", "loops"])
async def test_a_page_that_kills_or_loops_its_process_is_its_tenants_alone_and_the_pages_it_took_down_come_back(
        make_page: page_pool.MakePage, how: str) -> None:
    """A hostile tenant's page that kills the process reading it, or keeps it busy past the page CPU time limit,
    fails that tenant alone: the other tenants' pages the pool held come back whole (read again one at a time), its
    later pages are read alone and never take the pool down again, and once one of them kills its process again the
    page is not read again. The errors say which it was (never what the page holds)."""
    pool = PagePool(1, make_page, cpu_limit_s=1.0)
    tenants = ["tenant_a", "tenant_b", "tenant_c"]

    async def page_of(tenant: str, body: bytes = PAGE, of: PagePool = pool):  # type: ignore[no-untyped-def]
        page = of.listed_page(body, "charges", tenant, True, "2024-06-20", FETCHED)
        return await asyncio.wait_for(page, 60)  # a loop the limit does not end fails the test, not hangs it

    # The hostile page is taken first, so the others are still in the pool (queued) when it dies.
    hostile, *others = await asyncio.gather(page_of("tenant_hostile", POISON), *(page_of(t) for t in tenants),
                                            return_exceptions=True)
    assert isinstance(hostile, PagePoolBrokenError) and hostile.retriable  # once: the kernel may have killed it
    assert str(hostile) == f"the process reading a charges page alone {how}"
    assert others == [await page_of(t, of=PagePool(0)) for t in tenants]  # every record, as if nothing happened
    assert pool.reads_alone("tenant_hostile") and not any(pool.reads_alone(t) for t in tenants)

    assert await page_of("tenant_a") == others[0]
    shared = _pools[1]
    hostile, other = await asyncio.gather(page_of("tenant_hostile", POISON), page_of("tenant_b"),
                                          return_exceptions=True)
    assert isinstance(hostile, PageCrashError) and not hostile.retriable and hostile.code == "unreadable_page"
    assert str(hostile) == f"the process reading a charges page of this account alone {how}, twice"
    assert other == others[1]
    assert _pools[1] is shared  # read alone: the pool the others use stayed up
    assert await page_of("tenant_hostile") == await page_of("tenant_hostile", of=PagePool(0))  # its other pages go on


async def test_a_tenant_read_together_again_shares_the_pool_and_its_next_death_is_a_first_one() -> None:
    """Once a person clears a convicted tenant's mark (a release reads its page safely), its pages go to the shared
    pool again; a page that still kills a process there is retried as a first death, not taken for a second."""
    pool = PagePool(1, dies_on_poison)
    for _ in range(2):
        try:
            await _page(pool, POISON, "tenant_hostile")
        except (PagePoolBrokenError, PageCrashError) as exc:
            last = exc
    assert isinstance(last, PageCrashError) and pool.reads_alone("tenant_hostile")
    pool.read_together("tenant_hostile")
    assert not pool.reads_alone("tenant_hostile")
    shared = await _page(pool, tenant="tenant_hostile")  # through the shared pool: it starts it
    assert shared == await _page(PagePool(0), tenant="tenant_hostile") and pool.processes in _pools
    before = time.monotonic()
    with pytest.raises(PagePoolBrokenError):  # its first death anew: retried, read alone from now on
        await _page(pool, POISON, "tenant_hostile")
    assert pool.reads_alone("tenant_hostile")
    assert pool.died_since("tenant_hostile", before) and not pool.died_since("tenant_hostile", time.monotonic())
    assert not pool.died_since("tenant_a", before)  # the importer marks the tenant again for every worker


def test_a_page_within_its_limit_leaves_no_timer_behind_for_the_process() -> None:
    """The timer that ends a process whose page outlasts its CPU limit runs for the page alone: a pool process on
    its next task after a page that used most of the limit (or failed) is not ended for it."""
    armed = page_pool._within(30.0, lambda: signal.getitimer(signal.ITIMER_PROF)[0])
    assert 29.0 < armed <= 30.1  # rounded up to the kernel's tick
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)
    with pytest.raises(ZeroDivisionError):
        page_pool._within(30.0, lambda: 1 // 0)
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


def slow_page(body: bytes, *args):  # type: ignore[no-untyped-def]
    """In a pool process: a page that uses 0.4 s of CPU time."""
    until = time.process_time() + 0.4
    while time.process_time() < until:
        pass
    return page_pool._listed_page_in_pool(body, *args)


async def test_pages_that_each_take_most_of_the_limit_are_not_ended_by_it() -> None:
    """The limit is per page, counted from when the page starts in its process: three pages in a row on one
    process, each well within the limit but over it together, all come back, and the pool stays up."""
    pool = PagePool(1, slow_page, cpu_limit_s=1.0)
    await pool.warm()
    shared = _pools[1]
    pages = await asyncio.gather(*(_page(pool, tenant=t) for t in ("tenant_a", "tenant_b", "tenant_c")))
    assert pages == [await _page(PagePool(0), tenant=t) for t in ("tenant_a", "tenant_b", "tenant_c")]
    assert _pools[1] is shared and not any(pool.reads_alone(t) for t in ("tenant_a", "tenant_b", "tenant_c"))


BIG = orjson.dumps({"object": "list", "has_more": False,
                    "data": [{**CHARGE, "id": f"ch_big{i}", "description": "x" * 5000} for i in range(100)]})


def loops_on_poison_big_waits(marker: str, body: bytes, *args):  # type: ignore[no-untyped-def]
    """In a pool process: `loops_on_poison`, and a big page that is still being made until the pool has broken
    (`marker` exists)."""
    deadline = time.monotonic() + 60  # then it goes on anyway, and the test says its process did not end
    while b"ch_big" in body and not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    return loops_on_poison(body, *args)


async def test_the_processes_of_a_pool_that_broke_end_and_the_pages_they_made_come_back(tmp_path: Path) -> None:
    """When one process of the shared pool dies, the others end too (they ignore the SIGTERM the stdlib sends): none
    stays blocked writing a result no one reads (half a megabyte here, more than a pipe holds), and each page they
    held comes back, read again alone."""
    marker = tmp_path / "pool-broke"
    pool = PagePool(2, partial(loops_on_poison_big_waits, str(marker)), cpu_limit_s=1.0)
    await pool.warm()
    broken = _pools[2]
    processes = list(broken._processes.values())  # type: ignore[attr-defined]

    async def once_broken() -> None:
        while _pools.get(2) is broken:
            await asyncio.sleep(0.01)
        marker.touch()  # the big page's process then writes its result, unless it was ended with the pool

    hostile, big, _ = await asyncio.wait_for(asyncio.gather(  # a loop the limit does not end fails the test, not hangs
        pool.listed_page(POISON, "charges", "tenant_hostile", True, None, FETCHED), _page(pool, BIG), once_broken(),
        return_exceptions=True), 60)
    assert isinstance(hostile, PagePoolBrokenError)
    assert big == await _page(PagePool(0), BIG)
    for process in processes:
        await asyncio.to_thread(process.join, 30)
        assert process.exitcode is not None


def _refuse_to_arrive() -> None:
    raise MemoryError  # as the worker's process would, short of memory while it reads a result


class _Unreceivable:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return _refuse_to_arrive, ()


def made_but_not_received(body: bytes, *args):  # type: ignore[no-untyped-def]
    """In a pool process: a page whose result the worker fails to read (the process itself is fine)."""
    return _Unreceivable(), 0.0


async def test_a_result_the_worker_cannot_receive_blames_no_tenant() -> None:
    """When the worker's side fails to read a page's result, the pool breaks with the process alive: not the page's
    doing, so its tenant is neither read alone nor paused, however often it happens."""
    pool = PagePool(1, made_but_not_received)
    for _ in range(3):
        with pytest.raises(PagePoolBrokenError) as failed:
            await _page(pool, tenant="tenant_a")
        assert not isinstance(failed.value, PageCrashError)
        assert str(failed.value) == "a charges page read alone could not be received"
    assert not pool.reads_alone("tenant_a")


async def test_pages_queued_in_a_pool_let_go_of_come_back_instead_of_being_cancelled() -> None:
    """A pool let go of while pages wait in it (one of its processes could not be started, say) cancels them there:
    each comes back, read again alone, and the task that waited for it is not cancelled."""
    pool = PagePool(1, slow_page)
    await pool.warm()
    tenants = ["tenant_a", "tenant_b", "tenant_c", "tenant_d"]
    pages = [asyncio.ensure_future(_page(pool, tenant=t)) for t in tenants]
    await asyncio.sleep(0)  # every page submitted
    shared = _pools.pop(1)
    page_pool._end(shared, kill=False)
    assert await asyncio.gather(*pages) == [await _page(PagePool(0), tenant=t) for t in tenants]


async def test_pages_already_in_flight_when_a_tenant_is_first_blamed_do_not_pause_it() -> None:
    """Two deaths of the tenant's pages from one burst (the pool held both when it died) could both be the kernel's
    out-of-memory killer at work: only a page that started after the first death can pause the import."""
    pool = PagePool(1, dies_on_poison)
    results = await asyncio.gather(*(pool.listed_page(POISON, "charges", "tenant_hostile", True, None, FETCHED)
                                     for _ in range(2)), return_exceptions=True)
    assert [type(r) for r in results] == [PagePoolBrokenError, PagePoolBrokenError]
    # The second was in flight with the first when it was blamed: failed without being read (a page that loops would
    # cost a limit's time each, other tenants' pages waiting behind it), to be read on the tenant's next pass.
    assert str(results[1]) == "another charges page of this account killed the process reading it"
    with pytest.raises(PageCrashError):
        await pool.listed_page(POISON, "charges", "tenant_hostile", True, None, FETCHED)


async def test_a_process_for_pages_read_alone_that_dies_while_idle_blames_no_page() -> None:
    """The process that reads pages alone is checked alive before each page: killed while idle (out of memory, an
    operator), it costs the next page nothing, and its tenant is not blamed."""
    pool = PagePool(1, dies_on_poison)
    with pytest.raises(PagePoolBrokenError):
        await pool.listed_page(POISON, "charges", "tenant_hostile", True, None, FETCHED)  # now read alone
    inline = await _page(PagePool(0), tenant="tenant_hostile")
    assert await _page(pool, tenant="tenant_hostile") == inline  # read alone
    assert pool._alone is not None
    for process in list(pool._alone._processes.values()):  # type: ignore[attr-defined]
        os.kill(process.pid, signal.SIGKILL)  # idle
        process.join()
    assert await _page(pool, tenant="tenant_hostile") == inline
    with pytest.raises(PageCrashError):  # its second page that kills the process
        await pool.listed_page(POISON, "charges", "tenant_hostile", True, None, FETCHED)


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare and root")
def test_a_worker_that_is_pid_1_as_in_a_container_gets_a_working_pool() -> None:
    """In a container the worker is PID 1: a pool process whose parent is PID 1 is not an orphan there."""
    code = ("import asyncio, os; from datetime import datetime, timezone; from ingestor.sources.page_pool import "
            "PagePool; assert os.getpid() == 1; page = asyncio.run(PagePool(1).listed_page(b'{\"data\": [], "
            "\"has_more\": false}', 'charges', 't', True, None, datetime.now(timezone.utc))); print(page.items)")
    done = subprocess.run(["unshare", "-p", "-f", "--kill-child", sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("expected_parent, lives", [("parent", True), ("another", False)])
def test_a_pool_process_whose_worker_is_gone_ends_at_once(expected_parent: str, lives: bool) -> None:
    """The kernel kills a pool process when its worker ends; one whose worker ended before it asked ends itself."""
    pid = os.getpid() if expected_parent == "parent" else os.getpid() + 1_000_000
    code = f"from ingestor.sources.page_pool import _die_with; _die_with({pid}); print('alive')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.stdout.strip() == "alive") is lives


def test_a_bug_met_in_a_pool_process_crosses_back_as_its_site_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A traceback's text crosses the pool's pipe with the error: a message quoting the page must stay behind."""
    def failing(*args: object) -> None:
        raise ValueError(f"invalid literal for int() with base 10: '{CARD_NUMBER}'")

    monkeypatch.setattr(page_pool, "listed_page", failing)
    with pytest.raises(PageBugError) as raised:
        page_pool._listed_page_in_pool(PAGE, "charges", "tenant_a", True, None, FETCHED)
    crossed = pickle.loads(pickle.dumps(raised.value))
    assert crossed.site.startswith("ValueError at test_page_pool.py:") and error_site(crossed) == crossed.site
    assert raised.value.__suppress_context__ and CARD_NUMBER not in str(crossed)


def test_the_pool_says_when_its_processes_are_at_work_nearly_all_the_time_and_not_after_a_burst(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The importer adds no slice while the pool's processes are at work nearly all the time (this machine's CPU is
    what pages wait for); a burst of pages met now and then (at Stripe's latency, pages come back in waves) is not
    that, and a second later it counts no more."""
    pool = PagePool(2)
    now = [1000.0]
    monkeypatch.setattr(page_pool.time, "monotonic", lambda: now[0])
    assert pool.busy() == 0.0
    for _ in range(19):  # a second of pages of 0.1 s each on two processes: busy 95 % of the time
        pool._worked.append((now[0], 0.1))
        now[0] += 1 / 19
    assert pool.busy() > 0.9
    now[0] += 2.0  # nothing since
    assert pool.busy() == 0.0
    pool._worked.extend([(now[0], 0.1)] * 6)  # a burst of six pages: three each, then idle
    assert 0.2 < pool.busy() < 0.9
    assert PagePool(0).busy() == 0.0


async def test_pages_made_in_the_pool_are_counted_in_its_work() -> None:
    pool = PagePool(1)
    assert (await _page(pool)).items
    assert pool.busy() > 0.0


async def test_pages_read_alone_take_turns_tenant_by_tenant_in_the_order_they_asked() -> None:
    """After a pool death, pages of a few tenants wait to be read alone in any order; a page after another tenant's
    costs a new process, so a tenant's waiting pages go right after its page that is being read, then the others
    in the order they asked. A page cancelled while it waits loses its place, and the turns go on."""
    turns, order, gate = page_pool.TenantTurns(), [], asyncio.Event()

    async def page(tenant: str, name: str, hold: bool = False) -> None:
        async with turns.turn(tenant):
            order.append(name)
            if hold:
                await gate.wait()

    first = asyncio.create_task(page("a", "a1", hold=True))
    await asyncio.sleep(0)  # a1 holds the turn
    waiting = [asyncio.create_task(page(t, n)) for t, n in [("b", "b1"), ("a", "a2"), ("c", "c1"), ("b", "b2"),
                                                            ("a", "a3")]]
    cancelled = asyncio.create_task(page("c", "c2"))
    await asyncio.sleep(0)  # all of them wait
    cancelled.cancel()
    gate.set()
    await asyncio.gather(first, *waiting)
    assert order == ["a1", "a2", "a3", "b1", "b2", "c1"]
    assert cancelled.cancelled()
    async with turns.turn("d"):  # free again
        pass
