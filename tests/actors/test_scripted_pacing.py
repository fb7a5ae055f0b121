"""The scripted provider's pacing: one shared timer, the provider's own clock."""

from __future__ import annotations

import trio
import trio.testing

from actors.providers.base import CompletionRequest
from actors.providers.scripted import ScriptedProvider


def request(words: str) -> CompletionRequest:
    return CompletionRequest(system="s", messages=[{"role": "user", "content": words}])


async def timed(provider: ScriptedProvider, req: CompletionRequest) -> list[tuple[float, str]]:
    out: list[tuple[float, str]] = []
    start = trio.current_time()
    async with provider.complete(req) as completion:
        async for delta in completion.deltas():
            out.append((round(trio.current_time() - start, 6), delta))
    return out


async def test_words_arrive_on_the_providers_schedule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = ScriptedProvider(first_token_ms=300, token_gap_ms=20)
    got = await timed(provider, request("hello"))
    times = [t for t, _ in got]
    assert times[0] == 0.3
    assert times == [round(0.3 + 0.02 * i, 6) for i in range(len(got))]
    assert "".join(d for _, d in got) == "You said: hello. That was message 1 from you."


async def test_many_streams_share_the_timer_and_keep_their_own_phase(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = ScriptedProvider(first_token_ms=100, token_gap_ms=30)
    results: dict[int, list[tuple[float, str]]] = {}

    async def one(i: int) -> None:
        await trio.sleep(0.007 * i)  # streams start out of phase
        results[i] = await timed(provider, request(f"caller {i}"))

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(one, i)
    for i, got in results.items():
        assert [t for t, _ in got] == [round(0.1 + 0.03 * k, 6) for k in range(len(got))], i
        assert "".join(d for _, d in got).startswith(f"You said: caller {i}.")


async def test_a_cancelled_stream_leaves_at_once_and_the_others_go_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = ScriptedProvider(first_token_ms=50, token_gap_ms=20)
    kept: list[tuple[float, str]] = []
    stopped: list[float] = []

    async def cancelled() -> None:
        with trio.move_on_after(0.095):
            await timed(provider, request("stop me"))
        stopped.append(trio.current_time())

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancelled)
        kept.extend(await timed(provider, request("keep going")))
    assert stopped == [start + 0.095]
    assert [t for t, _ in kept] == [round(0.05 + 0.02 * i, 6) for i in range(len(kept))]


async def test_a_slow_consumer_finds_the_words_it_missed_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = ScriptedProvider(first_token_ms=10, token_gap_ms=10)
    times: list[float] = []
    start = trio.current_time()
    async with provider.complete(request("one two three four")) as completion:
        async for _ in completion.deltas():
            times.append(round(trio.current_time() - start, 6))
            if len(times) == 1:
                await trio.sleep(0.035)  # busy for three and a half gaps
    # Words 2-4 were due at 0.02, 0.03, 0.04: they come as soon as asked for.
    assert times[:5] == [0.01, 0.045, 0.045, 0.045, 0.05]


def test_a_provider_works_across_separate_trio_runs() -> None:
    provider = ScriptedProvider(first_token_ms=1, token_gap_ms=1)
    for _ in range(2):
        got = trio.run(timed, provider, request("again"))
        assert "".join(d for _, d in got).startswith("You said: again.")
