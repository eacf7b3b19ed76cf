"""Where the importer's listed pages become records (`listed_pages.py`): a pool of processes shared by every
import of the worker, so that one worker uses every core and its event loop only moves bytes.

Turning a page into records is about two thirds of the importer's CPU; in the event loop's process it capped a
worker at one core (measured: 97–103 % CPU, about 5,000 objects/s against the 7,500 the budgets allow). A page
crosses the pool's pipe as the body Stripe sent and comes back as records (a few hundred kilobytes each way, a
small part of the work). The processes are spawned (nothing of the worker's event loop, sockets or threads is
inherited, as a fork would) and end with the worker however it ends: a worker killed with SIGKILL leaves no one to
shut its pool down, so each asks the kernel to kill it when its parent ends.

A process that dies (killed, out of memory, or a page that crashes it) takes every page the pool held with it,
other tenants' too, and which page did it is not known. So each of those pages is read again alone, one at a
time, in a process that holds only that page (checked alive just before) and has only ever read that tenant's
pages (a crash may come a page after what caused it), and the next page starts a new pool (the broken one's other
processes are killed: they ignore the SIGTERM the stdlib sends): a page that is not to blame comes back as if
nothing happened. A page that kills that process is its tenant's: that tenant's pages are
read alone from then on, so its data no longer takes other tenants' pages down (the importer records it for every
worker; `read_alone`). The first such death is retried, since the kernel's out-of-memory killer may choose that
process during anyone's page; a page that kills it again, having started after that first death and within
`CONVICTION_WINDOW_S` of it, is not read again (`PageCrashError`).

A page that sends its reader into an endless loop rather than kills it would hold that process from every tenant for
good, so each page runs under a limit on its process's CPU time (`cpu_limit_s`, far above the milliseconds a page
takes): the kernel ends a process whose page outlasts it (SIGPROF, left to its default action, so a loop in C code
ends as surely as one in Python), and the page is then treated as one that killed it. CPU time, not the clock: a
machine busy with other work, or a process paused and resumed, does not make a page look guilty. While a tenant's page
is being blamed, its other pages that were in flight with it are not read (each would cost a limit's time, other
tenants' pages waiting behind it): they fail as retriable, and are read alone on its next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import math
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import Any, TypeVar

from ingestor.errors import IngestError
from ingestor.sources.listed_pages import ListedPage, listed_page
from plumbing.errors import error_site
from plumbing.logs import get_logger
from plumbing.settings import ImporterSettings

log = get_logger(__name__)

_pools: dict[int, ProcessPoolExecutor] = {}  # per size, shared by every importer of this process
_T = TypeVar("_T")
_PR_SET_PDEATHSIG = 1  # Linux prctl(2): the signal a process gets when its parent ends
BUSY_WINDOW_S = 1.0  # how far back `busy` looks
CONVICTION_WINDOW_S = 3600.0  # a tenant's second death of a page read alone, this soon after its first, pauses it
PAGE_CPU_LIMIT_S: float = ImporterSettings.model_fields["page_cpu_limit_s"].default  # the setting's default
_SIGNAL_EXIT = {-signal.SIGPROF: "used up the page CPU time limit", -signal.SIGKILL: "was killed (SIGKILL)",
                -signal.SIGSEGV: "crashed (SIGSEGV)", -signal.SIGABRT: "aborted (SIGABRT)"}


class PagePoolBrokenError(IngestError):
    """A process of the page pool died (as it started, or with pages that are then read again alone)."""

    retriable = True
    code = "page_pool_broken"


class PageCrashError(IngestError):
    """A tenant's page killed the process reading it alone, having started after another of its pages had done so
    (within `CONVICTION_WINDOW_S`): something in its data kills the reader. Not retriable: reading the page again
    would kill it again."""

    retriable = False
    code = "unreadable_page"


class PageBugError(Exception):
    """An unexpected error in a pool process (a bug met in one tenant's page): it carries only where it was raised,
    not its message or traceback, which may quote the page (card data included)."""

    def __init__(self, site: str):
        super().__init__(site)
        self.site = site


def default_processes() -> int:
    """One process per CPU this process may use: those it may run on, within its cgroup's CPU quota (a container
    limited to two CPUs on a 64-core machine gets two)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max") as limit:
            quota, period = limit.read().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 quota here
        pass
    return cpus


