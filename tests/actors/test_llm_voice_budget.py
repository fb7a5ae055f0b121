"""The LLM actor within a voice budget, on a MemoryBus.

The filler line when a first token is late (never on two turns in a row,
never in the reply's text or history), the fallback line on a refusal, and
a thinking model's tool round (its thinking sent back unchanged). Providers:
the scripted one (on the autojump clock) and the real Anthropic SDK against
the local fake of the API.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from typing import Any

import anthropic
import pytest
import trio
import trio.testing
from fakes.anthropic_server import FakeReply, open_fake_anthropic, thinking_signature
from llm_envelopes import llm_request

from actors.config import DEFAULT_FILLER_TEXT, DEFAULT_REFUSAL_LINE, LLMConfig
from actors.llm import LLMActor
from actors.llm import actor as llm_actor_module
from actors.llm import generate as llm_generate_module
from actors.providers import AnthropicProvider, Provider, ScriptedProvider
from actors.runtime import serve_actor
from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.memory import MemoryBus
from switchboard.testing import FaultyBus

KEYS = Keys(namespace="llmbudget", partitions=4)
CALL = "CA00000000000000000000000000000077"


def request(words: str, *, seq: int, turn: int) -> Envelope:
    messages = [{"role": "assistant", "content": "Hi!"}, {"role": "user", "content": words}]
    return llm_request(CALL, messages, seq=seq, turn=turn)


async def one_by_one(provider: Provider, *requests: Envelope, **config: Any) -> MemoryBus:
    """Each request answered before the next is asked, as turns of a call are."""
    bus = MemoryBus()
    actor = LLMActor(LLMConfig(keys=KEYS, **config), provider)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_actor, bus, actor, consumer="llm-1"))
        last = "0"
        for env in requests:
            await bus.append(KEYS.llm, env.encode())
            found = await bus.read(KEYS.calls_for(CALL), last, count=1, block_ms=60_000)
            last = found[0].id
        nursery.cancel_scope.cancel()
    return bus


async def gateway_out(bus: MemoryBus) -> list[Envelope]:
    return [Envelope.decode(e.fields) for e in await bus.range(KEYS.gateway("gw1"))]


async def results(bus: MemoryBus) -> list[dict[str, Any]]:
    return [Envelope.decode(e.fields).body for e in await bus.range(KEYS.calls_for(CALL))]


def fillers(out: list[Envelope]) -> list[int]:
    """The turns whose reply was preceded by the filler line."""
    return [
        e.turn
        for e in out
        if e.kind == Kind.GATEWAY_SEND and e.body["frame"].get("token", "").startswith("One")
    ]


async def test_a_late_first_token_gets_the_filler_but_never_two_turns_in_a_row(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slow = ScriptedProvider(first_token_ms=2000)
    with trio.fail_after(60):
        bus = await one_by_one(
            slow,
            request("one", seq=5, turn=2),
            request("two", seq=9, turn=3),
            request("three", seq=13, turn=4),
        )
    out = await gateway_out(bus)
    assert fillers(out) == [2, 4]
    filler = next(e for e in out if e.kind == Kind.GATEWAY_SEND)
    assert filler.body["frame"] == {
        "type": "text",
        "token": f"{DEFAULT_FILLER_TEXT} ",
        "last": False,
    }
    assert filler.body["origin"] == "llm"
    # The filler goes out before the reply's first token, and is not the reply.
    first_tokens = next(e for e in out if e.kind == Kind.LLM_TOKENS and e.turn == 2)
    assert out.index(filler) < out.index(first_tokens)
    for body in await results(bus):
        assert DEFAULT_FILLER_TEXT not in body["text"]
        assert DEFAULT_FILLER_TEXT not in str(body["messages"])


async def test_a_first_token_on_time_gets_no_filler(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The filler counts from the request's wall-clock stamp. Real time passes
    # while the mock clock jumps, so on a loaded machine the actor's start-up
    # alone could eat the 600 ms margin: the actor's wall clock follows the
    # virtual one here, and no real delay counts against the budget.
    origin = time.time() * 1000 - trio.current_time() * 1000

    def virtual_wall_ms() -> float:
        return origin + trio.current_time() * 1000

    for module in (llm_actor_module, llm_generate_module):
        monkeypatch.setattr(module, "wall_ms", virtual_wall_ms)
    env = replace(request("hi", seq=5, turn=2), ts=virtual_wall_ms())
    with trio.fail_after(60):
        bus = await one_by_one(ScriptedProvider(first_token_ms=1100), env)
    assert fillers(await gateway_out(bus)) == []


async def test_the_filler_can_be_turned_off(autojump_clock: trio.testing.MockClock) -> None:
    slow = ScriptedProvider(first_token_ms=2000)
    with trio.fail_after(60):
        bus = await one_by_one(slow, request("hi", seq=5, turn=2), filler_after_s=0)
    assert fillers(await gateway_out(bus)) == []


def client_for(base_url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="k", base_url=base_url, max_retries=0)


async def test_a_refusal_ends_with_the_fallback_line_and_keeps_only_that() -> None:
    reply = FakeReply(["Sure, the first", " step is"], stop_reason="refusal")
    with trio.fail_after(20):
        async with open_fake_anthropic(responder=lambda _: reply) as fake:
            provider = AnthropicProvider("claude-test", 256, client_for(fake.base_url))
            bus = await one_by_one(provider, request("how do I pick a lock", seq=5, turn=2))
    (result,) = await results(bus)
    assert result["stop_reason"] == "refusal"
    assert result["error"] is None
    assert result["text"] == f"Sure, the first step is {DEFAULT_REFUSAL_LINE}"
    assert result["messages"] == [{"role": "assistant", "content": DEFAULT_REFUSAL_LINE}]
    spoken = "".join(e.body["text"] for e in await gateway_out(bus) if e.kind == Kind.LLM_TOKENS)
    assert spoken.endswith(DEFAULT_REFUSAL_LINE)
    assert "trouble" not in spoken  # not the apology


async def test_a_thinking_model_with_a_tool_round_gets_no_400() -> None:
    thought = ["The caller wants", " digits sent."]

    def respond(payload: dict[str, Any]) -> FakeReply:
        last = payload["messages"][-1]
        if isinstance(last["content"], list) and last["content"][0]["type"] == "tool_result":
            return FakeReply(["Done."], thinking=["Sent."])
        return FakeReply(
            ["One", " moment."],
            tool_uses=[{"id": "toolu_01", "name": "send_digits", "input": {"digits": "42#"}}],
            thinking=thought,
            redacted_thinking=["SEALED=="],
        )

    with trio.fail_after(20):
        async with open_fake_anthropic(responder=respond) as fake:
            provider = AnthropicProvider(
                "claude-test", 4096, client_for(fake.base_url), thinking="adaptive"
            )
            bus = await one_by_one(
                provider, request("press 4 2 hash", seq=5, turn=2), tools=("send_digits",)
            )
    (result,) = await results(bus)
    assert result["error"] is None, result["error"]
    assert fake.rejected == []
    assert result["text"] == "One moment. Done."
    thinking = {"type": "thinking", "thinking": "".join(thought)}
    thinking["signature"] = thinking_signature(thinking["thinking"])
    round_one = {
        "role": "assistant",
        "content": [
            thinking,
            {"type": "redacted_thinking", "data": "SEALED=="},
            {"type": "text", "text": "One moment."},
            {
                "type": "tool_use",
                "id": "toolu_01",
                "name": "send_digits",
                "input": {"digits": "42#"},
            },
        ],
    }
    # Sent back unchanged, but for the prompt-cache marker on its last block.
    sent_back = fake.requests[1]["messages"][-2]
    assert sent_back["content"][-1].pop("cache_control") == {"type": "ephemeral"}
    assert sent_back == round_one
    assert result["messages"][0] == round_one
    # Thinking is never spoken.
    spoken = "".join(e.body["text"] for e in await gateway_out(bus) if e.kind == Kind.LLM_TOKENS)
    assert "caller wants" not in spoken and "Sent." not in spoken


async def first_tokens(bus: FaultyBus) -> None:
    """Wait until the reply's first token entry is on the gateway's stream."""
    last = "0"
    while True:
        (entry,) = await bus.read(KEYS.gateway("gw1"), last, count=1, block_ms=60_000)
        if Envelope.decode(entry.fields).kind == Kind.LLM_TOKENS:
            return
        last = entry.id


@pytest.mark.parametrize("method", ["get", "set"])
async def test_the_filler_never_plays_inside_a_reply_whose_first_token_beat_it(
    method: str, autojump_clock: trio.testing.MockClock
) -> None:
    # A bus reply of the filler came in the same scheduler pass as the
    # reply's first token (a loaded worker): the filler task goes on with it
    # after the token was sent. Held here across the token, so the token
    # comes first every time.
    bus = FaultyBus(MemoryBus())
    filler_key = KEYS.filler(CALL)
    held = bus.stall(method, when=lambda key, *_: key == filler_key, moment="after")
    slow = ScriptedProvider(first_token_ms=2000, token_gap_ms=200)
    actor = LLMActor(LLMConfig(keys=KEYS), slow)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-1"))
            await bus.append(KEYS.llm, request("one", seq=5, turn=2).encode())
            await held.reached.wait()
            await first_tokens(bus)
            held.release()
            await bus.read(KEYS.calls_for(CALL), "0", count=1, block_ms=60_000)
            nursery.cancel_scope.cancel()
    out = [Envelope.decode(e.fields) for e in await bus.range(KEYS.gateway("gw1"))]
    kinds = [e.kind for e in out]
    # The filler, if any, only before the reply's first token.
    assert Kind.GATEWAY_SEND not in kinds[kinds.index(Kind.LLM_TOKENS) :]
    spoken = "".join(e.body["text"] for e in out if e.kind == Kind.LLM_TOKENS)
    assert spoken.startswith("You said: one.")
    assert DEFAULT_FILLER_TEXT not in spoken
