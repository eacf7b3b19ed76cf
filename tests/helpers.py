"""Test helpers shared across packages."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

POLL_INTERVAL_S = 0.05


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, what: str = "condition") -> None:
    """Polls `condition` until it holds; fails the test after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL_S)
