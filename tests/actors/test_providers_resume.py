"""Resuming a reply (``CompletionRequest.prefill``): providers yield only the rest.

The Anthropic provider goes through the real SDK to the local fake of the
Messages API, so the assertions are on the HTTP request bodies Claude would see.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
import trio
from fakes.anthropic_server import FakeAnthropic, open_fake_anthropic

from actors.providers import AnthropicProvider, CompletionRequest, ScriptedProvider
from actors.providers.anthropic import supports_prefill
from actors.providers.base import skip_prefix
from actors.providers.scripted import scripted_reply

HISTORY = [{"role": "user", "content": "Is the shop open on Sunday?"}]
# What Claude is sent of it: the caller's words delimited.
SENT = [{"role": "user", "content": "<caller>Is the shop open on Sunday?</caller>"}]


async def deltas_of(
    provider: AnthropicProvider | ScriptedProvider, request: CompletionRequest
) -> list[str]:
    async with provider.complete(request) as completion:
        return [d async for d in completion.deltas()]


def anthropic_provider(fake: FakeAnthropic, model: str, **kwargs: Any) -> AnthropicProvider:
    client = anthropic.AsyncAnthropic(api_key="test-key", base_url=fake.base_url, max_retries=0)
    return AnthropicProvider(model, 64, client, **kwargs)


async def test_resume_prefills_the_spoken_text_as_the_assistant_turn() -> None:
    spoken = "We are open on Sunday "
    with trio.fail_after(10):
        async with open_fake_anthropic([" from", " ten."]) as fake:
            provider = anthropic_provider(fake, "claude-haiku-4-5")
            got = await deltas_of(provider, CompletionRequest("sys", HISTORY, prefill=spoken))
    messages = fake.requests[0]["messages"]
    # Claude continues the last assistant message; the API refuses trailing
    # whitespace there, so it is cut off ...
    assert messages[-1] == {"role": "assistant", "content": "We are open on Sunday"}
    assert messages[:-1] == SENT
    # ... and the continuation's leading space dropped: the caller heard it.
    assert got == ["from", " ten."]
    assert spoken + "".join(got) == "We are open on Sunday from ten."


async def test_resume_mid_word_keeps_the_continuation_as_is() -> None:
    with trio.fail_after(10):
        async with open_fake_anthropic(["day", " from ten."]) as fake:
            provider = anthropic_provider(fake, "claude-opus-4-5")
            got = await deltas_of(
                provider, CompletionRequest("sys", HISTORY, prefill="We are open on Sun")
            )
    assert fake.requests[0]["messages"][-1]["content"] == "We are open on Sun"
    assert got == ["day", " from ten."]


async def test_models_without_prefill_regenerate_and_skip_the_spoken_prefix() -> None:
    spoken = "We are open "
    with trio.fail_after(10):
        async with open_fake_anthropic(["We are", " open on", " Sunday."]) as fake:
            provider = anthropic_provider(fake, "claude-sonnet-4-6")
            got = await deltas_of(provider, CompletionRequest("sys", HISTORY, prefill=spoken))
    assert fake.requests[0]["messages"] == SENT  # ends with the user: no prefill
    assert got == ["on", " Sunday."]


async def test_a_refused_prefill_falls_back_to_regenerating() -> None:
    with trio.fail_after(10):
        async with open_fake_anthropic(["We are", " open."], reject_prefill=True) as fake:
            provider = anthropic_provider(fake, "claude-custom-gateway-model")
            got = await deltas_of(provider, CompletionRequest("sys", HISTORY, prefill="We are"))
    assert [r["messages"][-1]["role"] for r in fake.requests] == ["assistant", "user"]
    assert got == [" open."]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-haiku-4-5", True),
        ("claude-sonnet-4-5-20250929", True),
        ("claude-opus-4-20250514", True),
        ("claude-3-5-haiku-latest", True),
        ("claude-sonnet-4-6", False),
        ("claude-opus-4-7", False),
        ("claude-sonnet-5", False),
    ],
)
def test_supports_prefill_by_model_name(model: str, expected: bool) -> None:
    assert supports_prefill(model) is expected


async def test_scripted_resume_streams_the_rest_of_the_same_reply() -> None:
    reply = scripted_reply(HISTORY)
    spoken = reply[:17]  # cuts a word in two
    got = await deltas_of(ScriptedProvider(), CompletionRequest("", HISTORY, prefill=spoken))
    assert spoken + "".join(got) == reply
    assert got and got[0] != reply[: len(got[0])]


async def test_skip_prefix_drops_exactly_that_many_characters() -> None:
    async def pieces() -> AsyncIterator[str]:
        for piece in ["ab", "cde", "f", "gh"]:
            yield piece

    assert [p async for p in skip_prefix(pieces(), "xyzw")] == ["e", "f", "gh"]
    assert [p async for p in skip_prefix(pieces(), "")] == ["ab", "cde", "f", "gh"]
