"""Cancellation and connection-loss safety of ``bus.resp`` against a real redis-server.

T1: a blocking XREADGROUP cancelled mid-wait must not leave a connection
that is still blocked server-side in the pool (it would take the next entry
and hand its reply to the next command). T2: hundreds of commands cancelled
at random moments never make a later command read a wrong reply.

Where a command is cancelled after a random delay, the delay comes from a
``Staircase``: it grows after a cancel and shrinks after a completion, so it
settles where commands are cut mid-flight on this machine, whatever its
speed or load. Each test then checks both outcomes happened (or it proved
nothing) without a count that depends on how fast the machine is.
"""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from bus.base import ConnectionLost, Entry
from bus.redis import RedisBus
from bus.resp import RedisClient
from switchboard.testing.redis_server import RedisServerHandle


class Staircase:
    """Random deadlines that home in on the moment a command is in flight.

    A fixed range of deadlines cancels most commands on a slow machine and
    none on a fast one. Here the typical deadline is multiplied by ``step``
    after a cancel and divided by it after a completion, so about half of the
    attempts end each way at any speed; each deadline is drawn around it.
    """

    def __init__(self, rng: random.Random, start_s: float = 0.0005, step: float = 1.3) -> None:
        self.rng = rng
        self.typical_s = start_s
        self.step = step
        self.outcomes = {"cancelled": 0, "completed": 0}

    def deadline(self) -> float:
        return self.rng.uniform(0, 2 * self.typical_s)

    def record(self, cancelled: bool) -> None:
        self.outcomes["cancelled" if cancelled else "completed"] += 1
        if cancelled:
            self.typical_s *= self.step
        else:
            self.typical_s /= self.step


async def wait_blocked_clients(client: RedisClient, n: int) -> None:
    """Wait until the server counts ``n`` clients blocked in a command.

    The server learns of a closed socket, or of a blocking command on another
    connection, on its own schedule; there is no event to wait on, so poll.
    """
    while True:
        info: str = await client.execute("INFO", "clients")
        if f"blocked_clients:{n}\r" in info:
            return
        await trio.sleep(0.005)


async def wait_no_blocked_clients(client: RedisClient) -> None:
    """Until the server dropped every abandoned blocking connection, it could
    still hand a new entry to the dead reader."""
    await wait_blocked_clients(client, 0)


async def test_t1_cancelled_blocking_read_leaves_client_correct(redis_url: str) -> None:
    client = RedisClient.from_url(redis_url)
    other = RedisClient.from_url(redis_url)
    try:
        with trio.fail_after(10):
            await client.execute("XGROUP", "CREATE", "s", "g", "$", "MKSTREAM")
            await client.execute("SET", "known", "value")
            with trio.move_on_after(0.2) as scope:
                await client.execute_blocking(
                    "XREADGROUP", "GROUP", "g", "victim", "COUNT", 10, "BLOCK", 3000,
                    "STREAMS", "s", ">",
                )  # fmt: skip
            assert scope.cancelled_caught
            await wait_no_blocked_clients(other)
            probe = await other.execute("XADD", "s", "*", "n", "probe")

            assert await client.execute("GET", "known") == "value"
            assert await client.execute("PING") == "PONG"
            reply = await client.execute(
                "XREADGROUP", "GROUP", "g", "next", "COUNT", 10, "STREAMS", "s", ">"
            )
            assert reply == [["s", [[probe, ["n", "probe"]]]]]
            pending = await client.execute("XPENDING", "s", "g", "-", "+", 10)
            assert [(p[0], p[1]) for p in pending] == [(probe, "next")]
    finally:
        await client.aclose()
        await other.aclose()


async def test_t1_through_the_bus(redis_url: str) -> None:
    bus = RedisBus.from_url(redis_url)
    try:
        with trio.fail_after(10):
            await bus.ensure_group("s", "g")
            with trio.move_on_after(0.2) as scope:
                await bus.read_group("s", "g", "victim", block_ms=3000)
            assert scope.cancelled_caught
            await wait_no_blocked_clients(bus.client)
            probe = await bus.append("s", {"n": "probe"})
            assert [e.id for e in await bus.read_group("s", "g", "next")] == [probe]
            assert await bus.read_group("s", "g", "victim", start="0") == []
            assert [e.id for e in await bus.read_group("s", "g", "next", start="0")] == [probe]
    finally:
        await bus.aclose()


async def test_interrupted_connection_is_never_reused(redis_url: str) -> None:
    client = RedisClient.from_url(redis_url)
    try:
        with trio.fail_after(10):
            first = await client.execute("CLIENT", "ID")
            assert await client.execute("CLIENT", "ID") == first  # pooled and reused
            with trio.move_on_after(0.05):
                await client.execute_blocking("BLPOP", "nothing", 5)
            second = await client.execute("CLIENT", "ID")
            # The idle connection was the one interrupted: a new one replaced it.
            assert isinstance(second, int)
            assert second != first
    finally:
        await client.aclose()


