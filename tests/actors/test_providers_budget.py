"""The Anthropic provider within a voice budget, against the local fake of the API.

Retries within the first-token deadline (``retry-after`` capped by what is
left), the fallback model, refusals, thinking blocks through tool rounds,
prompt-cache usage. The fake answers as the real API does (its docstring);
the real SDK talks to it over HTTP, so these run on the real clock with
short deadlines.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
import trio
from fakes.anthropic_server import (
    SPEND_LIMIT_CODE,
    FakeAnthropic,
    FakeError,
    FakeReply,
    open_fake_anthropic,
    thinking_signature,
)

from actors.providers import AnthropicProvider, CompletionRequest, ProviderError
from actors.providers.anthropic import parse_effort, parse_thinking
from actors.providers.base import FirstTokenTimeout, ProviderRefusal, ToolUse

USER = [{"role": "user", "content": "Is the shop open on Sunday?"}]


def provider_for(fake: FakeAnthropic, **options: Any) -> AnthropicProvider:
    client = anthropic.AsyncAnthropic(api_key="k", base_url=fake.base_url, max_retries=0)
    options.setdefault("first_token_deadline_s", 2.0)
    return AnthropicProvider("claude-primary", 4096, client, **options)


async def collect(provider: AnthropicProvider, messages: list[dict[str, Any]] = USER) -> list[str]:
    async with provider.complete(CompletionRequest(system="s", messages=messages)) as c:
        return [d async for d in c.deltas()]


async def test_retry_after_beyond_the_deadline_gives_up_at_the_deadline() -> None:
    # retry-after: 20 on every attempt, 0.4 s of budget: the wait is capped
    # by what is left, so the provider gives up when the budget is spent,
    # not 20 s later, and never sooner (there was time left to wait).
    with trio.fail_after(10):
        async with open_fake_anthropic(error_status=429, retry_after=20) as fake:
            provider = provider_for(fake, first_token_deadline_s=0.4)
            started = trio.current_time()
            with pytest.raises(FirstTokenTimeout) as caught:
                await collect(provider)
            waited = trio.current_time() - started
    assert waited >= 0.4
    assert waited < 5  # far below the server's 20 s
    assert caught.value.retriable is True
    assert caught.value.attempts == 1
    assert "429" in str(caught.value.last_error)
    assert fake.headers[0].get("x-stainless-retry-count", "0") == "0"


async def test_retries_honour_retry_after_within_the_deadline() -> None:
    errors = [FakeError(529, retry_after=0.2), FakeError(429, retry_after=0.2)]
    with trio.fail_after(10):
        async with open_fake_anthropic(["We are", " open."], errors=errors) as fake:
            deltas = await collect(provider_for(fake, first_token_deadline_s=3.0))
    assert deltas == ["We are", " open."]
    assert len(fake.requests) == 3
    gaps = [b - a for a, b in zip(fake.arrived, fake.arrived[1:], strict=False)]
    assert all(gap >= 0.2 for gap in gaps)


async def test_an_overload_inside_the_stream_before_any_text_is_retried() -> None:
    replies = iter([FakeReply(["lost"], stream_error_after=0), FakeReply(["Fine."])])
    with trio.fail_after(10):
        async with open_fake_anthropic(responder=lambda _: next(replies)) as fake:
            deltas = await collect(provider_for(fake))
    assert deltas == ["Fine."]
    assert len(fake.requests) == 2


async def test_an_error_after_text_is_not_retried() -> None:
    with trio.fail_after(10):
        async with open_fake_anthropic(["One", " two"], stream_error_after=1) as fake:
            provider = provider_for(fake)
            got: list[str] = []
            with pytest.raises(ProviderError) as caught:
                async with provider.complete(CompletionRequest(system="s", messages=USER)) as c:
                    async for delta in c.deltas():
                        got.append(delta)
    assert got == ["One"]
    assert "overloaded" in str(caught.value)
    assert len(fake.requests) == 1


async def test_overload_goes_to_the_fallback_model_at_once() -> None:
    def respond(payload: dict[str, Any]) -> FakeReply | FakeError:
        if payload["model"] == "claude-primary":
            return FakeError(529, retry_after=30)
        return FakeReply(["From", " the fallback."])

    with trio.fail_after(10):
        async with open_fake_anthropic(responder=respond) as fake:
            provider = provider_for(fake, fallback_model="claude-fallback")
            deltas = await collect(provider)
    assert deltas == ["From", " the fallback."]
    assert [r["model"] for r in fake.requests] == ["claude-primary", "claude-fallback"]


@pytest.mark.parametrize(
    "error",
    [FakeError(400, message="bad"), FakeError(429, retry_after=1, error_code=SPEND_LIMIT_CODE)],
    ids=["bad-request", "spend-cap"],
)
async def test_errors_that_waiting_cannot_fix_are_not_retried(error: FakeError) -> None:
    with trio.fail_after(10):
        async with open_fake_anthropic(errors=[error]) as fake:
            provider = provider_for(fake, fallback_model="claude-fallback")
            with pytest.raises(ProviderError) as caught:
                await collect(provider)
    assert not isinstance(caught.value, FirstTokenTimeout)
    assert caught.value.retriable is False
    assert len(fake.requests) == 1


async def test_a_first_token_later_than_the_deadline_is_abandoned() -> None:
    with trio.fail_after(10):
        async with open_fake_anthropic(["Late."], first_delay_s=5) as fake:
            with pytest.raises(FirstTokenTimeout) as caught:
                await collect(provider_for(fake, first_token_deadline_s=0.3))
    assert caught.value.attempts == 1
    assert caught.value.last_error is None


async def test_the_default_client_leaves_retries_to_the_provider() -> None:
    provider = AnthropicProvider("claude-x", 64, first_token_deadline_s=2.5)
    assert provider.client.max_retries == 0


async def test_a_refusal_mid_stream_is_a_typed_outcome() -> None:
    reply = FakeReply(["Sure, the first", " step is"], stop_reason="refusal")
    with trio.fail_after(10):
        async with open_fake_anthropic(responder=lambda _: reply) as fake:
            provider = provider_for(fake)
            got: list[str] = []
            with pytest.raises(ProviderRefusal) as caught:
                async with provider.complete(CompletionRequest(system="s", messages=USER)) as c:
                    async for delta in c.deltas():
                        got.append(delta)
    assert got == ["Sure, the first", " step is"]
    assert caught.value.category == "cyber"
    assert caught.value.said == "Sure, the first step is"
    assert caught.value.retriable is False
    assert len(fake.requests) == 1


async def test_thinking_is_never_spoken_and_is_echoed_exactly_through_a_tool_round() -> None:
    use = {"id": "toolu_01", "name": "lookup", "input": {"day": "Sunday"}}

    def respond(payload: dict[str, Any]) -> FakeReply:
        last = payload["messages"][-1]
        if isinstance(last["content"], list) and last["content"][0]["type"] == "tool_result":
            return FakeReply(["Open", " ten to four."], thinking=["They are open."])
        return FakeReply(
            ["Let me check."],
            tool_uses=[use],
            thinking=["The caller wants", " Sunday hours."],
            redacted_thinking=["ENCRYPTED=="],
        )

    with trio.fail_after(10):
        async with open_fake_anthropic(responder=respond) as fake:
            provider = provider_for(fake, thinking="adaptive", effort="low")
            request = CompletionRequest(system="s", messages=USER)
            async with provider.complete(request) as first:
                spoken = [d async for d in first.deltas()]
                content = first.content
                assert first.stop_reason == "tool_use"
                assert first.tool_uses == [ToolUse(**use)]
            assert spoken == ["Let me check."]
            assert content == [
                {
                    "type": "thinking",
                    "thinking": "The caller wants Sunday hours.",
                    "signature": thinking_signature("The caller wants Sunday hours."),
                },
                {"type": "redacted_thinking", "data": "ENCRYPTED=="},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", **use},
            ]
            result = {"type": "tool_result", "tool_use_id": "toolu_01", "content": "10-4"}
            round_two = [
                *USER,
                {"role": "assistant", "content": content},
                {"role": "user", "content": [result]},
            ]
            assert await collect(provider, round_two) == ["Open", " ten to four."]
            # The same round with the thinking dropped, as assistant messages
            # rebuilt from text and tool_use were: the API's 400.
            rebuilt = [b for b in content if b["type"] in ("text", "tool_use")]
            stripped = [*USER, {"role": "assistant", "content": rebuilt}, round_two[-1]]
            with pytest.raises(ProviderError, match="Expected `thinking`") as caught:
                await collect(provider, stripped)
    assert caught.value.retriable is False
    assert fake.requests[0]["thinking"] == {"type": "adaptive"}
    assert fake.requests[0]["output_config"] == {"effort": "low"}


async def test_thinking_off_and_a_budget_are_sent_as_the_api_spells_them() -> None:
    with trio.fail_after(10):
        async with open_fake_anthropic(["ok"]) as fake:
            await collect(provider_for(fake, thinking="off"))
            await collect(provider_for(fake, thinking="budget:2048"))
            await collect(provider_for(fake))
    assert fake.requests[0]["thinking"] == {"type": "disabled"}
    assert fake.requests[1]["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert "thinking" not in fake.requests[2] and "output_config" not in fake.requests[2]


async def test_prompt_cache_usage_is_counted() -> None:
    with trio.fail_after(10):
        async with open_fake_anthropic(
            ["ok"], input_tokens=12, cache_read_input_tokens=900, cache_creation_input_tokens=40
        ) as fake:
            provider = provider_for(fake)
            async with provider.complete(CompletionRequest(system="s", messages=USER)) as c:
                [_ async for _ in c.deltas()]
                usage = c.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens) == (12, 900)
    assert usage.cache_creation_input_tokens == 40


def test_thinking_and_effort_settings_are_validated() -> None:
    assert parse_thinking(" Adaptive ").mode == "adaptive"
    assert parse_thinking("budget:1024").budget_tokens == 1024
    for bad in ("on", "budget:100", "budget:", "budget:x"):
        with pytest.raises(ValueError, match="thinking must be"):
            parse_thinking(bad)
    assert parse_effort("LOW") == "low"
    with pytest.raises(ValueError, match="effort must be one of"):
        parse_effort("fast")
    with pytest.raises(ValueError, match="below max_tokens"):
        AnthropicProvider("m", 2000, thinking="budget:4096")
    with pytest.raises(ValueError, match="must be > 0"):
        AnthropicProvider("m", 2000, first_token_deadline_s=0)
