"""Held (speculative) replies in the LLM actor, on a MemoryBus.

A request marked ``held`` streams as any other, but every token entry is
marked held (the gateway keeps them until the reply is adopted), it never
gets the filler line, and its tools wait for ``control.adopt``: a
speculation that is discarded never acts on the call.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import trio
import trio.testing
from llm_envelopes import control_cancel, llm_request

from actors.config import LLMConfig
from actors.llm import LLMActor
from actors.providers import ScriptedProvider
from actors.runtime import serve_actor
from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.memory import MemoryBus
from bus.messages import ControlAdopt, envelope

KEYS = Keys(namespace="llmheld", partitions=4)
CALL = "CA00000000000000000000000000000043"


def held_request(words: str, *, seq: int = 5) -> Envelope:
    env = llm_request(CALL, [{"role": "user", "content": words}], seq=seq)
    return replace(env, body={**env.body, "held": True})


def adopt(reply_to: int, seq: int) -> Envelope:
    return envelope(ControlAdopt(reply_to=reply_to, seq=seq), call=CALL, session="VX1")


async def out(bus: MemoryBus) -> list[Envelope]:
    return [Envelope.decode(e.fields) for e in await bus.range(KEYS.gateway("gw1"))]


async def results(bus: MemoryBus) -> list[Envelope]:
    return [Envelope.decode(e.fields) for e in await bus.range(KEYS.calls_for(CALL))]


async def facts(bus: MemoryBus, name: str) -> list[dict[str, Any]]:
    bodies = [Envelope.decode(e.fields).body for e in await bus.range(KEYS.events)]
    return [b for b in bodies if b.get("fact") == name]


def actor(**config: Any) -> LLMActor:
    # Requests are stamped with the real wall clock: a loaded machine must not
    # make them look late enough to shed (tests/e2e_conversation covers shedding).
    config.setdefault("speculation_max_lag_ms", 0)
    return LLMActor(LLMConfig(keys=KEYS, **config), ScriptedProvider(**_pacing(config)))


def _pacing(config: dict[str, Any]) -> dict[str, float]:
    return {
        "first_token_ms": config.get("scripted_first_token_ms", 0.0),
        "token_gap_ms": config.get("scripted_token_gap_ms", 0.0),
    }


async def wait_results(bus: MemoryBus, count: int = 1) -> list[Envelope]:
    stream = KEYS.calls_for(CALL)
    found = await bus.read(stream, "0", count=count, block_ms=60_000)
    while len(found) < count:
        found += await bus.read(stream, found[-1].id, block_ms=60_000)
    return [Envelope.decode(e.fields) for e in found]


async def test_every_token_entry_of_a_held_reply_is_marked_and_no_filler_comes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    llm = actor(filler_after_s=0.1, scripted_first_token_ms=500.0, scripted_token_gap_ms=20.0)
    bus = MemoryBus()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, llm, consumer="llm-1"))
            await bus.append(KEYS.llm, held_request("A table for two").encode())
            (result,) = await wait_results(bus)
            nursery.cancel_scope.cancel()
    entries = await out(bus)
    tokens = [e for e in entries if e.kind == Kind.LLM_TOKENS]
    assert len(tokens) > 2 and all(e.body["held"] is True for e in tokens)
    assert tokens[-1].body["last"] is True
    assert not [e for e in entries if e.kind == Kind.GATEWAY_SEND]  # no filler line
    assert "".join(e.body["text"] for e in tokens) == result.body["text"]
    (done,) = await facts(bus, "completion_done")
    assert done["held"] is True


async def _tool_reply(bus: MemoryBus, *, then: Envelope | None) -> list[Envelope]:
    llm = actor(tools=("send_digits",))
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_actor, bus, llm, consumer="llm-1"))
        await bus.append(KEYS.llm, held_request("Please press 1 2 3").encode())
        # The lead-in is streamed (held); the tool waits for the adoption.
        await trio.sleep(10)
        assert not [e for e in await out(bus) if e.kind == Kind.GATEWAY_SEND]
        assert await results(bus) == []
        if then is not None:
            await bus.append(KEYS.control, then.encode())
        found = await wait_results(bus)
        nursery.cancel_scope.cancel()
    return found


async def test_a_held_replys_tool_runs_only_once_adopted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    with trio.fail_after(120):
        (result,) = await _tool_reply(bus, then=adopt(5, 9))
    sends = [e for e in await out(bus) if e.kind == Kind.GATEWAY_SEND]
    assert [s.body["frame"] for s in sends] == [{"type": "sendDigits", "digits": "123"}]
    assert [c["name"] for c in result.body["tool_calls"]] == ["send_digits"]
    assert result.body["cancelled"] is False


async def test_a_discarded_held_reply_never_runs_its_tool(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    with trio.fail_after(120):
        (result,) = await _tool_reply(bus, then=control_cancel(CALL, 5, reason="mismatch"))
    assert not [e for e in await out(bus) if e.kind == Kind.GATEWAY_SEND]
    assert result.body["cancelled"] is True
    assert all(c["is_error"] for c in result.body["tool_calls"])


async def _cancelled_at(bus: MemoryBus, at_s: float, *, adopted: bool = False) -> None:
    """A held request (first token after 500 ms), cancelled ``at_s`` after it went."""
    llm = actor(scripted_first_token_ms=500.0, scripted_token_gap_ms=20.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_actor, bus, llm, consumer="llm-1"))
        await bus.append(KEYS.llm, held_request("A table for two").encode())
        if adopted:
            await bus.append(KEYS.control, adopt(5, 9).encode())
        await trio.sleep(at_s)
        await bus.append(KEYS.control, control_cancel(CALL, 5, reason="changed").encode())
        after = "0"
        done = False
        while not done:  # a blocking read until the reply's facts are written
            for entry in await bus.read(KEYS.events, after, count=100, block_ms=60_000):
                after = entry.id
                done = done or Envelope.decode(entry.fields).body.get("fact") == "completion_done"
        nursery.cancel_scope.cancel()


async def test_a_speculation_cancelled_before_it_said_anything_writes_only_facts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    with trio.fail_after(30):
        await _cancelled_at(bus, 0.1)
    assert await results(bus) == []  # nothing on the call's partition stream
    assert await out(bus) == []  # nothing for the gateway to hold
    (done,) = await facts(bus, "completion_done")
    assert done["held"] is True and done["cancelled"] is True


async def test_a_speculation_cancelled_after_some_text_or_once_adopted_has_its_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for at_s, adopted in ((0.6, False), (0.1, True)):
        bus = MemoryBus()
        with trio.fail_after(30):
            await _cancelled_at(bus, at_s, adopted=adopted)
        (result,) = await results(bus)
        assert result.body["cancelled"] is True
        assert bool(result.body["text"]) is not adopted  # said something, or was adopted
