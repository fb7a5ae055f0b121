"""Run a throwaway Redis Cluster for tests and benchmarks (``open_redis_cluster``).

Its nodes are ``redis_server`` handles started with the cluster options, so
they share that module's loopback, temporary directory, TLS and ACL set-up.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import structlog
import trio

from bus.base import BusError
from switchboard.testing.redis_server import (
    PORT_ATTEMPTS,
    STARTUP_TIMEOUT_S,
    AclUser,
    RedisServerError,
    RedisServerHandle,
    free_port,
)
from switchboard.testing.tls import TestCertificates

log = structlog.get_logger()


class RedisClusterHandle:
    """A running Redis Cluster started by ``open_redis_cluster``."""

    def __init__(self, nodes: list[RedisServerHandle]) -> None:
        self.nodes = nodes

    @property
    def url(self) -> str:
        """The first node's URL: a client discovers the rest from it."""
        return self.nodes[0].url

    def node(self, port: int) -> RedisServerHandle:
        """The node listening on ``port``."""
        for node in self.nodes:
            if node.port == port:
                return node
        raise RedisServerError(f"no node of this cluster listens on {port}")

    async def wait_healthy(self, *, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Wait until the running nodes agree and every master has its replicas.

        Each running node must say ``cluster_state:ok`` with all 16384 slots
        served, and each master must have as many synchronised replicas as
        ``CLUSTER SHARDS`` gives it running nodes (``WAIT``: a replica counts
        once its initial sync is done, so it can take over). After a failover
        this waits for the promoted replica to be known everywhere. Polls:
        the cluster bus has no event to wait on.
        """
        from bus.resp import RedisClient  # the launcher needs a client only here

        live = {n.port: RedisClient.from_url(n.url) for n in self.nodes if n.running}
        deadline = trio.current_time() + timeout_s
        try:
            while not await self._agree(live):
                if trio.current_time() > deadline:
                    raise RedisServerError("the Redis Cluster did not become healthy")
                await trio.sleep(0.02)
        finally:
            for client in live.values():
                await client.aclose()

    @staticmethod
    async def _agree(live: dict[int, Any]) -> bool:
        try:
            for client in live.values():
                info = str(await client.execute("CLUSTER", "INFO"))
                if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                    return False
            first = next(iter(live.values()))
            for shard in await first.execute("CLUSTER", "SHARDS"):
                nodes = [dict(zip(n[::2], n[1::2], strict=True)) for n in _fields(shard)["nodes"]]
                ports = [int(n.get("port") or n["tls-port"]) for n in nodes]
                # A killed master stays listed (health "fail") until it returns.
                masters = [
                    p
                    for p, n in zip(ports, nodes, strict=True)
                    if n["role"] == "master" and p in live
                ]
                replicas = sum(1 for p in ports if p in live) - 1
                if replicas < 0:
                    continue  # a killed master that lost its slots, alone in its shard
                if len(masters) != 1 or masters[0] not in live:
                    return False
                if await live[masters[0]].execute("WAIT", replicas, 100) < replicas:
                    return False
        except BusError:
            return False
        return True


def _fields(flat: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _cli_args(tls: TestCertificates | None, user: AclUser | None) -> list[str]:
    args: list[str] = []
    if tls is not None:
        args += [
            "--tls", "--cacert", str(tls.ca_file),
            "--cert", str(tls.client_cert), "--key", str(tls.client_key),
        ]  # fmt: skip
    if user is not None:
        args += ["--user", user.name, "--pass", user.password, "--no-auth-warning"]
    return args


def _node_args(
    node_timeout_ms: int, tls: TestCertificates | None, user: AclUser | None
) -> list[str]:
    """What makes one redis-server a cluster node."""
    extra = [
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(node_timeout_ms),
        "--cluster-port", str(free_port()),
        # A replica takes over whatever its last contact with the master.
        "--cluster-replica-validity-factor", "0",
        # Replicas sync at once (the default waits 5 s for more of them).
        "--repl-diskless-sync-delay", "0",
    ]  # fmt: skip
    if tls is not None:
        extra += ["--tls-cluster", "yes", "--tls-replication", "yes"]
    if user is not None:
        extra += ["--masteruser", user.name, "--masterauth", user.password]
    return extra


async def _start_node(
    node: RedisServerHandle,
    node_timeout_ms: int,
    tls: TestCertificates | None,
    user: AclUser | None,
) -> None:
    """Start one node. A port picked free but taken before the node bound it
    (other test runs start servers on this machine too) is replaced, with a
    fresh cluster-bus port, as ``open_redis_server`` replaces a taken port."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            await node.start()
            return
        except RedisServerError:
            if attempt == PORT_ATTEMPTS:
                raise
            log.info("redis_cluster.port_taken", port=node.port, attempt=attempt)
            (node.workdir / "nodes.conf").unlink(missing_ok=True)
            node.port = free_port()
            node.extra_args = tuple(_node_args(node_timeout_ms, tls, user))


async def _create(
    cli: str,
    nodes: Sequence[RedisServerHandle],
    replicas: int,
    tls: TestCertificates | None,
    user: AclUser | None,
) -> None:
    """``redis-cli --cluster create``: join the nodes, split the slots evenly."""
    # Bounded: redis-cli waits forever for nodes that cannot meet.
    with trio.fail_after(STARTUP_TIMEOUT_S * 3):
        result = await trio.run_process(
            [
                cli,
                *_cli_args(tls, user),
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    if result.returncode != 0:
        raise RedisServerError(
            f"redis-cli --cluster create failed: {result.stdout.decode()[-1500:]}"
            f"{result.stderr.decode()[-500:]}"
        )


@contextlib.asynccontextmanager
async def open_redis_cluster(
    *,
    masters: int = 3,
    replicas: int = 1,
    tls: TestCertificates | None = None,
    user: AclUser | None = None,
    node_timeout_ms: int = 1000,
) -> AsyncIterator[RedisClusterHandle]:
    """Start a real Redis Cluster on loopback (``masters`` x ``1 + replicas`` nodes).

    Nodes start in parallel, each in a temporary directory with its own free
    client and cluster-bus ports; ``redis-cli --cluster create`` joins them
    and splits the slots evenly. ``node_timeout_ms`` is how long a master may
    be silent before its replica takes over. Every node is killed on exit.
    """
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RedisServerError("redis-cli is not on PATH")
    count = masters * (1 + replicas)
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[RedisServerHandle] = []
        for _ in range(count):
            extra = _node_args(node_timeout_ms, tls, user)
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="switchboard-cluster-"))
            node = RedisServerHandle(free_port(), Path(tmp), tls=tls, user=user, extra_args=extra)
            stack.push_async_callback(node.stop)
            nodes.append(node)
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(_start_node, node, node_timeout_ms, tls, user)
        await _create(cli, nodes, replicas, tls, user)
        handle = RedisClusterHandle(nodes)
        await handle.wait_healthy()
        log.debug("redis_cluster.started", ports=[n.port for n in nodes])
        yield handle
