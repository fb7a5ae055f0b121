"""Redis Cluster for the Trio client: slots, routing, redirections, failover.

``ClusterClient`` has the interface of ``bus.resp.RedisClient`` (``execute``,
``execute_blocking``, ``pipeline``, ``aclose``) and is built from one
``RedisClient`` per master node, so every node gets the single-node rules
unchanged: one request in flight per connection, automatic pipelining, a
dedicated connection per blocking read, and an interrupted connection closed,
never reused. On top of that:

- **Routing.** A command goes to the master serving the slot of its key
  (``key_slot``: CRC16 of the hash tag, mod 16384; the slot rules are
  :mod:`bus.slots`). Where a command's keys
  are is known per command name (``keys_of``); keyless commands go to any
  node.
- **One slot per command.** A command or script with several keys in
  different slots is refused before it is sent (``CrossSlot``, a
  ``CommandError``): on a cluster it could not be atomic.
- **Pipelines** are split by node, sent to the nodes concurrently, and the
  replies put back in the caller's order. Commands for one slot keep their
  order (they travel in one node's pipeline).
- **MOVED** (the slot lives elsewhere now): the map is updated for that slot,
  a full refresh is scheduled, and the command is sent again to the new node.
  **ASK** (a slot being migrated): ``ASKING`` and the command go to the target
  node together, once; the map is left alone.
- **Topology.** The map comes from ``CLUSTER SLOTS`` of any node that answers
  (the start node first, then every node seen). It is refreshed after a
  redirection, a lost connection to a node, and ``CLUSTERDOWN``.
- **Failover.** A killed master fails its in-flight commands with
  ``ConnectionLost`` (retriable: may or may not have run, as on one node); the
  callers' backoff loops retry, and by then the map names the promoted
  replica. ``CLUSTERDOWN``/``TRYAGAIN`` while the cluster elects a new master
  are ``ClusterUnavailable``, retriable too. At-least-once holds because
  nothing new is promised: a retried write may land twice (ids differ, the
  handlers are idempotent), and a write acknowledged by the old master but
  not yet copied to its replica is lost with it, as Redis documents for
  asynchronous replication, as is what a master paused past the node timeout
  took; writes that must survive are confirmed (:mod:`bus.replicated`).

Detection (``open_redis_client``): ``CLUSTER SLOTS`` on the URL's node. A
node without cluster support answers with an error and gets a plain
``RedisClient``. (Not ``INFO``: ACL puts it in ``@dangerous``, too much to grant.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import structlog
import trio

from bus.base import BusError, CommandError, ConnectionLost
from bus.resp import Arg, Command, RedisAddress, RedisClient
from bus.slots import (
    SLOTS,
    CrossSlot,
    crc16,
    key_slot,
    keys_of,
    redirect_of,
    slot_of,
    slot_unavailable,
)

__all__ = [
    "MAX_REDIRECTS",
    "SLOTS",
    "ClusterClient",
    "ClusterUnavailable",
    "CommandClient",
    "CrossSlot",
    "crc16",
    "key_slot",
    "keys_of",
    "open_redis_client",
    "slot_of",
]

MAX_REDIRECTS = 5
# Between two map refreshes forced by errors (a dead node fails many commands).
_MIN_REFRESH_INTERVAL_S = 0.05


log = structlog.get_logger()


class ClusterUnavailable(BusError):
    """The cluster cannot serve the slot right now (``CLUSTERDOWN``, ``TRYAGAIN``, ...).

    Retriable: a failover or a slot migration is under way. The command did not run.
    """

    retriable = True


class CommandClient(Protocol):
    """What ``RedisBus`` needs of a client: one node or a cluster."""

    address: RedisAddress

    async def execute(self, *args: Arg) -> Any: ...

    async def execute_blocking(self, *args: Arg) -> Any: ...

    async def pipeline(
        self, commands: Sequence[Command], *, raise_on_error: bool = True
    ) -> list[Any]: ...

    async def aclose(self) -> None: ...


NodeKey = tuple[str, int]


class ClusterClient:
    """A Redis Cluster behind the ``RedisClient`` interface. See the module docstring.

    ``address`` is the start node; its credentials and TLS settings are used for
    every node. ``client_kwargs`` go to each node's ``RedisClient``."""

    def __init__(self, address: RedisAddress, **client_kwargs: Any) -> None:
        if address.db:
            raise CommandError(f"a Redis Cluster has only database 0, not {address.db}")
        self.address = address
        self._kwargs = client_kwargs
        self._nodes: dict[NodeKey, RedisClient] = {}
        self._slots: list[NodeKey | None] = [None] * SLOTS
        self._replicas: dict[NodeKey, int] = {}  # per master, as the map lists them
        self._known: list[NodeKey] = [(address.host, address.port)]
        self._refresh_lock = trio.Lock()
        self._stale = True
        self._last_refresh = -1e9
        self._closed = False

    # -- the map ----------------------------------------------------------------

    def _node(self, key: NodeKey) -> RedisClient:
        client = self._nodes.get(key)
        if client is None:
            if self._closed:
                raise BusError("redis client is closed")
            client = RedisClient(self.address.at(*key), **self._kwargs)
            self._nodes[key] = client
        return client

    @property
    def masters(self) -> list[NodeKey]:
        """The masters in the current map, in slot order."""
        return list(dict.fromkeys(n for n in self._slots if n is not None))

    def node_for_slot(self, slot: int) -> NodeKey | None:
        """The master the map names for ``slot`` (None before the first refresh)."""
        return self._slots[slot]

    async def refresh(self, *, force: bool = False) -> None:
        """Read the slot map from the first node that answers ``CLUSTER SLOTS``;
        ``ConnectionLost`` when no known node answers."""
        seen = self._last_refresh
        async with self._refresh_lock:
            if self._last_refresh != seen and not force:
                return  # another task refreshed while we waited
            if not force and trio.current_time() - self._last_refresh < _MIN_REFRESH_INTERVAL_S:
                return
            last_error: BaseException | None = None
            candidates = list(dict.fromkeys([*self.masters, *self._known]))
            for node in candidates:
                try:
                    reply = await self._node(node).execute("CLUSTER", "SLOTS")
                except (ConnectionLost, CommandError) as exc:
                    last_error = exc
                    continue
                self._apply(node, reply)
                return
            raise ConnectionLost(f"no node of the cluster answered: {last_error}")

    def _apply(self, source: NodeKey, reply: Sequence[Any]) -> None:
        slots: list[NodeKey | None] = [None] * SLOTS
        known = list(self._known)
        counts: dict[NodeKey, int] = {}
        for start, end, master, *replicas in reply:
            counts[node := self._node_key(master, source)] = len(replicas)
            for slot in range(int(start), int(end) + 1):
                slots[slot] = node
            for member in (master, *replicas):
                key = self._node_key(member, source)
                if key not in known:
                    known.append(key)
        before, self._slots, self._known, self._replicas = self.masters, slots, known, counts
        self._stale = False
        self._last_refresh = trio.current_time()
        after = self.masters
        if before != after:
            # Clients of nodes that stopped being masters stay in the pool: a
            # failed master that comes back rejoins as a replica and may be
            # promoted again; its broken connections were dropped already.
            log.info(
                "redis.cluster_map",
                masters=[f"{h}:{p}" for h, p in after],
                covered=sum(1 for s in slots if s is not None),
            )

    @staticmethod
    def _node_key(entry: Sequence[Any], source: NodeKey) -> NodeKey:
        host = str(entry[0])
        # An empty or '?' host means "the address you reached me on".
        return (source[0] if host in ("", "?") else host, int(entry[1]))

    def _target_now(self, slot: int | None) -> RedisClient | None:
        """The node for ``slot`` from a fresh map, without awaiting; None: refresh first."""
        if self._stale:
            return None
        node = self._slots[slot] if slot is not None else self._any_master()
        return None if node is None else self._node(node)

    def _any_master(self) -> NodeKey | None:
        for node in self._slots:
            if node is not None:
                return node
        return None

    async def _target(self, slot: int | None) -> RedisClient:
        client = self._target_now(slot)
        if client is not None:
            return client
        await self.refresh(force=not self._stale)
        node = self._slots[slot] if slot is not None else self._any_master()
        if node is None:
            raise ClusterUnavailable(f"CLUSTERDOWN no node serves slot {slot}")
        return self._node(node)

    async def master_of(self, slot: int, *, recheck_s: float) -> tuple[RedisClient, int]:
        """The master serving ``slot`` and how many replicas the map lists for it. A map
        listing none is read again once ``recheck_s`` old: replicas join late."""
        client = await self._target(slot)  # sets self._slots[slot]
        count = self._replicas.get(self._slots[slot] or ("", 0), 0)
        if count == 0 and trio.current_time() - self._last_refresh >= recheck_s:
            await self.refresh(force=True)
            client = await self._target(slot)
            count = self._replicas.get(self._slots[slot] or ("", 0), 0)
        return client, count

    def lost(self, node: RedisClient) -> None:
        """A node's connection broke: the map may be wrong (a failover)."""
        self._stale = True
        log.info("redis.cluster_node_lost", address=str(node.address))

    # -- commands ---------------------------------------------------------------

    async def _run(self, args: Sequence[Arg], *, blocking: bool) -> Any:
        slot = slot_of(args)
        asking: NodeKey | None = None
        for _ in range(MAX_REDIRECTS):
            if asking is not None:
                node = self._node(asking)
                try:
                    _, reply = await node.pipeline([("ASKING",), tuple(args)])
                    return reply
                except ConnectionLost:
                    self.lost(node)
                    raise
                except CommandError as exc:
                    error: CommandError = exc
            else:
                node = await self._target(slot)
                try:
                    if blocking:
                        return await node.execute_blocking(*args)
                    return await node.execute(*args)
                except ConnectionLost:
                    self.lost(node)
                    raise
                except CommandError as exc:
                    error = exc
            redirect = redirect_of(error)
            if redirect is not None:
                kind, moved_slot, where = redirect
                if kind == "MOVED":
                    self._slots[moved_slot] = where
                    self._stale = True
                    asking = None
                else:
                    asking = where
                continue
            if slot_unavailable(error):
                self._stale = True
                raise ClusterUnavailable(str(error)) from error
            raise error
        raise ClusterUnavailable(f"too many redirections for {args[0]!s} (slot {slot})")

    async def execute(self, *args: Arg) -> Any:
        """Run one command on the node of its slot; ``CommandError`` on an error reply."""
        return await self._run(args, blocking=False)

    async def execute_blocking(self, *args: Arg) -> Any:
        """Run a command that may block (``BLOCK``) on a connection of its own."""
        return await self._run(args, blocking=True)

    async def pipeline(
        self, commands: Sequence[Command], *, raise_on_error: bool = True
    ) -> list[Any]:
        """Run several commands, one pipeline per node; replies in the caller's order.

        Commands redirected (``MOVED``/``ASK``) are sent again one by one, in order.
        Error handling as ``RedisClient.pipeline``; a lost node fails the whole call
        with ``ConnectionLost`` (the other nodes' commands did run).
        """
        if not commands:
            return []
        slots = [slot_of(c) for c in commands]  # CrossSlot before anything is sent
        groups: dict[int, list[int]] = {}
        clients: dict[int, RedisClient] = {}
        for i, slot in enumerate(slots):
            client = self._target_now(slot) or await self._target(slot)
            groups.setdefault(id(client), []).append(i)
            clients[id(client)] = client
        out: list[Any] = [None] * len(commands)

        async def send(client: RedisClient, indexes: list[int]) -> None:
            try:
                replies = await client.pipeline(
                    [commands[i] for i in indexes], raise_on_error=False
                )
            except ConnectionLost:
                self.lost(client)
                raise
            for i, reply in zip(indexes, replies, strict=True):
                out[i] = reply

        if len(groups) == 1:
            ((key, indexes),) = groups.items()
            await send(clients[key], indexes)
        else:
            try:
                async with trio.open_nursery() as nursery:
                    for key, indexes in groups.items():
                        nursery.start_soon(send, clients[key], indexes)
            except BaseExceptionGroup as group:
                # One lost node is one ConnectionLost for the caller, as on one node.
                lost, rest = group.split(ConnectionLost)
                if rest is not None:
                    raise
                assert lost is not None
                raise lost.exceptions[0] from group
        for i, reply in enumerate(out):
            if isinstance(reply, CommandError) and (
                redirect_of(reply) is not None or slot_unavailable(reply)
            ):
                try:
                    out[i] = await self._run(commands[i], blocking=False)
                except CommandError as exc:
                    out[i] = exc
        if raise_on_error:
            for reply in out:
                if isinstance(reply, CommandError):
                    raise reply
        return out

    async def aclose(self) -> None:
        """Close every node's connections; idempotent."""
        self._closed = True
        nodes, self._nodes = list(self._nodes.values()), {}
        for client in nodes:
            await client.aclose()
        await trio.lowlevel.checkpoint()


