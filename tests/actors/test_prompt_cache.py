"""Prompt caching: where the breakpoints go, and what a cached turn reports.

The placement rules are pure (``actors.providers.claude_cache``) and tested
synchronously. Against the local fake of the API, which models the cache
(prefixes written at breakpoints, read back on a later request, a faster
first token on a hit), a call of three turns in the dev composition shows
the cache read on every turn after the first, in the turn's facts and on
``/metrics``.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
import trio
from fakes.anthropic_server import open_fake_anthropic
from prometheus_client.parser import text_string_to_metric_families

from actors.providers import AnthropicProvider, CompletionRequest
from actors.providers.claude_cache import (
    MAX_BREAKPOINTS,
    cached_messages,
    cached_system,
    cached_tools,
    count_breakpoints,
)
from actors.telemetry import TelemetryActor, TelemetryConfig
from bus.memory import MemoryBus
from switchboard.metrics_http import fetch
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.twilio import open_call

TOKEN = "cache-token"
EPHEMERAL = {"type": "ephemeral"}
TOOL = {"name": "hours", "description": "Opening hours.", "input_schema": {"type": "object"}}
HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "[The call connected.]"},
    {"role": "assistant", "content": "Hi, how can I help?"},
    {"role": "user", "content": "When do you open?"},
    {"role": "assistant", "content": "At nine."},
    {"role": "user", "content": "And on Sunday?"},
]


def test_the_history_up_to_the_previous_turn_is_marked_and_nothing_after() -> None:
    marked = cached_messages(HISTORY)
    assert marked[3]["content"] == [
        {"type": "text", "text": "At nine.", "cache_control": EPHEMERAL}
    ]
    # The newest words are not part of the prefix.
    assert marked[4] == HISTORY[4]
    assert [m for i, m in enumerate(marked) if i != 3] == [
        m for i, m in enumerate(HISTORY) if i != 3
    ]
    # The caller's history is shared with the rest of the reply: untouched.
    assert HISTORY[3]["content"] == "At nine."


def test_a_tool_round_marks_the_assistant_turn_before_its_results() -> None:
    use = {"type": "tool_use", "id": "t1", "name": "hours", "input": {}}
    thinking = {"type": "thinking", "thinking": "hm", "signature": "s"}
    messages = [
        *HISTORY,
        {"role": "assistant", "content": [thinking, {"type": "text", "text": "Let me see."}, use]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}]},
    ]
    marked = cached_messages(messages)
    blocks = marked[5]["content"]
    assert blocks[-1] == {**use, "cache_control": EPHEMERAL}
    assert "cache_control" not in blocks[0] and "cache_control" not in use
    assert count_breakpoints("", [], marked) == 1


def test_thinking_blocks_never_carry_the_marker() -> None:
    thinking = {"type": "thinking", "thinking": "hm", "signature": "s"}
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [{"type": "text", "text": "b"}, thinking]},
        {"role": "user", "content": "c"},
    ]
    blocks = cached_messages(messages)[1]["content"]
    assert blocks == [{"type": "text", "text": "b", "cache_control": EPHEMERAL}, thinking]


def test_a_first_message_alone_is_not_marked() -> None:
    only = [{"role": "user", "content": "Hello?"}]
    assert cached_messages(only) == only


def test_system_and_tools_within_the_api_limit() -> None:
    tools = [{"name": "a", "input_schema": {}}, {"name": "b", "input_schema": {}}]
    system = cached_system("You are a shop assistant.")
    assert system == [
        {"type": "text", "text": "You are a shop assistant.", "cache_control": EPHEMERAL}
    ]
    # The system breakpoint covers the tools before it: one marker is enough.
    assert count_breakpoints(system, cached_tools(tools, system="x"), cached_messages(HISTORY)) == 2
    # Without a system prompt, the last tool carries it instead.
    bare = cached_tools(tools, system="")
    assert bare[-1]["cache_control"] == EPHEMERAL and "cache_control" not in tools[-1]
    assert cached_system("") == ""
    assert count_breakpoints("", bare, cached_messages(HISTORY)) <= MAX_BREAKPOINTS


async def test_a_call_reads_its_prefix_from_the_cache_from_the_second_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    system = "You answer questions about the shop. " * 40
    with trio.fail_after(60):
        async with open_fake_anthropic(
            ["We open", " at nine."],
            prompt_cache=True,
            cache_min_tokens=64,
            first_delay_s=0.3,
            cache_hit_delay_s=0.02,
        ) as fake:
            monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
            monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
            settings = Settings.from_env(
                {
                    "ANTHROPIC_API_KEY": "test-key",
                    "TWILIO_AUTH_TOKEN": TOKEN,
                    "SWITCHBOARD_PORT": "0",
                    "SWITCHBOARD_PARTITIONS": "2",
                    "SWITCHBOARD_WELCOME_GREETING": "Hi.",
                    "SWITCHBOARD_SILENCE_REPROMPT_S": "0",
                    # No filler line, apology or retry on a late first token: on a
                    # loaded machine one can take over their 1.2 s and 2.5 s, and
                    # this test is about the cache, not them.
                    "SWITCHBOARD_FILLER_AFTER_S": "0",
                    "SWITCHBOARD_FIRST_TOKEN_DEADLINE_S": "60",
                    "SWITCHBOARD_REPLY_DEADLINE_S": "0",
                    "SWITCHBOARD_SYSTEM_PROMPT": system,
                }
            )
            telemetry = TelemetryActor(TelemetryConfig(keys=settings.keys))
            async with trio.open_nursery() as nursery:
                port = await start_dev(nursery, settings, MemoryBus(), telemetry=telemetry)
                async with open_call(f"http://127.0.0.1:{port}", auth_token=TOKEN) as call:
                    for text in ("Hello?", "When do you open?", "And on Sunday?"):
                        await call.prompt(text)
                        assert (await call.reply()).text == "We open at nine."
                    call_sid = call.call_sid
                summary = await telemetry.wait_summary(call_sid)
                status, page = await fetch("127.0.0.1", port, "/metrics")
                nursery.cancel_scope.cancel()

    # Every request marks the system prompt and the history before the newest words.
    for request in fake.requests:
        assert request["system"][0]["cache_control"] == EPHEMERAL
        previous = request["messages"][-2]["content"]
        assert previous[-1]["cache_control"] == EPHEMERAL
        assert "cache_control" not in str(request["messages"][-1])
    assert fake.cache_hits == 2
    turns = sorted(summary.turns.values(), key=lambda t: t.reply_to)
    usages = [t.usage for t in turns]
    assert all(u is not None for u in usages)
    assert usages[0] is not None and usages[0].cache_read_input_tokens == 0
    assert usages[0].cache_creation_input_tokens > 0
    for usage in usages[1:]:
        assert usage is not None and usage.cache_read_input_tokens > 0
    fields = summary.fields()
    assert fields["cache_read_tokens"] == sum(u.cache_read_input_tokens for u in usages if u)
    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }
    read = samples[("switchboard_llm_tokens_total", (("direction", "cache_read"),))]
    written = samples[("switchboard_llm_tokens_total", (("direction", "cache_write"),))]
    assert read == fields["cache_read_tokens"] > 0
    assert written == fields["cache_write_tokens"] > 0


async def test_with_the_cache_off_nothing_is_marked() -> None:
    with trio.fail_after(10):
        async with open_fake_anthropic(["Ok."]) as fake:
            client = anthropic.AsyncAnthropic(api_key="k", base_url=fake.base_url, max_retries=0)
            provider = AnthropicProvider("claude-test", 64, client, prompt_cache=False)
            request = CompletionRequest(system="s", messages=HISTORY, tools=[TOOL])
            async with provider.complete(request) as completion:
                assert [d async for d in completion.deltas()] == ["Ok."]
    [sent] = fake.requests
    assert "cache_control" not in json.dumps(sent)
    assert isinstance(sent["system"], str) and sent["tools"] == [TOOL]
