"""``MemoryBus`` specifics: Trio-clock time, an injected wall clock, close."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from bus.base import BusError, Entry
from bus.memory import MemoryBus


class WallClock:
    """A settable wall clock in milliseconds."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


async def test_idle_time_follows_the_trio_clock(autojump_clock: trio.testing.MockClock) -> None:
    bus = MemoryBus()
    await bus.ensure_group("s", "g")
    sent = await bus.append("s", {"n": "1"})
    await bus.read_group("s", "g", "dead")
    await trio.sleep(29)
    assert await bus.claim_idle("s", "g", "alive", min_idle_ms=30_000) == []
    await trio.sleep(1)
    claimed = await bus.claim_idle("s", "g", "alive", min_idle_ms=30_000)
    assert [(e.id, e.deliveries) for e in claimed] == [(sent, 2)]


async def test_ttl_and_lease_expiry_follow_the_trio_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    await bus.set("k", "v", ttl_ms=10_000)
    a = await bus.acquire_lease("L", "a", 10_000)
    assert a is not None
    await trio.sleep(9.999)
    assert await bus.get("k") == "v"
    assert await bus.acquire_lease("L", "b", 1000) is None
    await trio.sleep(0.001)
    assert await bus.get("k") is None
    b = await bus.acquire_lease("L", "b", 1000)
    assert b is not None
    assert b.epoch == a.epoch + 1


async def test_ids_stay_increasing_when_the_clock_stalls_or_steps_back() -> None:
    clock = WallClock(1_000)
    bus = MemoryBus(clock_ms=clock)
    assert await bus.append("s", {"n": "1"}) == "1000-0"
    assert await bus.append("s", {"n": "2"}) == "1000-1"
    clock.ms = 900
    assert await bus.append("s", {"n": "3"}) == "1000-2"
    clock.ms = 1_001
    assert await bus.append("s", {"n": "4"}) == "1001-0"
    assert await bus.append("t", {"n": "5"}) == "1001-0"  # per stream


async def test_trimming_is_exact_by_age() -> None:
    clock = WallClock(10_000)
    bus = MemoryBus(retention_ms=1_000, clock_ms=clock)
    for _ in range(3):
        await bus.append("s", {"n": "a"})
        clock.ms += 400
    # now 11_200: threshold 10_200 removes the first entry only
    kept = await bus.append("s", {"n": "b"})
    assert [e.id for e in await bus.range("s")] == ["10400-0", "10800-0", kept]


async def test_trimmed_pending_entries_are_dropped_not_returned() -> None:
    clock = WallClock(10_000)
    bus = MemoryBus(retention_ms=1_000, clock_ms=clock)
    await bus.ensure_group("s", "g")
    old = await bus.append("s", {"n": "old"})
    await bus.read_group("s", "g", "c")
    clock.ms += 5_000
    new = await bus.append("s", {"n": "new"})  # trims the pending "old"
    assert await bus.pending_count("s", "g") == 1
    assert [e.id for e in await bus.read_group("s", "g", "c")] == [new]
    with capture_logs() as logs:
        assert [e.id for e in await bus.read_group("s", "g", "c", start="0")] == [new]
    assert [(e["event"], e["id"]) for e in logs] == [("bus.pending_entry_trimmed", old)]
    assert await bus.pending_count("s", "g") == 1
    assert await bus.ack("s", "g", [old]) == 0


async def test_block_zero_waits_until_an_append(autojump_clock: trio.testing.MockClock) -> None:
    bus = MemoryBus()
    got: list[Entry] = []

    async def reader() -> None:
        got.extend(await bus.read("s", "$", block_ms=0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.sleep(3600)
        assert got == []
        sent = await bus.append("s", {"n": "1"})
    assert [e.id for e in got] == [sent]


async def test_cancelled_reader_leaves_no_trace(autojump_clock: trio.testing.MockClock) -> None:
    bus = MemoryBus()
    await bus.ensure_group("s", "g")
    with trio.move_on_after(1):
        await bus.read_group("s", "g", "victim", block_ms=10_000)
    sent = await bus.append("s", {"n": "probe"})
    assert [e.id for e in await bus.read_group("s", "g", "next")] == [sent]
    assert await bus.read_group("s", "g", "victim", start="0") == []


async def test_aclose_wakes_blocked_readers_and_is_idempotent() -> None:
    bus = MemoryBus()
    await bus.ensure_group("s", "g")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                with pytest.raises(BusError):
                    await bus.read_group("s", "g", "c", block_ms=0)

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            await bus.aclose()
        await bus.aclose()
        with pytest.raises(BusError):
            await bus.get("k")


async def test_instances_share_nothing() -> None:
    one, two = MemoryBus(), MemoryBus()
    await one.set("k", "v")
    await one.append("s", {"n": "1"})
    assert await two.get("k") is None
    assert await two.last_id("s") == "0-0"
