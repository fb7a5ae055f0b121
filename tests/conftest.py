"""Shared fixtures.

Bus fixtures: ``bus`` is parametrized over both implementations, so a test
that takes it runs against ``MemoryBus`` and against ``RedisBus`` on a real,
fresh ``redis-server``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bus.base import Bus
from bus.memory import MemoryBus


@pytest.fixture(params=["memory"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    """A fresh bus of each implementation."""
    b = MemoryBus()
    try:
        yield b
    finally:
        await b.aclose()
