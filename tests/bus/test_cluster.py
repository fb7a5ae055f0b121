"""``ClusterClient`` against a real Redis Cluster: slots, routing, redirections, failover."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from structlog.testing import capture_logs

from bus.base import CommandError, ConnectionLost
from bus.cluster import (
    ClusterClient,
    ClusterUnavailable,
    CrossSlot,
    key_slot,
    keys_of,
    open_redis_client,
    slot_of,
)
from bus.redis import RedisBus, open_redis_bus
from bus.resp import RedisClient
from bus.retry import retry_bus
from switchboard.testing.redis_cluster import RedisClusterHandle, open_redis_cluster
from switchboard.testing.redis_server import AclUser, open_redis_server
from switchboard.testing.tls import make_certificates

pytestmark = pytest.mark.redis


def test_key_slots_follow_the_hash_tag() -> None:
    assert key_slot("123456789") == 12739  # the CRC16 check value in the Redis spec
    assert key_slot("sb:{p7}:calls") == key_slot("p7") == key_slot("x{p7}y")
    assert key_slot("a{}b") != key_slot("")  # an empty tag hashes the whole key
    assert key_slot("{a}{b}") == key_slot("a")  # only the first tag counts


def test_where_the_keys_of_a_command_are() -> None:
    assert keys_of(("XADD", "s", "*", "k", "v")) == ["s"]
    assert keys_of(("EVALSHA", "sha", 2, "{l}", "{l}:epoch", "arg")) == ["{l}", "{l}:epoch"]
    read = ("XREADGROUP", "GROUP", "streams", "c", "COUNT", 1, "STREAMS", "a", "b", ">", ">")
    assert keys_of(read) == ["a", "b"]
    assert keys_of(("XGROUP", "CREATE", "s", "g", "0")) == ["s"]
    assert keys_of(("PING",)) == []
    assert slot_of(("PING",)) is None
    with pytest.raises(CrossSlot, match="give them one hash tag"):
        slot_of(("EVALSHA", "sha", 2, "lease", "lease:epoch"))


async def test_slots_agree_with_the_server(cluster_client: ClusterClient) -> None:
    with trio.fail_after(20):
        keys = ["sb:{p0}:calls", "sb:{llm}:requests", "plain", "é{ü}", *map(str, range(50))]
        for key in keys:
            assert await cluster_client.execute("CLUSTER", "KEYSLOT", key) == key_slot(key)


async def test_detection_gives_a_plain_client_on_one_node() -> None:
    async with open_redis_server() as server:
        client = await open_redis_client(server.url)
        try:
            assert type(client) is RedisClient
        finally:
            await client.aclose()


async def test_a_script_across_slots_is_refused_before_it_is_sent(
    cluster_client: ClusterClient,
) -> None:
    with trio.fail_after(20):
        bus = RedisBus(cluster_client)
        lease = await bus.acquire_lease("sb:{p1}:lease", "me", 10_000)
        assert lease is not None
        with pytest.raises(CrossSlot):
            await bus.set_if_lease("sb:{p2}:state:CA1", "x", lease)
        assert await bus.get("sb:{p2}:state:CA1") is None


async def test_pipelines_split_by_node_and_keep_the_callers_order(
    cluster_client: ClusterClient,
) -> None:
    with trio.fail_after(20):
        client = cluster_client
        bus = RedisBus(client)
        streams = [f"sb:{{p{p}}}:calls" for p in range(12)]
        nodes = {client.node_for_slot(key_slot(s)) for s in streams}
        assert len(nodes) == 3, "the streams must span every master"
        items = [(streams[i % 12], {"n": str(i)}) for i in range(120)]
        ids = await bus.append_many(items)
        for stream in streams:
            entries = await bus.range(stream)
            expected = [(i, f) for (s, f), i in zip(items, ids, strict=True) if s == stream]
            assert [(e.id, e.fields) for e in entries] == expected


async def test_moved_is_followed_and_fixes_the_map(cluster_client: ClusterClient) -> None:
    with trio.fail_after(20):
        client = cluster_client
        slot = key_slot("sb:{p3}:calls")
        right = client.node_for_slot(slot)
        wrong = next(m for m in client.masters if m != right)
        client._slots[slot] = wrong  # a stale map, as after a resharding
        assert await client.execute("XADD", "sb:{p3}:calls", "*", "n", "1")
        assert client.node_for_slot(slot) == right
        client._slots[slot] = wrong
        # Inside a pipeline too.
        replies = await client.pipeline([("XLEN", "sb:{p3}:calls"), ("PING",)])
        assert replies == [1, "PONG"]
        assert client.node_for_slot(slot) == right


async def _node_id(client: RedisClient) -> str:
    return str(await client.execute("CLUSTER", "MYID"))


async def test_ask_during_a_slot_migration() -> None:
    # A cluster of its own: the migration changes who owns a slot.
    async with open_redis_cluster(replicas=0) as cluster:
        with trio.fail_after(30):
            client = await open_redis_client(cluster.url)
            assert isinstance(client, ClusterClient)
            try:
                key = "sb:{p5}:state:CA1"
                slot = key_slot(key)
                source_key = client.node_for_slot(slot)
                target_key = next(m for m in client.masters if m != source_key)
                assert source_key is not None
                source, target = client._node(source_key), client._node(target_key)
                await client.execute("SET", key, "before")
                await target.execute(
                    "CLUSTER", "SETSLOT", slot, "IMPORTING", await _node_id(source)
                )
                await source.execute(
                    "CLUSTER", "SETSLOT", slot, "MIGRATING", await _node_id(target)
                )
                # A key still on the source is served there; a new key of the
                # migrating slot is ASKed over to the target.
                assert await client.execute("GET", key) == "before"
                fresh = "sb:{p5}:state:CA2"
                assert await client.execute("SET", fresh, "new") == "OK"
                with pytest.raises(CommandError, match=r"^ASK"):
                    await source.execute("EXISTS", fresh)  # not there: ask the target
                _, there = await target.pipeline([("ASKING",), ("GET", fresh)])
                assert there == "new"
                # ASK is a one-off: the map still names the source.
                assert client.node_for_slot(slot) == source_key
            finally:
                await client.aclose()


async def test_a_killed_master_is_replaced_by_its_replica() -> None:
    async with open_redis_cluster() as cluster:
        with trio.fail_after(60):
            bus = RedisBus(await open_redis_client(cluster.url))
            client = bus.client
            assert isinstance(client, ClusterClient)
            try:
                stream = "sb:{p1}:calls"
                await bus.ensure_group(stream, "g")
                before = [await bus.append(stream, {"n": str(i)}) for i in range(5)]
                master = client.node_for_slot(key_slot(stream))
                assert master is not None
                # Written to the replica before the kill (replication is async).
                assert await client._node(master).execute("WAIT", 1, 5000) == 1
                await cluster.node(master[1]).stop()  # SIGKILL
                with capture_logs() as logs:
                    with pytest.raises((ConnectionLost, ClusterUnavailable)):
                        await bus.append(stream, {"n": "lost?"})
                    # Callers retry retriable errors; the map then names the promoted replica.
                    after = await retry_bus("test", lambda: bus.append(stream, {"n": "5"}))
                promoted = client.node_for_slot(key_slot(stream))
                assert promoted not in (None, master)
                assert any(e["event"] == "redis.cluster_map" for e in logs)
                entries = await bus.read_group(stream, "g", "c", count=100)
                got = [e.id for e in entries]
                assert got[:5] == before
                assert got[-1] == after
                await cluster.wait_healthy(timeout_s=30)
            finally:
                await bus.aclose()


async def test_open_redis_bus_detects_a_cluster(shared_cluster: RedisClusterHandle) -> None:
    async with open_redis_bus(shared_cluster.url) as bus:
        assert isinstance(bus.client, ClusterClient)
        assert len(bus.client.masters) == 3


async def test_a_cluster_has_only_database_0(shared_cluster: RedisClusterHandle) -> None:
    url = shared_cluster.url.replace("/0", "/1")
    with pytest.raises(Exception, match="only database 0"):
        async with open_redis_bus(url):
            pass  # pragma: no cover - never reached


async def test_a_tls_cluster_with_an_acl_user(tmp_path: Path) -> None:
    # As a managed cluster runs: TLS only (client certificates, TLS between
    # the nodes too) and an ACL user, default user off.
    certs = await make_certificates(tmp_path)
    user = AclUser("switchboard", "s3cret", "~* &* +@all")
    async with open_redis_cluster(tls=certs, user=user) as cluster:
        assert cluster.url.startswith("rediss://switchboard:s3cret@")
        with trio.fail_after(30):
            async with open_redis_bus(cluster.url) as bus:
                client = bus.client
                assert isinstance(client, ClusterClient)
                assert len(client.masters) == 3
                streams = [f"sb:{{p{p}}}:calls" for p in range(12)]
                ids = await bus.append_many([(s, {"n": s}) for s in streams])
                for stream, entry_id in zip(streams, ids, strict=True):
                    [entry] = await bus.read(stream, "0")
                    assert (entry.id, entry.fields) == (entry_id, {"n": stream})
                lease = await bus.acquire_lease("sb:{p1}:lease", "me", 10_000)
                assert lease is not None
                assert await bus.set_if_lease("sb:{p1}:state:CA1", "x", lease)


async def test_a_user_not_allowed_cluster_slots_gets_one_node_and_a_hint() -> None:
    user = AclUser("narrow", "pw", "~* &* +@all -cluster")
    async with open_redis_server(user=user) as server:
        with capture_logs() as logs:
            client = await open_redis_client(server.url)
        try:
            assert type(client) is RedisClient
            assert await client.execute("PING") == "PONG"
        finally:
            await client.aclose()
    [warning] = [e for e in logs if e["event"] == "redis.cluster_slots_not_permitted"]
    assert "+cluster|slots" in warning["hint"]
