"""Appends a replica has confirmed: ``XADD`` then ``WAIT`` on one connection.

Redis replicates asynchronously, so an ``XADD`` a master acknowledged can
still be lost in a failover: the last writes before a crash, and every write
a master *paused* past the cluster node timeout takes while it is paused (it
answers them as a master when it runs again, then rejoins as a replica of
its promoted replica and drops them; no error says so). ``WAIT numreplicas
timeout`` answers how many replicas have acknowledged the calling
connection's writes so far, so an ``XADD`` followed by ``WAIT 1 <ms>`` *in
the same pipeline, on the same connection* tells whether the entry reached a
replica. (``WAIT`` counts the calling connection's own last write; sent on
another connection it would confirm nothing.)

``append_replicated`` is ``RedisBus.append_replicated``'s Redis side, used
for the writes that must not be lost (the gateway's caller events, through
``bus.retry.append_once``):

- On a Redis Cluster whose master for the stream's slot has replicas (as the
  slot map lists them), ``XADD`` and ``WAIT <replicas> <timeout_ms>`` go to
  that master together on a connection of their own (``WAIT`` blocks it, so
  nothing else is queued behind). ``WAIT`` answering fewer replicas, or an
  error (a master that learns it was replaced unblocks ``WAIT`` with an
  error), raises ``Unreplicated``: a ``ConnectionLost``, so the slot map is
  marked stale and ``append_once`` looks for the entry on the (new) master
  and appends it again if it is not there.
- A master the slot map lists without replicas (the map is read again after
  ``NO_REPLICA_RECHECK_S``, as replicas join late), a single node, or ``WaitPolicy.replicas == 0``:
  a plain ``XADD`` (``WAIT`` could never succeed, or is switched off).

A dead replica that the map still lists costs each caller event up to
``timeout_ms`` before the retry finds the entry and returns it. The
remaining window: ``append_once``'s look-up reads the entry from a master
that may itself not have been confirmed (a resumed master that has not yet
heard of its failover); docs/CAPACITY.md, "Failover".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from bus.base import CommandError, ConnectionLost
from bus.cluster import ClusterClient, ClusterUnavailable, CommandClient
from bus.resp import Arg
from bus.slots import key_slot, redirect_of, slot_unavailable

log = structlog.get_logger()

DEFAULT_WAIT_REPLICAS = 1
DEFAULT_WAIT_TIMEOUT_MS = 1000
# A master the slot map lists without replicas (replicas join, and a failed
# master rejoins as one, after the map was read): read the map again this often.
NO_REPLICA_RECHECK_S = 1.0


class Unreplicated(ConnectionLost):
    """No replica confirmed an acknowledged append: it may be lost in a failover.

    Retriable, like any ``ConnectionLost``: the entry may or may not survive.
    """


@dataclass(frozen=True, slots=True)
class WaitPolicy:
    """How many replicas must confirm a caller event, and how long to wait for them."""

    replicas: int = DEFAULT_WAIT_REPLICAS
    timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS

    def __post_init__(self) -> None:
        if self.replicas < 0:
            raise ValueError("replicas must be 0 (off) or more")
        if self.timeout_ms <= 0:
            raise ValueError("timeout_ms must be a positive number of ms")


async def append_replicated(client: CommandClient, xadd: Sequence[Arg], policy: WaitPolicy) -> str:
    """Run ``xadd`` (``XADD key ...``) and confirm it reached ``policy.replicas`` replicas.

    ``Unreplicated`` when it could not be confirmed; see the module docstring.
    """
    if policy.replicas == 0 or not isinstance(client, ClusterClient):
        entry_id: str = await client.execute(*xadd)
        return entry_id
    slot = key_slot(str(xadd[1]))
    node, replicas = await client.master_of(slot, recheck_s=NO_REPLICA_RECHECK_S)
    if replicas < policy.replicas:
        entry_id = await client.execute(*xadd)
        return entry_id
    try:
        added, confirmed = await node.pipeline_blocking(
            [tuple(xadd), ("WAIT", policy.replicas, policy.timeout_ms)]
        )
    except ConnectionLost:
        client.lost(node)
        raise
    if isinstance(added, CommandError):
        if redirect_of(added) is not None or slot_unavailable(added):
            client.lost(node)  # the map is wrong; the XADD did not run
            raise ClusterUnavailable(str(added)) from added
        raise added
    if isinstance(confirmed, CommandError) or int(confirmed) < policy.replicas:
        client.lost(node)
        log.warning(
            "redis.append_unreplicated",
            address=str(node.address),
            stream=str(xadd[1]),
            entry_id=str(added),
            replicas=str(confirmed),
        )
        raise Unreplicated(
            f"no replica of {node.address} confirmed entry {added} "
            f"(WAIT {policy.replicas} {policy.timeout_ms} answered {confirmed})"
        )
    return str(added)
