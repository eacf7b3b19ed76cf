"""Fixtures of the projection tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest


@pytest.fixture
async def pool(clean_database: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the test database (the projector, stores and dumps share it)."""
    pool = await asyncpg.create_pool(clean_database, min_size=1, max_size=4)
    yield pool
    await pool.close()
