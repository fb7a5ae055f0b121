"""The LLM actor on a MemoryBus: token coalescing, the result, the error path.

Providers here are the real ``ScriptedProvider``, a burst provider (a fake of
an LLM that emits several deltas at once, as real models do) and the real
``AnthropicProvider`` talking to the local fake of the Messages API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anthropic
import pytest
import trio
import trio.testing
from fakes.anthropic_server import open_fake_anthropic

from actors.config import LLMConfig
from actors.llm import APOLOGY, LLMActor
from actors.providers import (
    AnthropicProvider,
    Completion,
    CompletionRequest,
    Provider,
    ScriptedProvider,
    ToolUse,
    Usage,
)
from actors.runtime import serve_actor
from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.memory import MemoryBus
from bus.messages import ContentBlock

KEYS = Keys(namespace="llmt", partitions=4)
CALL = "CA00000000000000000000000000000009"


class BurstCompletion:
    """Deltas in bursts: each inner list is produced without yielding to Trio."""

    def __init__(self, bursts: Sequence[Sequence[str]]) -> None:
        self.bursts = bursts
        self._usage = Usage()

    @property
    def stop_reason(self) -> str | None:
        return "end_turn"

    @property
    def usage(self) -> Usage:
        return self._usage

    @property
    def tool_uses(self) -> list[ToolUse]:
        return []

    @property
    def content(self) -> list[ContentBlock]:
        return []

    async def deltas(self) -> AsyncIterator[str]:
        for burst in self.bursts:
            await trio.sleep(0.01)
            for piece in burst:
                self._usage.output_tokens += 1
                yield piece


class BurstProvider:
    def __init__(self, bursts: Sequence[Sequence[str]]) -> None:
        self.bursts = bursts

    @asynccontextmanager
    async def complete(self, request: CompletionRequest) -> AsyncIterator[Completion]:
        yield BurstCompletion(self.bursts)


def request_envelope(messages: list[dict[str, str]], *, turn: int = 2, seq: int = 5) -> Envelope:
    return Envelope(
        kind=Kind.LLM_REQUEST,
        call=CALL,
        session="VX1",
        gateway="gw7",
        seq=seq,
        turn=turn,
        body={"system": "Be brief.", "messages": messages, "reply_to": seq},
    )


async def run_one(
    provider: Provider, request: Envelope, *, concurrency: int = 4, coalesce_ms: float = 50.0
) -> tuple[list[Envelope], Envelope]:
    """Serve an LLMActor, send one request, return (token entries, result)."""
    bus = MemoryBus()
    # No filler: on a loaded machine a first token can take over its 1.2 s, and
    # these tests are about the reply, not the filler (tested on its own).
    config = LLMConfig(
        keys=KEYS, concurrency=concurrency, token_coalesce_ms=coalesce_ms, filler_after_s=0
    )
    actor = LLMActor(config, provider)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_actor, bus, actor, consumer="llm-1"))
        await bus.append(KEYS.llm, request.encode())
        results = await bus.read(KEYS.calls_for(CALL), "0", block_ms=0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    tokens = [Envelope.decode(e.fields) for e in await bus.range(KEYS.gateway("gw7"))]
    assert await bus.pending_count(KEYS.llm, "llm") == 0
    return tokens, Envelope.decode(results[0].fields)


def texts(tokens: list[Envelope]) -> list[str]:
    return [t.body["text"] for t in tokens]


async def test_first_delta_alone_then_coalesced_then_last(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Without a floor (0), an entry takes what piled up meanwhile: one burst.
    provider = BurstProvider([["Hel"], ["lo", " the", "re"], [" frie", "nd."]])
    with trio.fail_after(5):
        tokens, result = await run_one(provider, request_envelope([]), coalesce_ms=0)
    assert texts(tokens) == ["Hel", "lo there", " friend."]
    assert [t.body["index"] for t in tokens] == [0, 1, 2]
    assert [t.body["last"] for t in tokens] == [False, False, True]
    assert all(t.kind == Kind.LLM_TOKENS for t in tokens)
    assert all(t.body["reply_to"] == 5 and t.turn == 2 for t in tokens)
    assert all(t.session == "VX1" and t.gateway == "gw7" and t.call == CALL for t in tokens)
    assert result.body["text"] == "Hello there friend."


async def test_scripted_reply_streams_words_and_result_reaches_the_partition(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = ScriptedProvider(first_token_ms=200, token_gap_ms=50)
    messages = [
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "book a table"},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "for two"},
    ]
    with trio.fail_after(30):
        tokens, result = await run_one(provider, request_envelope(messages))
    expected = "You said: for two. That was message 2 from you."
    # Paced word by word: every word is its own entry; the stream ends right
    # after the last word, so that word travels in the last=true entry.
    assert texts(tokens) == [
        "You ",
        "said: ",
        "for ",
        "two. ",
        "That ",
        "was ",
        "message ",
        "2 ",
        "from ",
        "you.",
    ]
    assert [t.body["index"] for t in tokens] == list(range(len(tokens)))
    assert [t.body["last"] for t in tokens] == [False] * (len(tokens) - 1) + [True]
    assert result.kind == Kind.LLM_RESULT
    assert result.call == CALL and result.turn == 2 and result.session == "VX1"
    body: dict[str, Any] = result.body
    assert body["text"] == expected
    assert body["reply_to"] == 5
    assert body["stop_reason"] == "end_turn"
    assert body["error"] is None
    assert body["usage"]["output_tokens"] == 10
    assert body["timings"]["first_token_ms"] == pytest.approx(200.0)
    assert body["timings"]["total_ms"] == pytest.approx(200.0 + 9 * 50.0)


async def test_provider_error_speaks_an_apology_through_the_real_sdk() -> None:
    with trio.fail_after(10):
        async with open_fake_anthropic(error_status=529) as fake:
            client = anthropic.AsyncAnthropic(
                api_key="test-key", base_url=fake.base_url, max_retries=0
            )
            provider = AnthropicProvider("claude-test", 64, client)
            tokens, result = await run_one(
                provider, request_envelope([{"role": "user", "content": "hello?"}])
            )
    assert len(fake.requests) == 1
    assert texts(tokens) == [APOLOGY]
    assert [t.body["last"] for t in tokens] == [True]
    assert [t.body["index"] for t in tokens] == [0]
    assert result.body["text"] == APOLOGY
    assert "529" in result.body["error"]
    assert result.body["timings"]["first_token_ms"] is None


async def test_error_mid_stream_keeps_what_was_said_and_apologises() -> None:
    with trio.fail_after(10):
        async with open_fake_anthropic(["One", " two", " three"], stream_error_after=2) as fake:
            client = anthropic.AsyncAnthropic(
                api_key="test-key", base_url=fake.base_url, max_retries=0
            )
            provider = AnthropicProvider("claude-test", 64, client)
            tokens, result = await run_one(
                provider, request_envelope([{"role": "user", "content": "count"}])
            )
    assert "".join(texts(tokens)) == f"One two {APOLOGY}"
    assert tokens[-1].body["last"] is True
    assert result.body["text"] == f"One two {APOLOGY}"
    assert "overloaded" in result.body["error"]


async def test_requests_are_handled_concurrently(autojump_clock: trio.testing.MockClock) -> None:
    bus = MemoryBus()
    provider = ScriptedProvider(first_token_ms=1000, token_gap_ms=0)
    actor = LLMActor(LLMConfig(keys=KEYS, concurrency=8), provider)
    calls = [f"CA{n:032d}" for n in range(5)]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-1"))
            started = trio.current_time()
            for call in calls:
                env = Envelope(
                    kind=Kind.LLM_REQUEST,
                    call=call,
                    gateway="gw7",
                    turn=1,
                    seq=2,
                    body={
                        "system": "",
                        "messages": [{"role": "user", "content": call}],
                        "reply_to": 2,
                    },
                )
                await bus.append(KEYS.llm, env.encode())
            for call in calls:
                await bus.read(KEYS.calls_for(call), "0", block_ms=0)
            elapsed = trio.current_time() - started
            nursery.cancel_scope.cancel()
    # Five one-second completions overlapped instead of queueing.
    assert elapsed == pytest.approx(1.0)