MakePage = Callable[[bytes, str, str, bool, str | None, datetime], tuple[ListedPage, float]]


class PagePool:
    """Turns listed pages into records in `processes` processes (0: in this one, in the event loop, with no limit);
    `make_page` runs in them (a module's function: it crosses to them by name), each page within `cpu_limit_s` of
    CPU time."""

    def __init__(self, processes: int, make_page: MakePage | None = None, cpu_limit_s: float = PAGE_CPU_LIMIT_S):
        self.processes = processes
        self.cpu_limit_s = cpu_limit_s
        self._make_page = make_page or _listed_page_in_pool
        self._limited_page = functools.partial(_within, cpu_limit_s, self._make_page)  # what a pool process runs
        self._worked: deque[tuple[float, float]] = deque()  # per page made lately: when its work ended, how long
        self._read_alone: set[str] = set()  # tenants whose pages are read alone
        self._first_death: dict[str, float] = {}  # per tenant: when a page of it last killed the process reading it
        # alone without being blamed for it (monotonic)
        self._last_death: dict[str, float] = {}  # per tenant: when a page of it last killed its process, read alone
        self._alone: ProcessPoolExecutor | None = None  # one process, one page at a time
        self._alone_tenant: str | None = None  # the only tenant whose pages that process has read
        self._alone_turns = TenantTurns()

    async def listed_page(self, body: bytes, resource: str, tenant_id: str, livemode: bool, api_version: str | None,
                          asked_at: datetime) -> ListedPage:
        """The page's records. Raises PagePoolBrokenError (retriable) if a process died (the page may have killed it
        alone: then its tenant's first such death), PageCrashError if the page is to blame (see the module's doc)."""
        if not self.processes:
            return listed_page(body, resource, tenant_id, livemode, api_version, asked_at)
        started = time.monotonic()
        args = (body, resource, tenant_id, livemode, api_version, asked_at)
        if self.reads_alone(tenant_id):
            page, worked_s = await self._made_alone(resource, args, started)
        else:
            try:
                page, worked_s = await self._in_pool(self._limited_page, *args)
            except PagePoolBrokenError:  # which of the pages it held killed it is not known
                page, worked_s = await self._made_alone(resource, args, started)
        now = time.monotonic()
        self._worked.append((now, worked_s))
        self._forget_before(now - BUSY_WINDOW_S)  # held for a second at most, however often asked
        return page

    def busy(self) -> float:
        """The share of its processes' time the pool spent making pages over the last `BUSY_WINDOW_S` (1.0: every
        process at work all the time, so the CPU is what pages wait for). A burst of pages that queues for a moment
        (at Stripe's latency, pages come back in waves) is not that; 0 for no pool (the event loop's lag says it)."""
        if not self.processes:
            return 0.0
        self._forget_before(time.monotonic() - BUSY_WINDOW_S)
        return sum(worked for _, worked in self._worked) / (self.processes * BUSY_WINDOW_S)

    def reads_alone(self, tenant_id: str) -> bool:
        """Whether the tenant's pages are read alone (a page of it killed the process reading it alone)."""
        return tenant_id in self._read_alone

    def read_alone(self, tenant_id: str) -> None:
        """Reads the tenant's pages alone from now on (a page of it killed such a process in another worker)."""
        self._read_alone.add(tenant_id)

    def read_together(self, tenant_id: str) -> None:
        """Reads the tenant's pages in the pool again, its deaths forgotten (a person cleared its mark: a release
        reads the page that was to blame safely). A page that kills a process again is its first death anew. The
        process that read its pages alone stays until another tenant needs one (it has read only this tenant's)."""
        self._read_alone.discard(tenant_id)
        self._first_death.pop(tenant_id, None)
        self._last_death.pop(tenant_id, None)

    def died_since(self, tenant_id: str, since: float) -> bool:
        """Whether a page of the tenant killed the process reading it alone at or after `since` (monotonic)."""
        return self._last_death.get(tenant_id, -math.inf) >= since

    async def _made_alone(self, resource: str, args: tuple[bytes, str, str, bool, str | None, datetime],
                          started: float) -> tuple[ListedPage, float]:
        """The page made in a process where it is the only page, checked alive just before and used for no other
        tenant: if that process dies, this page or an earlier one of its tenant killed it."""
        tenant_id = args[2]
        loop = asyncio.get_running_loop()
        async with self._alone_turns.turn(tenant_id):
            if self._last_death.get(tenant_id, -math.inf) > started:  # in flight with the page blamed just now
                raise PagePoolBrokenError(f"another {resource} page of this account killed the process reading it")
            executor = await self._alone_process(tenant_id)
            process = next(iter(_processes_of(executor)), None)
            try:
                return await loop.run_in_executor(executor, self._limited_page, *args)
            except BrokenProcessPool as exc:
                if exc.__cause__ is not None:  # the stdlib gives a cause only when this side could not read the result
                    self._drop_alone()  # (out of memory here, say): the process was alive, and the page not to blame
                    raise PagePoolBrokenError(f"a {resource} page read alone could not be received") from None
            except Exception:
                raise  # the page's own error (PageBugError): the process is fine
            except BaseException:  # cancelled, the page perhaps still in there: the next one gets its own process
                self._drop_alone()
                raise
            # Blamed before anything else is awaited, so a cancellation from here on keeps the blame.
            self.read_alone(tenant_id)
            first = self._first_death.get(tenant_id)
            now = self._last_death[tenant_id] = time.monotonic()
            convicted = first is not None and first < started and now - first < CONVICTION_WINDOW_S
            if first is None or now - first >= CONVICTION_WINDOW_S:
                self._first_death[tenant_id] = now
            how = await _how_it_ended(process)
            self._drop_alone()
            log.error("a page ended the process reading it alone; the tenant's pages are read alone from now on",
                      tenant_id=tenant_id, resource=resource, process=how, again=first is not None,
                      cpu_limit_s=self.cpu_limit_s)
            if convicted:
                raise PageCrashError(
                    f"the process reading a {resource} page of this account alone {how}, twice") from None
            raise PagePoolBrokenError(f"the process reading a {resource} page alone {how}") from None

    async def _alone_process(self, tenant_id: str) -> ProcessPoolExecutor:
        """The one-process executor for the tenant's pages read alone, checked alive now (a death while idle is no
        page's doing), started anew for another tenant. Raises PagePoolBrokenError if no process starts."""
        if self._alone_tenant != tenant_id:
            self._drop_alone()
        loop = asyncio.get_running_loop()
        for _ in range(2):
            if self._alone is None:
                self._alone, self._alone_tenant = _new_executor(1), tenant_id
            try:
                await loop.run_in_executor(self._alone, os.getpid)
                return self._alone
            except BaseException as exc:
                self._drop_alone()
                if not isinstance(exc, (BrokenProcessPool, OSError)):
                    raise
        raise PagePoolBrokenError("a process to read a page alone did not start")

    def _drop_alone(self) -> None:
        if self._alone is not None:
            _end(self._alone)
        self._alone, self._alone_tenant = None, None

    def _forget_before(self, since: float) -> None:
        while self._worked and self._worked[0][0] < since:
            self._worked.popleft()

    async def warm(self) -> None:
        """Starts the pool's processes now, not with the first page (whose time would count their start-up)."""
        if self.processes:
            await asyncio.gather(*(self._in_pool(os.getpid) for _ in range(self.processes)))

    async def _in_pool(self, fn: Callable[..., _T], *args: Any) -> _T:
        executor = _pools.get(self.processes) or _start(self.processes)
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except (BrokenProcessPool, OSError, asyncio.CancelledError) as exc:
            # OSError: a process could not be started (out of memory, say); cancelled: not this task (it would be
            # cancelling) but its page, queued in a pool let go of for that.
            task = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and (task is None or task.cancelling()):
                raise
            if _pools.get(self.processes) is executor:
                del _pools[self.processes]
                _end(executor, kill=isinstance(exc, BrokenProcessPool))
                log.warning("a page pool process died or did not start; the pages it held are read again alone, "
                            "one at a time", error=type(exc).__name__)
            raise PagePoolBrokenError("a process turning listed pages into records died") from exc


