"""``switchboard simulate``'s engine: many Twilio-faithful calls at once.

Each call is a :func:`switchboard.twilio.open_call` (signed webhook and
upgrade when an auth token is given, every app frame validated like Twilio
does) driven by a scenario (``switchboard.twilio.scenario``) through
``driver.run_one``; what was found is a ``results.SimulationResult``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TextIO

import trio

from switchboard.twilio import report
from switchboard.twilio.driver import ReplyCheck, run_one
from switchboard.twilio.results import CallResult, SimulationConfig, SimulationResult
from switchboard.twilio.scenario import Scenario


async def run_simulation(
    config: SimulationConfig,
    scenario: Scenario,
    *,
    progress: Callable[[SimulationResult, int], Awaitable[None]] | None = None,
    check: ReplyCheck | None = None,
) -> SimulationResult:
    """Run ``config.calls`` calls of ``scenario``, at most ``config.concurrency`` at once.

    ``progress(result, active)`` is awaited about once a second while it runs.
    ``check`` judges each reply's text (``switchboard.simulate.run_simulation``
    passes the scripted provider's check when ``config.content`` is ``scripted``).
    Failures are recorded in the result, never raised (but cancellation is).
    """
    if config.calls < 1 or config.concurrency < 1:
        raise ValueError("calls and concurrency must be >= 1")
    result = SimulationResult(config=config, scenario=scenario)
    first = config.index_offset
    result.calls = [CallResult(index=first + i) for i in range(config.calls)]
    result.started_at = trio.current_time()
    slots = trio.Semaphore(config.concurrency)
    active = 0
    step = config.ramp_s / config.concurrency if config.ramp_s > 0 else 0.0

    async def one(i: int) -> None:
        nonlocal active
        active += 1
        try:
            await run_one(first + i, scenario, config, result.calls[i], check)
        finally:
            active -= 1
            slots.release()

    async with trio.open_nursery() as outer:
        if progress is not None:

            async def tick() -> None:
                while True:
                    await trio.sleep(1)
                    await progress(result, active)

            outer.start_soon(tick)
        async with trio.open_nursery() as nursery:
            for i in range(config.calls):
                await slots.acquire()
                nursery.start_soon(one, i)
                if step and i < config.concurrency:
                    await trio.sleep(step)
        outer.cancel_scope.cancel()
    result.duration_s = trio.current_time() - result.started_at
    return result


def progress_printer(stream: TextIO) -> Callable[[SimulationResult, int], Awaitable[None]]:
    """Progress to ``stream``: one rewritten line on a terminal, else a line a second."""
    tty = stream.isatty()

    async def show(result: SimulationResult, active: int) -> None:
        turns = result.turns()
        firsts = [t.first_token_ms for t in turns[-500:] if t.first_token_ms is not None]
        p50 = report.percentile(firsts, 50) if firsts else float("nan")
        done = sum(1 for c in result.calls if c.session_status or c.error)
        line = (
            f"{trio.current_time() - result.started_at:6.0f}s  calls {done}/{result.config.calls}"
            f"  active {active}  turns {len(turns)}  first-token p50 {p50:.1f} ms"
            f"  problems {result.problems}"
        )
        stream.write(("\r" + line + "\x1b[K") if tty else line + "\n")
        stream.flush()

    return show
