"""The Redis Cluster launcher when another process takes a port it picked.

``free_port`` asks the OS for a free port and lets it go; another test run
on the machine may bind it before the node does. The node must then start
on other ports instead of failing the whole session's cluster.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import trio

from switchboard.testing import redis_cluster
from switchboard.testing.redis_cluster import open_redis_cluster
from switchboard.testing.redis_server import free_port

pytestmark = pytest.mark.system


@pytest.fixture
def taken() -> Iterator[list[int]]:
    """Two ports some other process is listening on."""
    sockets = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen()
        sockets.append(s)
    yield [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()


async def test_a_node_whose_ports_were_taken_starts_on_others(
    taken: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    handed_out = iter(taken)
    # The first node's cluster-bus and client ports are picked first: both taken.
    monkeypatch.setattr(redis_cluster, "free_port", lambda: next(handed_out, None) or free_port())
    with trio.fail_after(120):
        async with open_redis_cluster(masters=3, replicas=0) as cluster:
            await cluster.wait_healthy()
            ports = [node.port for node in cluster.nodes]
    assert len(set(ports)) == 3 and not set(ports) & set(taken)