async def open_redis_client(url: str, **client_kwargs: Any) -> RedisClient | ClusterClient:
    """A client for ``url``: a ``ClusterClient`` when the node is in a cluster.

    One round trip (``CLUSTER SLOTS``): a wrong URL, password or certificate fails
    here. The caller closes the client."""
    address = RedisAddress.from_url(url)
    single = RedisClient(address, **client_kwargs)
    try:
        reply = await single.execute("CLUSTER", "SLOTS")
    except CommandError as exc:
        if "cluster support disabled" in str(exc) or "unknown command" in str(exc):
            return single
        if str(exc).startswith("NOPERM"):
            # An ACL user without +cluster|slots: it cannot be asked, and a
            # cluster would answer this user's commands with MOVED anyway.
            log.warning(
                "redis.cluster_slots_not_permitted",
                address=str(address),
                hint="grant +cluster|slots to use a Redis Cluster; assuming one node",
            )
            return single
        await single.aclose()
        if "SELECT is not allowed in cluster mode" in str(exc):
            raise CommandError(
                f"{address} is a Redis Cluster, which has only database 0: end the URL in /0"
            ) from exc
        raise
    except BaseException:
        await single.aclose()
        raise
    await single.aclose()
    cluster = ClusterClient(address, **client_kwargs)
    cluster._apply((address.host, address.port), reply)
    return cluster
