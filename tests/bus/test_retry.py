"""``bus.retry``: jittered exponential backoff, one log line per outage."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from bus.base import BusError, CommandError, ConnectionLost
from bus.facts import FactPublisher
from bus.keys import Keys
from bus.memory import MemoryBus
from bus.retry import Backoff, BusHealth, append_once, missing_group, retry_bus
from switchboard.testing.faults import FaultyBus


def test_delays_grow_exponentially_up_to_the_cap_with_full_jitter() -> None:
    top = Backoff("t", base_s=0.05, cap_s=2.0, rng=lambda: 1.0)
    ceilings = []
    for failures in range(8):
        top.failures = failures
        ceilings.append(top.next_delay())
    assert ceilings == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    bottom = Backoff("t", rng=lambda: 0.0)
    bottom.failures = 5
    assert bottom.next_delay() == 0.0  # full jitter: anywhere from zero


async def test_an_outage_is_logged_once_and_its_end_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backoff = Backoff("reader", rng=lambda: 1.0, health=BusHealth(), stream="s1")
    with capture_logs() as captured:
        started = trio.current_time()
        for _ in range(10):
            await backoff.failed(ConnectionLost("gone"))
        slept = trio.current_time() - started
        backoff.succeeded()
        backoff.succeeded()
    logs = [e for e in captured if "loop" in e]  # the loop's own lines, not the process's
    events = [e["event"] for e in logs]
    assert events == ["bus_unavailable", "bus_recovered"]
    assert logs[0]["loop"] == "reader" and logs[0]["stream"] == "s1"
    assert logs[1]["failed_attempts"] == 10
    assert logs[1]["outage_s"] == pytest.approx(slept)
    # No spin: ten attempts took 0.05+0.1+...+1.6 then 2.0 s each.
    assert slept == pytest.approx(0.05 + 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 4 * 2.0)
    assert not backoff.in_outage


async def test_a_refused_command_is_not_retried() -> None:
    backoff = Backoff("reader")
    with pytest.raises(CommandError):
        await backoff.failed(CommandError("WRONGTYPE"))
    assert backoff.failures == 0


@pytest.mark.parametrize(
    "reply",
    [
        "OOM command not allowed when used memory > 'maxmemory'.",
        "READONLY You can't write against a read only replica.",
        "LOADING Redis is loading the dataset in memory",
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "CLUSTERDOWN The cluster is down",
        "NOREPLICAS Not enough good replicas to write.",
    ],
)
def test_a_server_that_is_unwell_is_weather(reply: str) -> None:
    assert CommandError(reply).retriable


@pytest.mark.parametrize(
    "reply",
    [
        "BUSYGROUP Consumer Group name already exists",
        "BUSYKEY Target key name already exists.",
        "NOGROUP No such key 'x' or consumer group 'g'",
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "ERR Invalid stream ID specified as stream command argument",
        "OOMPH not a real reply",
    ],
)
def test_a_refused_command_is_an_answer(reply: str) -> None:
    assert not CommandError(reply).retriable


async def test_a_full_redis_is_ridden_out_like_a_lost_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backoff = Backoff("writer", health=BusHealth())
    await backoff.failed(CommandError("OOM command not allowed when used memory > 'maxmemory'."))
    assert backoff.in_outage


async def test_the_process_is_degraded_from_the_first_failure_until_success_settles(
    autojump_clock: trio.testing.MockClock,
) -> None:
    health = BusHealth(settle_s=5.0, stale_s=15.0)
    reader = Backoff("reader", health=health, rng=lambda: 1.0)
    writer = Backoff("writer", health=health, rng=lambda: 1.0)
    with capture_logs() as logs:
        assert not health.degraded
        await writer.failed(CommandError("OOM command not allowed"))
        await reader.failed(ConnectionLost("gone"))
        assert health.degraded
        reader.succeeded()  # reads work again, but a write failed a moment ago
        assert health.degraded
        await writer.failed(CommandError("OOM command not allowed"))
        await trio.sleep(5.0)
        reader.succeeded()
        assert not health.degraded
        writer.succeeded()
    events = [e["event"] for e in logs if "loop" not in e]
    assert events == ["bus_degraded", "bus_healthy"]  # one line each per process and outage
    assert health.outages == 1


async def test_an_outage_nobody_reports_on_any_more_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    health = BusHealth(settle_s=5.0, stale_s=15.0)
    await Backoff("a call's append", health=health).failed(ConnectionLost("gone"))
    assert health.degraded
    await trio.sleep(15.0)  # the loop was abandoned (its call ended)
    assert not health.degraded


async def test_facts_are_shed_and_the_publisher_keeps_serving_when_writes_are_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = FaultyBus(MemoryBus())
    facts = FactPublisher(bus, Keys(partitions=1))
    oom = CommandError("OOM command not allowed when used memory > 'maxmemory'.")
    refused = CommandError("WRONGTYPE Operation against a key holding the wrong kind of value")
    bus.fail_before("append_many", error=oom, times=3)
    bus.fail_before("append_many", error=refused, times=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(facts.serve)
        for n in range(5):
            facts.emit("call_started", call=f"CA{n}")
            await trio.sleep(3.0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert facts.dropped == 4  # three refused for memory, one refused outright
    assert facts.published == 1


async def test_retry_bus_runs_until_success(autojump_clock: trio.testing.MockClock) -> None:
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 4:
            raise ConnectionLost("refused")
        return "ok"

    with capture_logs() as logs:
        assert await retry_bus("start", flaky) == "ok"
    assert attempts == 4
    outage = [e["event"] for e in logs if e["event"] in ("bus_unavailable", "bus_recovered")]
    assert outage == ["bus_unavailable", "bus_recovered"]


def test_missing_group_recognises_nogroup_only() -> None:
    assert missing_group(CommandError("NOGROUP No such key 'x' or consumer group 'g'"))
    assert not missing_group(CommandError("WRONGTYPE Operation against a key"))
    assert not missing_group(BusError("NOGROUP but not a command error"))


async def test_append_once_does_not_double_an_append_whose_reply_was_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = FaultyBus(MemoryBus())
    bus.fail_after("append")  # it ran; only the reply was lost
    fields = {"k": "call.prompt", "c": "CA1", "d": '{"seq": 3}'}
    with capture_logs() as logs:
        entry_id = await append_once(bus, "s", fields, patience_s=10)
    entries = await bus.inner.range("s")
    assert [(e.id, e.fields) for e in entries] == [(entry_id, fields)]
    outage = [e["event"] for e in logs if e["event"] in ("bus_unavailable", "bus_recovered")]
    assert outage == ["bus_unavailable", "bus_recovered"]


async def test_append_once_appends_again_what_never_arrived(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = FaultyBus(MemoryBus())
    bus.fail_before("append", times=3)  # three outages in a row: nothing written
    await bus.inner.append("s", {"other": "entry"})
    fields = {"k": "call.prompt", "c": "CA1", "d": '{"seq": 4}'}
    with capture_logs():
        entry_id = await append_once(bus, "s", fields, patience_s=10)
    assert [e.fields for e in await bus.inner.range("s")] == [{"other": "entry"}, fields]
    assert (await bus.inner.range("s"))[-1].id == entry_id


async def test_append_once_gives_up_after_its_patience(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = FaultyBus(MemoryBus())
    bus.fail_before("append", times=None)
    started = trio.current_time()
    with capture_logs(), pytest.raises(ConnectionLost):
        await append_once(bus, "s", {"n": "1"}, patience_s=5)
    assert trio.current_time() - started <= 5
    assert await bus.inner.range("s") == []
