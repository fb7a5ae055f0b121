"""``bus.retry``: jittered exponential backoff, one log line per outage."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from bus.base import BusError, CommandError, ConnectionLost
from bus.memory import MemoryBus
from bus.retry import Backoff, append_once, missing_group, retry_bus
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
    backoff = Backoff("reader", rng=lambda: 1.0, stream="s1")
    with capture_logs() as logs:
        started = trio.current_time()
        for _ in range(10):
            await backoff.failed(ConnectionLost("gone"))
        slept = trio.current_time() - started
        backoff.succeeded()
        backoff.succeeded()
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