class TenantTurns:
    """One holder at a time, taking turns in the order they asked, except that a tenant's turn goes first to the
    tenant whose page was last (a page read alone after another tenant's costs a new process: after a pool death,
    pages of a few tenants wait in any order)."""

    def __init__(self) -> None:
        self._busy = False
        self._waiting: list[tuple[str, asyncio.Future[None]]] = []  # in the order they asked

    @contextlib.asynccontextmanager
    async def turn(self, tenant_id: str) -> AsyncIterator[None]:
        """Waits for the turn, holds it for the block, and hands it on."""
        if self._busy or self._waiting:
            waiter = (tenant_id, asyncio.get_running_loop().create_future())
            self._waiting.append(waiter)
            try:
                await waiter[1]
            except BaseException:
                if waiter[1].done() and not waiter[1].cancelled():
                    self._hand_on(tenant_id)  # handed the turn as it was cancelled: the next one's
                else:
                    self._waiting.remove(waiter)
                raise
        self._busy = True
        try:
            yield
        finally:
            self._hand_on(tenant_id)

    def _hand_on(self, last_tenant: str) -> None:
        """Hands the turn to a waiter of `last_tenant` if any, else to the first that asked (synchronous: nothing
        can interrupt it)."""
        self._busy = False
        if not self._waiting:
            return
        waiter = next((w for w in self._waiting if w[0] == last_tenant), self._waiting[0])
        self._waiting.remove(waiter)
        self._busy = True
        waiter[1].set_result(None)


