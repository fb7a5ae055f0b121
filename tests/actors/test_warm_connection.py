"""The connection to the Anthropic API outlives the gaps between turns.

A call's turns are usually more than httpx's default 5 s keep-alive apart,
so with the SDK's defaults every turn would open a new TCP (and, in
production, TLS) connection. The provider's own HTTP client keeps idle
connections for ``keepalive_s`` (300 s by default).

The connection pool reads its idle time from ``time.monotonic`` in
httpcore's HTTP/1.1 connection; here that clock is Trio's mock clock, so
the 20 s between turns pass at once and exactly. The fake counts the
connections it accepted.
"""

from __future__ import annotations

from types import SimpleNamespace

import anthropic
import httpcore2._async.http11 as http11
import pytest
import trio
import trio.testing
from fakes.anthropic_server import FakeAnthropic, open_fake_anthropic

from actors.providers import AnthropicProvider, CompletionRequest

GAP_S = 20.0  # between two turns of a call


async def two_turns(provider: AnthropicProvider, clock: trio.testing.MockClock) -> None:
    for text in ("When do you open?", "And on Sunday?"):
        request = CompletionRequest(system="s", messages=[{"role": "user", "content": text}])
        async with provider.complete(request) as completion:
            assert "".join([d async for d in completion.deltas()]) == "Hello from the fake."
        clock.jump(GAP_S)


@pytest.fixture
def pool_on_trio_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http11, "time", SimpleNamespace(monotonic=trio.current_time))


def env_for(monkeypatch: pytest.MonkeyPatch, fake: FakeAnthropic) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)


@pytest.mark.usefixtures("pool_on_trio_clock")
async def test_two_turns_20_s_apart_share_one_connection(
    mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_fake_anthropic() as fake:
        env_for(monkeypatch, fake)
        provider = AnthropicProvider("claude-test", 64)
        await two_turns(provider, mock_clock)
        await provider.client.close()
    assert len(fake.requests) == 2
    assert fake.connections == 1


@pytest.mark.usefixtures("pool_on_trio_clock")
async def test_with_the_sdk_default_the_second_turn_reconnects(
    mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same turns on the SDK's own client: the idle connection expired
    # after 5 s, so the second turn paid for a new one.
    async with open_fake_anthropic() as fake:
        env_for(monkeypatch, fake)
        client = anthropic.AsyncAnthropic(max_retries=0)
        provider = AnthropicProvider("claude-test", 64, client)
        await two_turns(provider, mock_clock)
        await client.close()
    assert len(fake.requests) == 2
    assert fake.connections == 2


def test_keepalive_must_be_positive() -> None:
    with pytest.raises(ValueError, match="keepalive_s"):
        AnthropicProvider("claude-test", 64, keepalive_s=0)
