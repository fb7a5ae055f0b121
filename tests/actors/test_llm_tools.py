"""The LLM actor's tool loop and cancellation, on a MemoryBus.

Providers are the real ``ScriptedProvider`` (its tool triggers are part of
its contract) and the real ``AnthropicProvider`` against the local fake of
the Messages API, which streams ``tool_use`` blocks as the API does.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import anthropic
import trio
import trio.testing
from fakes.anthropic_server import FakeReply, open_fake_anthropic
from llm_envelopes import control_cancel, llm_request

from actors.config import LLMConfig
from actors.llm import LLMActor
from actors.providers import AnthropicProvider, Provider, ScriptedProvider
from actors.runtime import serve_actor
from actors.tools import (
    CANCELLED_RESULT,
    Tool,
    ToolContext,
    ToolRegistry,
    builtin_tools,
    tool,
)
from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.memory import MemoryBus

KEYS = Keys(namespace="llmtools", partitions=4)
CALL = "CA00000000000000000000000000000042"


def request(words: str, *, seq: int = 5, session: str = "VX1") -> Envelope:
    messages = [{"role": "assistant", "content": "Hi!"}, {"role": "user", "content": words}]
    return llm_request(CALL, messages, seq=seq, session=session)


async def gateway_out(bus: MemoryBus) -> list[Envelope]:
    return [Envelope.decode(e.fields) for e in await bus.range(KEYS.gateway("gw1"))]


async def results(bus: MemoryBus, count: int = 1) -> list[Envelope]:
    found = await bus.read(KEYS.calls_for(CALL), "0", count=count, block_ms=60_000)
    while len(found) < count:
        found += await bus.read(KEYS.calls_for(CALL), found[-1].id, block_ms=60_000)
    return [Envelope.decode(e.fields) for e in found]


async def facts(bus: MemoryBus, name: str) -> list[dict[str, Any]]:
    out = [Envelope.decode(e.fields).body for e in await bus.range(KEYS.events)]
    return [b for b in out if b.get("fact") == name]


def actor_for(provider: Provider, *, tools: tuple[str, ...] = (), **config: Any) -> LLMActor:
    return LLMActor(LLMConfig(keys=KEYS, tools=tools, **config), provider)


async def run_requests(actor: LLMActor, *requests: Envelope) -> tuple[MemoryBus, list[Envelope]]:
    bus = MemoryBus()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_actor, bus, actor, consumer="llm-1"))
        for env in requests:
            await bus.append(KEYS.llm, env.encode())
        found = await results(bus, len(requests))
        nursery.cancel_scope.cancel()
    return bus, found


def spoken(out: list[Envelope], reply_to: int = 5) -> str:
    return "".join(
        e.body["text"] for e in out if e.kind == Kind.LLM_TOKENS and e.body["reply_to"] == reply_to
    )


def blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def text_of(messages: list[dict[str, Any]]) -> str:
    return "".join(b["text"] for m in messages for b in blocks(m) if b["type"] == "text")


def assert_pairs_intact(messages: list[dict[str, Any]]) -> None:
    """Every tool_use is answered by a tool_result in the very next message."""
    for i, m in enumerate(messages):
        uses = [b["id"] for b in blocks(m) if b["type"] == "tool_use"]
        if uses:
            nxt = messages[i + 1]
            assert nxt["role"] == "user"
            answered = [b["tool_use_id"] for b in nxt["content"] if b["type"] == "tool_result"]
            assert answered == uses


async def test_end_call_says_goodbye_then_ends_after_the_speech(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        bus, [result] = await run_requests(
            actor_for(ScriptedProvider(), tools=("end_call",)), request("ok, goodbye")
        )
    out = await gateway_out(bus)
    # The goodbye, closed by last=true, and only then the end frame.
    assert [e.kind for e in out][-2:] == [Kind.LLM_TOKENS, Kind.GATEWAY_SEND]
    assert out[-2].body["last"] is True
    send = out[-1]
    assert send.body["after_speech"] is True
    assert send.session == "VX1" and send.call == CALL
    assert send.body["frame"]["type"] == "end"
    assert json.loads(send.body["frame"]["handoffData"]) == {"reason": "end_call"}
    body = result.body
    assert spoken(out) == body["text"] == "Thanks for calling. Goodbye!"
    assert body["cancelled"] is False
    assert body["messages"][0] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Thanks for calling. Goodbye!"},
            {
                "type": "tool_use",
                "id": "toolu_scripted_0_end_call",
                "name": "end_call",
                "input": {},
            },
        ],
    }
    assert body["messages"][1]["role"] == "user"
    assert len(body["messages"]) == 2  # nothing more is said after the tool
    assert_pairs_intact(body["messages"])
    assert [(c["name"], c["is_error"]) for c in body["tool_calls"]] == [("end_call", False)]
    assert [f["name"] for f in await facts(bus, "tool_called")] == ["end_call"]


async def test_transfer_hands_off_to_the_configured_number_or_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        bus, _ = await run_requests(
            actor_for(ScriptedProvider(), tools=("transfer",), transfer_number="+15551234567"),
            request("I want a person please"),
        )
        queue_bus, _ = await run_requests(
            actor_for(ScriptedProvider(), tools=("transfer",), transfer_queue="support"),
            request("transfer me"),
        )
    for b, handoff in (
        (bus, {"reason": "transfer", "number": "+15551234567"}),
        (queue_bus, {"reason": "transfer", "queue": "support"}),
    ):
        out = await gateway_out(b)
        assert spoken(out) == "Let me transfer you to a person."
        end = out[-1]
        assert end.kind == Kind.GATEWAY_SEND and end.body["after_speech"] is True
        assert json.loads(end.body["frame"]["handoffData"]) == handoff


async def test_send_digits_goes_out_in_order_with_the_text(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        bus, [result] = await run_requests(
            actor_for(ScriptedProvider(token_gap_ms=10), tools=("send_digits",)),
            request("press 1 2 3 #"),
        )
    out = await gateway_out(bus)
    kinds = [e.kind for e in out]
    frame_at = kinds.index(Kind.GATEWAY_SEND)
    assert out[frame_at].body == {
        "frame": {"type": "sendDigits", "digits": "123#"},
        "after_speech": False,
        "origin": "llm",
    }
    assert spoken(out[:frame_at]) == "Sending the digits now."
    assert spoken(out[frame_at:]) == " Done."
    assert result.body["text"] == "Sending the digits now. Done."
    messages = result.body["messages"]
    assert [m["role"] for m in messages] == ["assistant", "user", "assistant"]
    assert text_of(messages) == result.body["text"]
    assert_pairs_intact(messages)


async def test_switch_language_only_to_the_profiles_languages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        bus, [ok] = await run_requests(
            actor_for(ScriptedProvider(), tools=("switch_language",), languages=("en-US", "es-ES")),
            request("can we speak spanish"),
        )
        refused_bus, [refused] = await run_requests(
            actor_for(ScriptedProvider(), tools=("switch_language",), languages=("en-US",)),
            request("can we speak spanish"),
        )
    frames = [e.body["frame"] for e in await gateway_out(bus) if e.kind == Kind.GATEWAY_SEND]
    assert frames == [
        {"type": "language", "ttsLanguage": "es-ES", "transcriptionLanguage": "es-ES"}
    ]
    assert ok.body["tool_calls"][0]["is_error"] is False
    assert not [e for e in await gateway_out(refused_bus) if e.kind == Kind.GATEWAY_SEND]
    call = refused.body["tool_calls"][0]
    assert call["is_error"] is True and "not available" in call["result"]
    assert refused.body["text"].endswith("Sorry, I could not do that.")


def user_tools(*tools: Tool) -> ToolRegistry:
    available = builtin_tools()
    available.update({t.name: t for t in tools})
    return ToolRegistry(available, [t.name for t in tools])


async def test_user_tool_runs_once_per_tool_use_even_when_redelivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs: list[str] = []

    @tool(
        description="Look up an order.",
        input_schema={"type": "object", "properties": {"query": {"type": "string"}}},
    )
    async def order_status(input: dict[str, Any], ctx: ToolContext) -> str:
        runs.append(ctx.idempotency_key)
        return "Order 7 ships tomorrow."

    actor = LLMActor(LLMConfig(keys=KEYS), ScriptedProvider(), user_tools(order_status))
    same = request("what is my order status")
    bus = MemoryBus()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-1"))
            # The same request again once the first was answered: as a
            # redelivery after a worker died between the tool and the ack.
            await bus.append(KEYS.llm, same.encode())
            [first] = await results(bus)
            await bus.append(KEYS.llm, same.encode())
            first, second = await results(bus, 2)
            nursery.cancel_scope.cancel()
    assert runs == [f"{CALL}:5:toolu_scripted_0_order_status"]
    for result in (first, second):
        [call] = result.body["tool_calls"]
        assert call["input"] == {"query": "what is my order status"}
        assert call["result"] == "Order 7 ships tomorrow." and call["is_error"] is False


async def test_user_tool_timeout_and_exception_become_error_results(
    autojump_clock: trio.testing.MockClock,
) -> None:
    @tool(description="Slow.", timeout_s=2.0)
    async def slow_lookup(input: dict[str, Any], ctx: ToolContext) -> str:
        await trio.sleep(60)
        return "never"

    @tool(description="Broken.")
    async def broken_lookup(input: dict[str, Any], ctx: ToolContext) -> str:
        raise RuntimeError("database down")

    actor = LLMActor(
        LLMConfig(keys=KEYS), ScriptedProvider(), user_tools(slow_lookup, broken_lookup)
    )
    with trio.fail_after(30):
        _, found = await run_requests(
            actor, request("slow lookup please", seq=5), request("broken lookup", seq=7)
        )
    slow, broken = sorted(found, key=lambda r: int(r.body["reply_to"]))
    assert slow.body["tool_calls"][0]["result"] == "timed out after 2 s"
    assert broken.body["tool_calls"][0]["result"] == "RuntimeError: database down"
    for result in (slow, broken):
        assert result.body["tool_calls"][0]["is_error"] is True
        assert result.body["text"].endswith("Sorry, I could not do that.")
        assert_pairs_intact(result.body["messages"])


async def cancel(bus: MemoryBus, reply_to: int, reason: str = "interrupt") -> None:
    await bus.append(KEYS.control, control_cancel(CALL, reply_to, reason=reason).encode())


async def test_cancel_stops_the_stream_and_still_writes_a_cancelled_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    actor = actor_for(ScriptedProvider(token_gap_ms=100))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-1"))
            await bus.append(KEYS.llm, request("tell me a long story").encode())
            await bus.read(KEYS.gateway("gw1"), "0", block_ms=60_000)  # first token out
            await cancel(bus, 5)
            [result] = await results(bus)
            nursery.cancel_scope.cancel()
    out = await gateway_out(bus)
    body = result.body
    assert body["cancelled"] is True
    full = "You said: tell me a long story. That was message 1 from you."
    assert 0 < len(body["text"]) < len(full) and full.startswith(body["text"])
    assert spoken(out) == body["text"] and out[-1].body["last"] is True
    assert text_of(body["messages"]) == body["text"]
    [fact] = await facts(bus, "generation_cancelled")
    assert fact["reason"] == "interrupt" and fact["reply_to"] == 5
    [done] = await facts(bus, "completion_done")
    assert done["cancelled"] is True


async def test_cancel_mid_tool_closes_the_pair_and_drops_the_pending_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started = trio.Event()

    @tool(description="Slow.", timeout_s=600)
    async def slow_lookup(input: dict[str, Any], ctx: ToolContext) -> str:
        started.set()
        await trio.sleep(300)
        return "never"

    bus = MemoryBus()
    actor = LLMActor(LLMConfig(keys=KEYS), ScriptedProvider(), user_tools(slow_lookup))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-1"))
            await bus.append(KEYS.llm, request("slow lookup please").encode())
            await started.wait()
            await cancel(bus, 5, "superseded")
            [result] = await results(bus)
            nursery.cancel_scope.cancel()
    body = result.body
    assert body["cancelled"] is True
    assert_pairs_intact(body["messages"])
    [closing] = body["messages"][-1]["content"]
    assert closing == {
        "type": "tool_result",
        "tool_use_id": "toolu_scripted_0_slow_lookup",
        "content": CANCELLED_RESULT,
        "is_error": True,
    }


async def test_cancelled_end_call_is_not_sent(autojump_clock: trio.testing.MockClock) -> None:
    ran = trio.Event()
    builtin = builtin_tools()["end_call"]

    async def end_call(input: dict[str, Any], ctx: ToolContext) -> str:
        result = await builtin.run(input, ctx)
        ran.set()
        return result

    registry = ToolRegistry(
        {"end_call": Tool("end_call", builtin.description, builtin.input_schema, end_call)},
        ["end_call"],
    )
    bus = MemoryBus()
    # first_token_ms: the follow-up round waits, so the cancel lands after
    # the tool ran and before the reply closed.
    actor = LLMActor(LLMConfig(keys=KEYS), ScriptedProvider(first_token_ms=1000), registry)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-1"))
            await bus.append(KEYS.llm, request("bye").encode())
            await ran.wait()
            await cancel(bus, 5)
            [result] = await results(bus)
            nursery.cancel_scope.cancel()
    assert result.body["cancelled"] is True
    assert result.body["text"] == "Thanks for calling. Goodbye!"
    assert not [e for e in await gateway_out(bus) if e.kind == Kind.GATEWAY_SEND]
    [call] = result.body["tool_calls"]
    assert call["result"] == CANCELLED_RESULT and call["is_error"] is True
    assert_pairs_intact(result.body["messages"])


async def test_a_request_arriving_after_its_cancel_is_not_generated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    actor = actor_for(ScriptedProvider())
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-1"))
            await cancel(bus, 5, "superseded")
            await trio.testing.wait_all_tasks_blocked()
            await bus.append(KEYS.llm, request("hello").encode())
            # Another session's reply 5 is not affected (seq restarts per session).
            await bus.append(KEYS.llm, request("hello", session="VX2").encode())
            first, second = await results(bus, 2)
            nursery.cancel_scope.cancel()
    by_session = {r.session: r.body for r in (first, second)}
    assert by_session["VX1"]["cancelled"] is True and by_session["VX1"]["text"] == ""
    assert by_session["VX1"]["messages"] == []
    assert by_session["VX2"]["cancelled"] is False
    assert by_session["VX2"]["text"].startswith("You said: hello")
    closing = [e for e in await gateway_out(bus) if e.session == "VX1"]
    assert [(e.body["text"], e.body["last"]) for e in closing] == [("", True)]


async def test_anthropic_tool_use_round_trip_through_the_real_sdk() -> None:
    def respond(payload: dict[str, Any]) -> FakeReply:
        last = payload["messages"][-1]
        if isinstance(last["content"], list) and last["content"][0]["type"] == "tool_result":
            return FakeReply(["Pressed", " them."])
        return FakeReply(
            ["One", " moment."],
            tool_uses=[{"id": "toolu_01", "name": "send_digits", "input": {"digits": "42#"}}],
        )

    with trio.fail_after(20):
        async with open_fake_anthropic(responder=respond) as fake:
            client = anthropic.AsyncAnthropic(
                api_key="test-key", base_url=fake.base_url, max_retries=0
            )
            provider = AnthropicProvider("claude-test", 64, client)
            bus, [result] = await run_requests(
                # No filler: a loaded machine can pass its 1.2 s before the first token.
                actor_for(provider, tools=("send_digits",), filler_after_s=0),
                request("press 4 2 hash"),
            )
    first, second = fake.requests
    assert [t["name"] for t in first["tools"]] == ["send_digits"]
    assert second["messages"][-2] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "One moment."},
            {
                "type": "tool_use",
                "id": "toolu_01",
                "name": "send_digits",
                "input": {"digits": "42#"},
                # The prefix up to the tool round is marked for the prompt cache.
                "cache_control": {"type": "ephemeral"},
            },
        ],
    }
    assert second["messages"][-1] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": "Sent the digits 42#."}
        ],
    }
    frames = [e.body["frame"] for e in await gateway_out(bus) if e.kind == Kind.GATEWAY_SEND]
    assert frames == [{"type": "sendDigits", "digits": "42#"}]
    assert result.body["text"] == "One moment. Pressed them."
    # A lone text block is kept in the plain-string form.
    assert result.body["messages"][-1] == {"role": "assistant", "content": " Pressed them."}
    assert result.body["stop_reason"] == "end_turn"
    assert_pairs_intact(result.body["messages"])
