"""``bus.trim``: streams bounded on a clock of their own, orphaned ones expired."""

from __future__ import annotations

import trio
import trio.testing
from structlog.testing import capture_logs

from bus.base import CommandError
from bus.memory import MemoryBus
from bus.trim import TrimPolicy, serve_trimmer
from switchboard.testing.faults import FaultyBus

POLICY = TrimPolicy(max_len=50, interval_s=10.0, keep_alive_ttl_s=30.0)


async def test_streams_are_trimmed_every_interval_without_new_appends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    await bus.append_many([("a", {"n": str(i)}) for i in range(500)])
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: serve_trimmer(
                bus, ["a"], POLICY, rng=lambda: 0.5, task_status=task_status
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        after_first = len(await bus.range("a"))
        # Traffic resumes, then stops: the next pass still bounds it.
        await bus.append_many([("a", {"n": str(i)}) for i in range(500, 900)])
        await trio.sleep(POLICY.interval_s)
        await trio.testing.wait_all_tasks_blocked()
        after_second = await bus.range("a")
        nursery.cancel_scope.cancel()
    assert after_first == 50
    assert [e.fields["n"] for e in after_second] == [str(i) for i in range(850, 900)]


async def test_a_kept_alive_stream_lives_and_an_abandoned_one_expires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    await bus.append("gw:alive", {"n": "1"})
    await bus.append("gw:stopped", {"n": "1"})
    async with trio.open_nursery() as nursery:
        for stream in ("gw:alive", "gw:stopped"):
            await nursery.start(
                lambda task_status, s=stream: serve_trimmer(
                    bus, [s], POLICY, keep_alive=[s], rng=lambda: 0.5, task_status=task_status
                )
            )
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()  # both gateways stop...
    async with trio.open_nursery() as nursery:
        # ...and one comes back; the other's stream is refreshed by nobody.
        await nursery.start(
            lambda task_status: serve_trimmer(
                bus, ["gw:alive"], POLICY, keep_alive=["gw:alive"], task_status=task_status
            )
        )
        await trio.sleep(POLICY.keep_alive_ttl_s * 3)
        await bus.trim("gw:stopped", max_len=POLICY.max_len)  # the memory bus reaps on trim
        alive, stopped = await bus.last_id("gw:alive"), await bus.last_id("gw:stopped")
        nursery.cancel_scope.cancel()
    assert alive != "0-0"
    assert stopped == "0-0"


async def test_a_full_redis_does_not_stop_the_trimmer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = FaultyBus(MemoryBus())
    await bus.append_many([("a", {"n": str(i)}) for i in range(500)])
    # Expiring is refused (as a write at maxmemory would be) a few times.
    bus.fail_before("expire", error=CommandError("OOM command not allowed"), times=3)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: serve_trimmer(
                    bus, ["a"], POLICY, keep_alive=["a"], task_status=task_status
                )
            )
            await bus.completed("expire").wait()
            nursery.cancel_scope.cancel()
    assert len(await bus.range("a")) == 50
    assert [e["event"] for e in logs if "loop" in e] == ["bus_unavailable", "bus_recovered"]
