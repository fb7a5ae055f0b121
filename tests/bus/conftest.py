"""The bus suite runs against one more implementation: ``RedisBus`` on a real Redis Cluster.

Here ``bus`` is parametrized over ``memory``, ``redis`` (one node) and
``cluster`` (3 masters + 3 replicas). Creating a cluster takes about two
seconds, so one cluster serves the whole session: it runs in a thread with
its own Trio loop (pytest-trio gives each test a loop of its own), and each
test gets it flushed (``FLUSHALL`` on every master) behind a fresh client.
Tests that kill nodes start a cluster of their own.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
import trio

from bus.base import Bus
from bus.cluster import ClusterClient, open_redis_client
from bus.memory import MemoryBus
from bus.redis import RedisBus
from switchboard.testing.redis_cluster import RedisClusterHandle, open_redis_cluster
from switchboard.testing.redis_server import open_redis_server


class _ClusterThread:
    """``open_redis_cluster`` kept open in a thread until ``stop``."""

    def __init__(self) -> None:
        self._ready: queue.Queue[RedisClusterHandle | BaseException] = queue.Queue()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        try:
            async with open_redis_cluster() as cluster:
                self._ready.put(cluster)
                await self._stop.wait()
        except BaseException as exc:
            self._ready.put(exc)
            raise

    def start(self) -> RedisClusterHandle:
        self._thread.start()
        got = self._ready.get(timeout=120)
        if isinstance(got, BaseException):
            raise got
        return got

    def stop(self) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(timeout=30)


@pytest.fixture(scope="session")
def shared_cluster() -> Iterator[RedisClusterHandle]:
    """One Redis Cluster for the session's bus tests (nodes killed at the end)."""
    runner = _ClusterThread()
    try:
        yield runner.start()
    finally:
        runner.stop()


async def flushed_cluster_client(cluster: RedisClusterHandle) -> ClusterClient:
    """A fresh client on the shared cluster, every master emptied first."""
    client = await open_redis_client(cluster.url)
    assert isinstance(client, ClusterClient)
    for master in client.masters:
        node = client._node(master)
        await node.execute("FLUSHALL")
        await node.execute("SCRIPT", "FLUSH")
    return client


@pytest.fixture
async def cluster_client(shared_cluster: RedisClusterHandle) -> AsyncIterator[ClusterClient]:
    """A client on the shared cluster, emptied for this test; closed afterwards."""
    client = await flushed_cluster_client(shared_cluster)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis", "cluster"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    """A fresh, empty bus of each implementation (one node and a cluster for Redis)."""
    if request.param == "memory":
        memory = MemoryBus()
        try:
            yield memory
        finally:
            await memory.aclose()
        return
    if request.param == "cluster":
        cluster: RedisClusterHandle = request.getfixturevalue("shared_cluster")
        on_cluster = RedisBus(await flushed_cluster_client(cluster))
        try:
            yield on_cluster
        finally:
            await on_cluster.aclose()
        return
    async with open_redis_server() as server:
        redis = RedisBus.from_url(server.url)
        try:
            yield redis
        finally:
            await redis.aclose()
