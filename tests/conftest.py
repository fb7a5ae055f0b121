"""Shared fixtures.

Redis fixtures start a real, empty ``redis-server`` per test on a free
loopback port (start-up is ~10-20 ms, so no session sharing is needed and no
test sees another's data). ``bus`` is parametrized over both
implementations: a test that takes it runs against ``MemoryBus`` and against
``RedisBus``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from bus.base import Bus
from bus.memory import MemoryBus
from bus.redis import RedisBus
from switchboard.testing.redis_server import RedisServerHandle, open_redis_server

# The switchboard processes the tests start must not read a developer's own
# .env (with a real auth token, every unsigned test call would get a 403).
os.environ.setdefault("SWITCHBOARD_ENV_FILE", os.devnull)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``pytest -n N --dist loadgroup`` (``make test``) the tests that start
    several processes run one after another on one worker, beside the rest:
    two of them at once on two cores would only slow both."""
    for item in items:
        if item.get_closest_marker("system") is not None:
            item.add_marker(pytest.mark.xdist_group("processes"))


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServerHandle]:
    """A fresh redis-server for this test; killed afterwards."""
    async with open_redis_server() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServerHandle) -> str:
    """``redis://127.0.0.1:PORT/0`` of this test's fresh redis-server."""
    return redis_server.url


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    """A fresh, empty bus of each implementation."""
    if request.param == "memory":
        memory = MemoryBus()
        try:
            yield memory
        finally:
            await memory.aclose()
        return
    async with open_redis_server() as server:
        redis = RedisBus.from_url(server.url)
        try:
            yield redis
        finally:
            await redis.aclose()
