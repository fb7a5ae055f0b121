"""The LLM actor's token pacing (``token_coalesce_ms``), on a MemoryBus.

The bus stamps entry ids with the virtual clock (``clock_ms``), so an entry's
id says when it was appended: the floor between entries, the first token
going out at once and the closing entry not waiting are read off the ids.
"""

from __future__ import annotations

import itertools
from functools import partial

import trio
import trio.testing
from llm_envelopes import control_cancel, llm_request

from actors.config import LLMConfig
from actors.llm import LLMActor
from actors.providers import ScriptedProvider
from actors.runtime import serve_actor
from bus.base import Entry, parse_id
from bus.envelope import Envelope
from bus.keys import Keys
from bus.memory import MemoryBus

KEYS = Keys(namespace="llmpace", partitions=4)
CALL = "CA00000000000000000000000000000077"
# Virtual milliseconds, offset so that the first ids are well above 0-0.
EPOCH_MS = 1_000_000


def virtual_bus() -> MemoryBus:
    return MemoryBus(clock_ms=lambda: EPOCH_MS + round(trio.current_time() * 1000))


def request(words: str, *, seq: int = 5, call: str = CALL) -> Envelope:
    return llm_request(call, [{"role": "user", "content": words}], seq=seq)


def at_ms(entry: Entry) -> int:
    """When the entry was appended, in virtual ms since the clock's start."""
    return parse_id(entry.id)[0] - EPOCH_MS


async def tokens_of(bus: MemoryBus) -> list[tuple[int, Envelope]]:
    return [(at_ms(e), Envelope.decode(e.fields)) for e in await bus.range(KEYS.gateway("gw1"))]


async def test_entries_go_out_no_more_often_than_the_floor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = virtual_bus()
    provider = ScriptedProvider(first_token_ms=300, token_gap_ms=20)
    config = LLMConfig(keys=KEYS, token_coalesce_ms=50)
    actor = LLMActor(config, provider)
    words = "please tell me about the opening hours of the shop on main street"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-1"))
            await bus.append(KEYS.llm, request(words).encode())
            [result_entry] = await bus.read(KEYS.calls_for(CALL), "0", block_ms=60_000)
            nursery.cancel_scope.cancel()
    result = Envelope.decode(result_entry.fields)
    sent = await tokens_of(bus)
    times = [t for t, _ in sent]
    tokens = [env for _, env in sent]
    reply = f"You said: {words}. That was message 1 from you."
    word_count = len(reply.split(" "))

    # Nothing lost, reordered or repeated; one closing entry.
    assert "".join(t.body["text"] for t in tokens) == reply == result.body["text"]
    assert [t.body["index"] for t in tokens] == list(range(len(tokens)))
    assert [t.body["last"] for t in tokens] == [False] * (len(tokens) - 1) + [True]
    # The first word goes out alone, as soon as the provider produced it.
    assert tokens[0].body["text"] == "You "
    assert times[0] == 300
    # Later entries: at least the floor apart, several words each.
    gaps = [b - a for a, b in itertools.pairwise(times[:-1])]
    assert gaps and min(gaps) >= 50
    assert len(tokens) < word_count / 2
    # The closing entry leaves when the provider finishes, with the result.
    finished_ms = 300 + (word_count - 1) * 20
    assert times[-1] == finished_ms == at_ms(result_entry)


async def test_zero_floor_sends_one_entry_per_paced_word(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = virtual_bus()
    actor = LLMActor(
        LLMConfig(keys=KEYS, token_coalesce_ms=0),
        ScriptedProvider(first_token_ms=300, token_gap_ms=20),
    )
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-1"))
            await bus.append(KEYS.llm, request("hello there").encode())
            await bus.read(KEYS.calls_for(CALL), "0", block_ms=60_000)
            nursery.cancel_scope.cancel()
    tokens = [env for _, env in await tokens_of(bus)]
    reply = "You said: hello there. That was message 1 from you."
    # The stream ends right after the last word: it travels in the closing entry.
    words = reply.split(" ")
    assert [t.body["text"] for t in tokens] == [w + " " for w in words[:-1]] + [words[-1]]
    assert [t.body["index"] for t in tokens] == list(range(len(tokens)))


async def test_cancel_does_not_wait_for_the_floor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = virtual_bus()
    # A long floor: a cancel that waited for it would show in the ids.
    actor = LLMActor(
        LLMConfig(keys=KEYS, token_coalesce_ms=5000),
        ScriptedProvider(first_token_ms=300, token_gap_ms=20),
    )
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-1"))
            await bus.append(KEYS.llm, request("tell me a long story").encode())
            await bus.read(KEYS.gateway("gw1"), "0", block_ms=60_000)  # first token out
            # Let a few more words pile up behind the floor (virtual time).
            await trio.sleep(0.1)
            cancel_id = await bus.append(KEYS.control, control_cancel(CALL, 5).encode())
            [result_entry] = await bus.read(KEYS.calls_for(CALL), "0", block_ms=60_000)
            nursery.cancel_scope.cancel()
    result = Envelope.decode(result_entry.fields)
    sent = await tokens_of(bus)
    tokens = [env for _, env in sent]
    assert result.body["cancelled"] is True
    # What piled up goes out in the closing entry, at the cancel, not at the floor.
    assert len(tokens) == 2 and tokens[1].body["last"] is True
    assert tokens[1].body["text"] != ""
    assert "".join(t.body["text"] for t in tokens) == result.body["text"]
    cancelled_at = parse_id(cancel_id)[0] - EPOCH_MS
    assert sent[1][0] == at_ms(result_entry) == cancelled_at


async def test_replies_share_the_workers_tick(autojump_clock: trio.testing.MockClock) -> None:
    """Later entries of every reply leave on one 10 ms grid: together, in one pass."""
    bus = virtual_bus()
    actor = LLMActor(
        LLMConfig(keys=KEYS, token_coalesce_ms=50),
        ScriptedProvider(first_token_ms=300, token_gap_ms=20),
    )
    calls = [CALL[:-1] + str(i) for i in range(3)]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-1"))
            for i, call in enumerate(calls):
                env = request(f"caller number {i} would like to book a table for friday", call=call)
                await bus.append(KEYS.llm, env.encode())
                await trio.sleep(0.003)  # out of phase with each other
            for call in calls:
                await bus.read(KEYS.calls_for(call), "0", block_ms=60_000)
            nursery.cancel_scope.cancel()
    by_call: dict[str, list[tuple[int, Envelope]]] = {}
    for at, env in await tokens_of(bus):
        by_call.setdefault(env.call, []).append((at, env))
    middles: list[set[int]] = []
    for call in calls:
        sent = by_call[call]
        # The first token leaves when it is produced, off the grid...
        assert sent[0][0] % 10 != 0 or sent[0][0] == 300
        # ...the later ones on the shared tick, still at least the floor apart.
        times = [at for at, env in sent[1:] if not env.body["last"]]
        assert times and all(t % 10 == 0 for t in times)
        assert min(b - a for a, b in itertools.pairwise([sent[0][0], *times])) >= 50
        middles.append(set(times))
    # First tokens at 300, 303 and 306 ms: the later two replies are due at
    # 353 and 356, the same tick, and so on: their entries leave together.
    assert middles[1] == middles[2]
    assert len(middles[0] | middles[1]) > len(middles[1])
