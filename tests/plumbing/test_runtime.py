"""Stopping background tasks: a task that swallows its cancellation does not keep a process from stopping."""

from __future__ import annotations

import asyncio
import contextlib

from structlog.testing import capture_logs

from plumbing.runtime import cancel_and_wait, log_tasks


async def test_each_task_is_logged_with_the_coroutines_it_waits_in_and_no_values() -> None:
    """On SIGUSR1 a worker logs where each of its tasks waits: enough to see which await holds an import that makes no
    progress, and never a value (arguments may hold a key)."""
    never = asyncio.Event()

    async def wait_for_tokens(key: str) -> None:
        await never.wait()

    async def page_slice(key: str) -> None:
        await wait_for_tokens(key)

    task = asyncio.create_task(page_slice("rk_live_secret"), name="import conn_1")
    await asyncio.sleep(0)  # the task reaches its first await
    with capture_logs() as logs:
        log_tasks()
    task.cancel()
    mine = next(entry for entry in logs if entry.get("task") == "import conn_1")
    assert [step.split(":")[0] for step in mine["waits_in"].split(" > ")] == [
        "test_each_task_is_logged_with_the_coroutines_it_waits_in_and_no_values.<locals>.page_slice",
        "test_each_task_is_logged_with_the_coroutines_it_waits_in_and_no_values.<locals>.wait_for_tokens",
        "Event.wait"]
    assert "rk_live_secret" not in repr(logs)
    assert logs[-1]["event"] == "tasks logged" and logs[-1]["count"] >= 2


async def test_a_task_that_swallows_its_cancellation_is_cancelled_again() -> None:
    """aiokafka's close() awaits its own cancelled tasks under suppress(CancelledError): a check cancelled there ran
    on to its five-minute deadline, and the worker's shutdown waited for it."""
    in_close = asyncio.Event()

    async def check_after_import() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # as aiokafka's close() does
            in_close.set()
            await asyncio.Event().wait()
        await asyncio.Event().wait()  # the check's wait for the projection: never ends by itself

    task = asyncio.create_task(check_after_import())
    await in_close.wait()
    await asyncio.wait_for(cancel_and_wait([task], again_s=0.2), timeout=30)
    assert task.cancelled()


async def test_every_task_is_waited_for_even_after_one_failed() -> None:
    started = asyncio.Event()
    cleaned_up: list[str] = []

    async def fails_when_cancelled() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    async def cleans_up() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # a cleanup that awaits: it still runs to its end
            cleaned_up.append("done")

    failing, cleaning = asyncio.create_task(fails_when_cancelled()), asyncio.create_task(cleans_up())
    await started.wait()
    await asyncio.wait_for(cancel_and_wait([failing, cleaning]), timeout=30)
    assert cleaned_up == ["done"]
    assert isinstance(failing.exception(), RuntimeError)
    assert cleaning.cancelled()


async def test_nothing_to_cancel_returns_at_once() -> None:
    await asyncio.wait_for(cancel_and_wait([]), timeout=30)
