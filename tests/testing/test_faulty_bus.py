"""FaultyBus: a command that fails before it ran, or after; everything else untouched."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from bus.base import Bus, CommandError, ConnectionLost, Fields
from bus.memory import MemoryBus
from switchboard.testing import FaultyBus


async def test_fail_before_runs_nothing_and_fires_once() -> None:
    bus = FaultyBus(MemoryBus())
    fault = bus.fail_before("append")
    with capture_logs() as logs, pytest.raises(ConnectionLost, match="before append"):
        await bus.append("s", {"a": "1"})
    assert await bus.range("s") == []
    assert fault.fired.is_set() and fault.hits == 1
    await bus.append("s", {"a": "2"})  # spent: the next one goes through
    assert [e.fields for e in await bus.range("s")] == [{"a": "2"}]
    assert [(e["event"], e["method"], e["moment"]) for e in logs] == [
        ("bus_fault_injected", "append", "before")
    ]


async def test_fail_after_runs_the_command_then_reports_it_lost() -> None:
    inner = MemoryBus()
    bus = FaultyBus(inner)
    await bus.ensure_group("s", "g")
    await bus.append("s", {"a": "1"})
    (entry,) = await bus.read_group("s", "g", "c1")
    bus.fail_after("ack")
    with pytest.raises(ConnectionLost, match="after ack ran"):
        await bus.ack("s", "g", [entry.id])
    assert await inner.pending_count("s", "g") == 0  # the ack did happen


async def test_when_picks_calls_by_their_arguments_and_times_none_keeps_failing() -> None:
    bus = FaultyBus(MemoryBus())

    def to_x(stream: str, fields: Fields) -> bool:
        return stream == "x"

    refused = CommandError("OOM command not allowed")
    bus.fail_before("append", error=refused, when=to_x, times=None)
    for _ in range(3):
        with pytest.raises(CommandError, match="OOM") as info:
            await bus.append("x", {"a": "1"})
        assert info.value is not refused  # a fresh error each time
    await bus.append("y", {"a": "1"})
    assert len(await bus.range("y")) == 1
    bus.heal()
    await bus.append("x", {"a": "1"})
    assert len(await bus.range("x")) == 1


async def test_keyword_arguments_reach_when_in_declaration_order() -> None:
    bus = FaultyBus(MemoryBus())
    seen: list[tuple[object, ...]] = []

    def record(*args: object) -> bool:
        seen.append(args)
        return False

    bus.fail_before("set", when=record)
    assert await bus.set("k", "v", nx=True)
    assert seen == [("k", "v", None, True)]


async def test_completed_is_set_by_the_next_call_that_went_through() -> None:
    bus = FaultyBus(MemoryBus())
    await bus.ensure_group("s", "g")
    await bus.append("s", {"a": "1"})
    (entry,) = await bus.read_group("s", "g", "c1")
    acked = bus.completed("ack")
    bus.fail_before("ack")
    with pytest.raises(ConnectionLost):
        await bus.ack("s", "g", [entry.id])
    assert not acked.is_set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bus.ack, "s", "g", [entry.id])
        await acked.wait()
    assert bus.completed("ack") is not acked  # a spent event is replaced


def test_only_bus_methods_can_be_broken() -> None:
    bus = FaultyBus(MemoryBus())
    with pytest.raises(ValueError, match="'apend' is not a Bus method"):
        bus.fail_before("apend")


def test_it_is_a_bus() -> None:
    bus: Bus = FaultyBus(MemoryBus())
    assert isinstance(bus, FaultyBus)


async def test_a_stall_holds_matching_calls_until_released(nursery: trio.Nursery) -> None:
    bus = FaultyBus(MemoryBus())
    held = bus.stall("append", when=lambda stream, fields: stream == "slow")
    done = trio.Event()

    async def slow() -> None:
        await bus.append("slow", {"a": "1"})
        done.set()

    nursery.start_soon(slow)
    with trio.fail_after(5):
        await held.reached.wait()
        await bus.append("fast", {"b": "1"})  # not matched: goes through
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set() and await bus.range("slow") == []  # not yet run
        held.release()
        await done.wait()
        await bus.append("slow", {"a": "2"})  # times=1: spent
    assert [e.fields for e in await bus.range("slow")] == [{"a": "1"}, {"a": "2"}]
    assert held.hits == 1


async def test_heal_releases_every_stall(nursery: trio.Nursery) -> None:
    bus = FaultyBus(MemoryBus())
    held = bus.stall("append", times=None)
    nursery.start_soon(bus.append, "s", {"a": "1"})
    with trio.fail_after(5):
        await held.reached.wait()
        bus.heal()
        await bus.append("s", {"a": "2"})
        await trio.testing.wait_all_tasks_blocked()
    assert len(await bus.range("s")) == 2
    with pytest.raises(ValueError, match="'apend' is not a Bus method"):
        bus.stall("apend")


async def test_a_stall_after_runs_the_call_and_holds_its_reply_through_a_cancel(
    nursery: trio.Nursery,
) -> None:
    bus = FaultyBus(MemoryBus())
    held = bus.stall("set", moment="after")
    scope = trio.CancelScope()
    got: list[bool] = []

    async def caller() -> None:
        with scope:
            got.append(await bus.set("k", "v"))
            # The reply arrived before the cancel: it is not taken back, the
            # next checkpoint sees the cancel.
            await trio.lowlevel.checkpoint()
            got.append(False)

    nursery.start_soon(caller)
    with trio.fail_after(5):
        await held.reached.wait()
        assert await bus.get("k") == "v"  # it ran
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # still held
        held.release()
        await trio.testing.wait_all_tasks_blocked()
    assert got == [True]
