"""A Redis Cluster master paused past the node timeout acknowledges writes it then loses.

The fault: a master is stopped (SIGSTOP: a long GC-like stall, a VM pause)
for longer than ``cluster-node-timeout``; its replica is promoted. Commands
sent to it meanwhile wait in its socket. When it runs again it answers them
as a master (they succeed, with ids) before it learns it was replaced; then
it rejoins as a replica of the promoted node and drops its own data. No error
reaches the client, so no retry or ``append_once`` look-up can help: the
gateway's caller events sent during the pause are gone (the calls hang
waiting for a reply to a prompt the conversation never sees).

Caller events go through ``append_once``, whose appends a replica confirms
(``XADD`` + ``WAIT``, :mod:`bus.replicated`): the paused master's ``WAIT``
fails, the event counts as lost, and ``append_once`` appends it again on the
promoted master. These tests use a real cluster.
"""

from __future__ import annotations

import os
import signal

import pytest
import trio

from bus.cluster import ClusterClient, key_slot, open_redis_client
from bus.redis import RedisBus
from bus.replicated import Unreplicated, WaitPolicy
from bus.resp import RedisClient
from bus.retry import append_once
from switchboard.testing.redis_cluster import open_redis_cluster

pytestmark = pytest.mark.redis

KEY = "sb:{p1}:calls"


async def _promoted(url: str, slot: int, victim: int) -> None:
    """Wait until a live node's map serves ``slot`` from another node than ``victim``."""
    client = RedisClient.from_url(url)
    try:
        while True:
            reply = await client.execute("CLUSTER", "SLOTS")
            for start, end, master, *_ in reply:
                if int(start) <= slot <= int(end) and int(master[1]) != victim:
                    return
            await trio.sleep(0.05)
    finally:
        await client.aclose()


async def test_writes_acknowledged_by_a_paused_master_survive_its_failover() -> None:
    with trio.fail_after(120):  # a hang guard only
        async with open_redis_cluster() as cluster:
            client = await open_redis_client(cluster.url)
            assert isinstance(client, ClusterClient)
            try:
                await _replicas_listed(client)
                await client.execute("XADD", KEY, "*", "n", "0")
                slot = key_slot(KEY)
                victim = client.node_for_slot(slot)
                assert victim is not None
                witness = next(n for n in cluster.nodes if n.port != victim[1])
                pid = cluster.node(victim[1]).pid
                acknowledged: list[str] = []

                bus = RedisBus(client)

                async def write(n: int) -> None:
                    acknowledged.append(await append_once(bus, KEY, {"n": str(n)}, patience_s=60))

                os.kill(pid, signal.SIGSTOP)
                try:
                    async with trio.open_nursery() as nursery:
                        for n in (1, 2, 3):
                            nursery.start_soon(write, n)
                        await _promoted(witness.url, slot, victim[1])
                        os.kill(pid, signal.SIGCONT)
                finally:
                    os.kill(pid, signal.SIGCONT)
                await cluster.wait_healthy(timeout_s=60)
                await client.refresh(force=True)
                assert client.node_for_slot(slot) != victim  # a failover did happen
                kept = {entry_id for entry_id, _ in await client.execute("XRANGE", KEY, "-", "+")}
                assert len(acknowledged) == 3
                assert set(acknowledged) <= kept, (acknowledged, kept)
            finally:
                await client.aclose()


async def test_an_append_no_replica_confirms_is_lost_to_the_caller_and_found_again() -> None:
    """``WAIT`` answering 0 (the replica is stopped) raises ``Unreplicated`` and
    marks the map stale; ``append_once`` then finds the entry and returns it once."""
    with trio.fail_after(120):  # a hang guard only
        async with open_redis_cluster() as cluster:
            client = await open_redis_client(cluster.url)
            assert isinstance(client, ClusterClient)
            bus = RedisBus(client, wait=WaitPolicy(replicas=1, timeout_ms=200))
            try:
                await _replicas_listed(client)
                await bus.append_replicated(KEY, {"n": "0"})  # the replica confirms
                master = client.node_for_slot(key_slot(KEY))
                replica = [n for n in cluster.nodes if await _replicates(n.url, master)].pop()
                os.kill(replica.pid, signal.SIGSTOP)
                try:
                    with pytest.raises(Unreplicated):
                        await bus.append_replicated(KEY, {"n": "1"})
                    assert client._stale  # the next command reads the map again
                    got = await append_once(bus, KEY, {"n": "2"}, patience_s=0.5)
                    # Unconfirmed, then found by the retry's look-up: not appended twice.
                    assert [e.fields["n"] for e in await bus.range(KEY)] == ["0", "1", "2"]
                    assert (await bus.range(KEY))[-1].id == got
                finally:
                    os.kill(replica.pid, signal.SIGCONT)
            finally:
                await client.aclose()


async def _replicates(url: str, master: tuple[str, int] | None) -> bool:
    client = RedisClient.from_url(url)
    try:
        role = await client.execute("ROLE")
    finally:
        await client.aclose()
    return master is not None and role[0] == "slave" and int(role[2]) == master[1]


async def _replicas_listed(client: ClusterClient) -> None:
    """Wait until the map lists the slot's replica (it joins after the cluster is ok)."""
    while True:  # the cluster bus has no event to wait on: poll the map
        if (await client.master_of(key_slot(KEY), recheck_s=0.05))[1] > 0:
            return
        await trio.sleep(0.05)
