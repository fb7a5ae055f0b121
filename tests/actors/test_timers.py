"""SharedTimer: many waiters on one Trio deadline, optionally on a grid."""

from __future__ import annotations

import trio
import trio.testing

from actors.timers import SharedTimer


async def test_waiters_wake_at_their_own_times(autojump_clock: trio.testing.MockClock) -> None:
    timer = SharedTimer()
    woke: dict[float, float] = {}

    async def wait(delay: float) -> None:
        start = trio.current_time()
        await timer.sleep_until(start + delay)
        woke[delay] = trio.current_time() - start

    async with trio.open_nursery() as nursery:
        for delay in (0.3, 0.01, 0.2, 0.0101, 0.0):
            nursery.start_soon(wait, delay)
    assert woke == {d: d for d in (0.3, 0.01, 0.2, 0.0101, 0.0)}


async def test_a_grid_rounds_up_never_down(autojump_clock: trio.testing.MockClock) -> None:
    timer = SharedTimer(grid_s=0.01)
    start = trio.current_time()
    assert timer.due(start + 0.6000000000000001) >= start + 0.6000000000000001
    woke: list[float] = []

    async def wait(at: float) -> None:
        await timer.sleep_until(start + at)
        woke.append(round(trio.current_time() - start, 9))

    async with trio.open_nursery() as nursery:
        for at in (0.001, 0.0099, 0.01, 0.0101, 0.6000000000000001):
            nursery.start_soon(wait, at)
    # 0.6000000000000001 is 0.6 on the grid plus float noise: not a tick later.
    assert sorted(woke) == [0.01, 0.01, 0.01, 0.02, 0.6]


async def test_a_cancelled_waiter_leaves_and_the_rest_keep_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timer = SharedTimer()
    start = trio.current_time()
    kept: list[float] = []
    with trio.move_on_after(0.05) as scope:
        await timer.sleep_until(start + 10)
    assert scope.cancelled_caught and trio.current_time() == start + 0.05
    await timer.sleep_until(start + 0.1)
    kept.append(trio.current_time() - start)
    assert kept == [0.1]


def test_one_timer_serves_separate_trio_runs() -> None:
    timer = SharedTimer(grid_s=0.001)

    async def nap() -> float:
        start = trio.current_time()
        await timer.sleep_until(start + 0.002)
        return trio.current_time() - start

    assert trio.run(nap) >= 0.002
    assert trio.run(nap) >= 0.002