async def test_t2_random_cancellations_never_shift_replies(redis_url: str) -> None:
    rng = random.Random(20240611)
    client = RedisClient.from_url(redis_url)
    try:
        with trio.fail_after(60):
            values = {f"k{i}": f"v{i}-" + "x" * rng.randrange(0, 3000) for i in range(16)}
            await client.pipeline([("SET", k, v) for k, v in values.items()])
            await client.execute("XGROUP", "CREATE", "s", "g", "$", "MKSTREAM")
            keys = sorted(values)
            stairs = Staircase(rng)
            for i in range(400):
                victim, checker = rng.sample(keys, 2)
                shape = i % 4
                with trio.move_on_after(stairs.deadline()) as scope:
                    if shape == 0:
                        await client.execute("GET", victim)
                    elif shape == 1:
                        await client.pipeline([("GET", victim), ("PING",), ("GET", checker)])
                    elif shape == 2:
                        await client.execute_blocking(
                            "XREADGROUP", "GROUP", "g", "victim", "COUNT", 1, "BLOCK", 1,
                            "STREAMS", "s", ">",
                        )  # fmt: skip
                    else:
                        await client.execute_blocking("BLPOP", "never", 0.001)
                stairs.record(scope.cancelled_caught)
                # The uncancelled command right after must get its own reply.
                assert await client.execute("GET", checker) == values[checker]
                got = await client.pipeline([("GET", victim), ("ECHO", str(i))])
                assert got == [values[victim], str(i)]
            # Both outcomes must have happened, or the test proved nothing.
            assert stairs.outcomes["cancelled"] >= 20
            assert stairs.outcomes["completed"] >= 20
    finally:
        await client.aclose()


async def test_t2_concurrent_tasks_with_random_cancels(redis_url: str) -> None:
    client = RedisClient.from_url(redis_url)
    wrong: list[tuple[str, object]] = []
    stairs = Staircase(random.Random(8), start_s=0.002)

    async def worker(seed: int) -> None:
        for i in range(100):
            key = f"w{seed}:{i % 5}"
            with trio.move_on_after(stairs.deadline()) as scope:
                await client.execute("SET", key, f"{seed}:{i}")
            stairs.record(scope.cancelled_caught)
            if not scope.cancelled_caught:
                got = await client.execute("GET", key)
                if got != f"{seed}:{i}":
                    wrong.append((key, got))

    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for seed in range(8):
                    nursery.start_soon(worker, seed)
        assert wrong == []
        # Both outcomes must have happened, or the test proved nothing.
        assert stairs.outcomes["cancelled"] >= 20
        assert stairs.outcomes["completed"] >= 20
    finally:
        await client.aclose()


async def test_killed_server_gives_connection_lost_then_recovers(
    redis_server: RedisServerHandle,
) -> None:
    client = RedisClient.from_url(redis_server.url)
    try:
        with trio.fail_after(10):
            await client.execute("SET", "k", "v")
            await redis_server.stop()
            with pytest.raises(ConnectionLost):
                await client.execute("GET", "k")
            with pytest.raises(ConnectionLost):  # refused while it is down
                await client.execute("GET", "k")
            await redis_server.start()
            assert await client.execute("PING") == "PONG"
            assert await client.execute("GET", "k") is None  # a fresh server
    finally:
        await client.aclose()


async def test_server_death_wakes_a_blocked_reader_with_connection_lost(
    redis_server: RedisServerHandle,
) -> None:
    bus = RedisBus.from_url(redis_server.url)
    try:
        with trio.fail_after(10):
            await bus.ensure_group("s", "g")
            failures: list[BaseException] = []

            async def reader() -> None:
                try:
                    await bus.read_group("s", "g", "c", block_ms=0)
                except ConnectionLost as exc:
                    failures.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await wait_blocked_clients(bus.client, 1)
                await redis_server.restart()
            assert len(failures) == 1
            # After the restart the bus works again (a fresh, empty server).
            await bus.ensure_group("s", "g")
            sent = await bus.append("s", {"n": "1"})
            got: list[Entry] = await bus.read_group("s", "g", "c", block_ms=1000)
            assert [e.id for e in got] == [sent]
    finally:
        await bus.aclose()


async def test_aclose_fails_a_blocked_command(redis_url: str) -> None:
    client = RedisClient.from_url(redis_url)
    with trio.fail_after(10):
        failures: list[BaseException] = []

        async def blocked() -> None:
            try:
                await client.execute_blocking("BLPOP", "nothing", 0)
            except ConnectionLost as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked)
            await trio.testing.wait_all_tasks_blocked()
            await client.aclose()
        await client.aclose()  # idempotent
        assert len(failures) == 1


async def test_pipelined_callers_cancelled_at_random_keep_replies_in_step(redis_url: str) -> None:
    """Many callers on two connections: queued commands go out as shared
    pipelines, and a caller cancelled while queued or in flight never costs
    another caller its reply or its connection."""
    client = RedisClient.from_url(redis_url, max_connections=2)
    wrong: list[tuple[str, object]] = []
    stairs = Staircase(random.Random(64), start_s=0.001)

    async def worker(seed: int) -> None:
        for i in range(40):
            key = f"p{seed}:{i % 3}"
            with trio.move_on_after(stairs.deadline()) as scope:
                await client.pipeline([("SET", key, f"{seed}:{i}"), ("ECHO", f"{seed}:{i}")])
            stairs.record(scope.cancelled_caught)
            if scope.cancelled_caught:
                continue
            got = await client.pipeline([("GET", key), ("ECHO", str(seed))])
            if got != [f"{seed}:{i}", str(seed)]:
                wrong.append((key, got))

    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for seed in range(64):
                    nursery.start_soon(worker, seed)
            assert wrong == []
            assert stairs.outcomes["cancelled"] >= 20
            assert stairs.outcomes["completed"] >= 20
    finally:
        await client.aclose()