def _processes_of(executor: ProcessPoolExecutor) -> list[multiprocessing.process.BaseProcess]:
    """The executor's live processes (the stdlib keeps them in a private dict, None once shut down)."""
    return list((getattr(executor, "_processes", None) or {}).values())


def _end(executor: ProcessPoolExecutor, kill: bool = True) -> None:
    """Lets go of an executor, its queued pages cancelled, and unless told otherwise kills its processes: a broken
    one's ignore the SIGTERM the stdlib sends them (`_die_with`), so left alone, a survivor blocks writing a result no
    one reads and the executor's thread waits for it for good."""
    for process in _processes_of(executor) if kill else []:
        if process.exitcode is None:  # not reaped yet (a dead one's status is kept: killing a zombie changes nothing)
            with contextlib.suppress(OSError, ValueError):
                process.kill()
    executor.shutdown(wait=False, cancel_futures=True)


async def _how_it_ended(process: multiprocessing.process.BaseProcess | None) -> str:
    """What ended a pool process that died, for the log and the error: the limit, a signal, or an exit code."""
    if process is None:
        return "ended"
    await asyncio.to_thread(process.join, 5.0)  # dead already
    code = process.exitcode
    for _ in range(100):  # the stdlib's thread may have reaped it first: it sets the status just after
        if code is not None:
            break
        await asyncio.sleep(0.01)
        code = process.exitcode
    if code is None:
        return "ended"
    return _SIGNAL_EXIT.get(code, f"was ended by signal {-code}") if code < 0 else f"exited with code {code}"


def _start(processes: int) -> ProcessPoolExecutor:
    executor = _pools[processes] = _new_executor(processes)
    return executor


def _new_executor(processes: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"), initializer=_die_with,
                               initargs=(os.getpid(),))


def _within(cpu_limit_s: float, make_page: Callable[..., _T], *args: Any) -> _T:
    """In a pool process: `make_page(*args)`, the process ended by the kernel (SIGPROF) if it uses `cpu_limit_s` of
    CPU time; the timer is off again before the process takes its next task, however the page ended."""
    signal.setitimer(signal.ITIMER_PROF, cpu_limit_s)
    try:
        return make_page(*args)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)


def _listed_page_in_pool(body: bytes, resource: str, tenant_id: str, livemode: bool, api_version: str | None,
                         asked_at: datetime) -> tuple[ListedPage, float]:
    """`listed_page` and the seconds it took here, with an unexpected error's message and traceback kept in the pool
    process (see PageBugError)."""
    started = time.monotonic()
    try:
        return listed_page(body, resource, tenant_id, livemode, api_version, asked_at), time.monotonic() - started
    except Exception as exc:
        raise PageBugError(error_site(exc)) from None


def _die_with(worker_pid: int) -> None:
    """In each pool process: killed when the worker that started it ends, and deaf to the signals a terminal or a
    service manager sends the whole process group (the worker stops its imports itself, and finishes its pages in
    flight, which need this process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGPROF, signal.SIG_DFL)  # a page that uses up its CPU limit ends the process (`_within`)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGPROF})  # a blocked mask is inherited across spawn
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != worker_pid:  # the worker ended before the signal was asked for
        os._exit(0)
