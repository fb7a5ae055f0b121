"""``bus.retry``: jittered exponential backoff, one log line per outage."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from bus.base import BusError, CommandError, ConnectionLost
from bus.retry import Backoff, missing_group, retry_bus


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
    assert [e["event"] for e in logs] == ["bus_unavailable", "bus_recovered"]


def test_missing_group_recognises_nogroup_only() -> None:
    assert missing_group(CommandError("NOGROUP No such key 'x' or consumer group 'g'"))
    assert not missing_group(CommandError("WRONGTYPE Operation against a key"))
    assert not missing_group(BusError("NOGROUP but not a command error"))
