"""The pages one worker has in flight, shared among the connections it imports (ingestor/sources/fair_share.py)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from ingestor.sources.fair_share import FairShares


async def _settled() -> None:
    """Lets every task that can run now run (the waiters are woken by releases, not by time)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_rate_limited_tenant_cannot_hold_every_page_in_flight() -> None:
    """Its slices wait for tokens with their permits: with one pool for all, two such tenants held the worker's 128
    and every other import stood still. It holds its share; the other connection gets the rest at once."""
    shares = FairShares(4)
    async with AsyncExitStack() as held:
        held.enter_context(shares.importing("throttled"))
        held.enter_context(shares.importing("healthy"))
        for _ in range(2):
            await held.enter_async_context(shares.permit("throttled"))
        more = asyncio.create_task(held.enter_async_context(shares.permit("throttled")))
        await _settled()
        assert not more.done()  # over its share: it waits, however many permits are free
        for _ in range(2):
            await asyncio.wait_for(held.enter_async_context(shares.permit("healthy")), 1)  # at once
        assert shares.held("throttled") == 2 and shares.held("healthy") == 2
        more.cancel()
        await asyncio.gather(more, return_exceptions=True)
        assert shares.held("throttled") == 2  # a waiter that gave up took nothing


async def test_a_connection_importing_alone_may_use_every_page_in_flight() -> None:
    shares = FairShares(4)
    async with AsyncExitStack() as held:
        held.enter_context(shares.importing("alone"))
        for _ in range(4):
            await asyncio.wait_for(held.enter_async_context(shares.permit("alone")), 1)
        assert shares.held("alone") == 4


async def test_when_a_connection_ends_its_pass_the_others_shares_grow() -> None:
    shares = FairShares(4)
    async with AsyncExitStack() as stays:
        stays.enter_context(shares.importing("stays"))
        async with AsyncExitStack() as leaves:
            leaves.enter_context(shares.importing("leaves"))
            for _ in range(2):
                await leaves.enter_async_context(shares.permit("leaves"))
            for _ in range(2):
                await stays.enter_async_context(shares.permit("stays"))
            waiting = [asyncio.create_task(stays.enter_async_context(shares.permit("stays"))) for _ in range(2)]
            await _settled()
            assert not any(w.done() for w in waiting)
        await asyncio.wait_for(asyncio.gather(*waiting), 1)  # its pages done, its pass over: all four are free
        assert shares.held("stays") == 4 and shares.held("leaves") == 0


async def test_a_big_import_beside_small_passes_borrows_the_pages_they_leave_free() -> None:
    """Held to its share (16 over four connections: 4), one big import beside three small passes paged at a quarter
    of what the worker allows, with most pages free. It borrows free ones, as long as a share's worth stays free; and
    a small pass wanting more within its share goes before it."""
    shares = FairShares(16)
    async with AsyncExitStack() as held:
        for connection in ("big", "small-1", "small-2", "small-3"):
            held.enter_context(shares.importing(connection))
        for small in ("small-1", "small-2", "small-3"):
            await held.enter_async_context(shares.permit(small))
        borrowed = []
        for _ in range(16):
            task = asyncio.create_task(held.enter_async_context(shares.permit("big")))
            await _settled()
            borrowed.append(task)
        assert shares.held("big") == 16 - 4 - 3  # all but a share's worth, beside the small passes' three
        within_share = asyncio.create_task(held.enter_async_context(shares.permit("small-1")))
        await asyncio.wait_for(within_share, 1)  # from the share's worth left free
        for task in borrowed:
            task.cancel()
        await asyncio.gather(*borrowed, return_exceptions=True)


async def test_a_waiter_cancelled_as_a_page_is_let_go_leaves_quietly() -> None:
    """Cancelled in the same turn of the loop as a release handed its place on: it raised ValueError, not
    CancelledError (a worker stopping with slices queued beyond their share)."""
    shares = FairShares(1)
    async with AsyncExitStack() as held:
        held.enter_context(shares.importing("a"))
        holding = AsyncExitStack()
        await holding.enter_async_context(shares.permit("a"))
        waiter = asyncio.create_task(shares.permit("a").__aenter__())
        await _settled()
        waiter.cancel()
        await holding.aclose()  # the release, before the cancelled waiter runs again
        results = await asyncio.gather(waiter, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert shares.held("a") == 0
