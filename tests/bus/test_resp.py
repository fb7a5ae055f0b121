"""``bus.resp.RedisClient`` basics against a real redis-server: URLs, AUTH/SELECT, errors."""

from __future__ import annotations

import pytest
import trio

from bus.base import CommandError, ConnectionLost
from bus.resp import RedisAddress, RedisClient
from switchboard.testing.redis_server import RedisServerHandle, free_port


def test_url_parsing() -> None:
    assert RedisAddress.from_url("redis://10.0.0.1:6380/3") == RedisAddress("10.0.0.1", 6380, 3)
    assert RedisAddress.from_url("redis://localhost") == RedisAddress("localhost", 6379, 0)
    full = RedisAddress.from_url("redis://user:p%40ss@h:1/2")
    assert (full.username, full.password, full.db) == ("user", "p@ss", 2)
    assert RedisAddress.from_url("redis://:secret@h:1").password == "secret"
    assert "secret" not in str(RedisAddress.from_url("redis://:secret@h:1"))
    with pytest.raises(ValueError):
        RedisAddress.from_url("http://h:1")
    with pytest.raises(ValueError):
        RedisAddress.from_url("redis://h:1/notanumber")


async def test_replies_errors_and_pipelines(redis_url: str) -> None:
    client = RedisClient.from_url(redis_url)
    try:
        with trio.fail_after(10):
            assert await client.execute("SET", "k", "välue") == "OK"
            assert await client.execute("GET", "k") == "välue"
            assert await client.execute("GET", "missing") is None
            assert await client.execute("INCRBY", "n", 5) == 5
            with pytest.raises(CommandError, match="WRONGTYPE"):
                await client.execute("LPUSH", "k", "x")
            # An error reply leaves the connection in step.
            assert await client.execute("ECHO", "after") == "after"

            assert await client.pipeline([]) == []
            assert await client.pipeline([("INCR", "n"), ("INCR", "n"), ("GET", "n")]) == [
                6,
                7,
                "7",
            ]
            with pytest.raises(CommandError):
                await client.pipeline([("INCR", "n"), ("LPUSH", "k", "x"), ("INCR", "n")])
            # Every command of the failed pipeline ran; replies were all read.
            assert await client.execute("GET", "n") == "9"
            mixed = await client.pipeline(
                [("INCR", "n"), ("LPUSH", "k", "x")], raise_on_error=False
            )
            assert mixed[0] == 10
            assert isinstance(mixed[1], CommandError)
    finally:
        await client.aclose()


async def test_password_and_database_from_url(redis_server: RedisServerHandle) -> None:
    admin = RedisClient.from_url(redis_server.url)
    try:
        with trio.fail_after(10):
            await admin.execute("CONFIG", "SET", "requirepass", "s3cret")
    finally:
        await admin.aclose()
    good = RedisClient.from_url(f"redis://:s3cret@127.0.0.1:{redis_server.port}/2")
    bad = RedisClient.from_url(f"redis://:wrong@127.0.0.1:{redis_server.port}/0")
    anonymous = RedisClient.from_url(redis_server.url)
    try:
        with trio.fail_after(10):
            await good.execute("SET", "k", "in-db-2")
            info: str = await good.execute("CLIENT", "INFO")
            assert " db=2 " in info
            with pytest.raises(CommandError):
                await bad.execute("PING")
            with pytest.raises(CommandError, match="NOAUTH"):
                await anonymous.execute("GET", "k")
    finally:
        for c in (good, bad, anonymous):
            await c.aclose()


async def test_nothing_listening_is_connection_lost() -> None:
    client = RedisClient.from_url(f"redis://127.0.0.1:{free_port()}/0")
    with trio.fail_after(10), pytest.raises(ConnectionLost):
        await client.execute("PING")
    await client.aclose()


async def test_concurrent_commands_use_several_connections(redis_url: str) -> None:
    client = RedisClient.from_url(redis_url, max_connections=4)
    results: dict[int, str] = {}

    async def one(i: int) -> None:
        await client.execute("SET", f"k{i}", str(i))
        results[i] = await client.execute("GET", f"k{i}")

    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(one, i)
            assert results == {i: str(i) for i in range(50)}
            clients: str = await client.execute("CLIENT", "LIST")
            assert 1 <= len(clients.strip().splitlines()) <= 4
    finally:
        await client.aclose()
