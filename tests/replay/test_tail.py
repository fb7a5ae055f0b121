"""``switchboard tail``: plain tail reads of every stream through the Bus, filtered.

The same run on a MemoryBus and on a real redis-server: the tail must see
entries on the partition, LLM, control and events streams, and on a gateway
stream it learns about from the envelopes that name that gateway.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol, cast

import pytest
import trio
import trio.testing

from bus.base import Bus, ConnectionLost
from bus.envelope import Envelope, Kind, now_ms
from bus.facts import fact_envelope
from bus.keys import Keys
from bus.memory import MemoryBus
from bus.redis import open_redis_bus
from switchboard.ops.tail import TailLine, open_tail, run_tail
from switchboard.testing import FaultyBus
from switchboard.testing.procs import TAKEOVER_GUARD_S

KEYS = Keys(namespace="tailtest", partitions=2)
SID, OTHER = "CA" + "1" * 32, "CA" + "2" * 32
BusFactory = Callable[[], AbstractAsyncContextManager[Bus]]


@asynccontextmanager
async def _memory() -> AsyncIterator[Bus]:
    bus = MemoryBus()
    try:
        yield bus
    finally:
        await bus.aclose()


class _Screen(io.StringIO):
    """What the tail printed; a test waits for lines instead of polling."""

    def __init__(self) -> None:
        super().__init__()
        self.wrote = trio.Event()

    def write(self, text: str) -> int:
        self.wrote.set()
        return super().write(text)

    async def wait_lines(self, n: int) -> list[str]:
        while self.getvalue().count("\n") < n:
            self.wrote = trio.Event()
            await self.wrote.wait()
        return self.getvalue().splitlines()


def _env(kind: Kind, call: str, body: dict[str, object]) -> dict[str, str]:
    return Envelope(kind, call, body, gateway="gw1").encode()


class RawBus(Bus, Protocol):
    """Both buses append with an explicit id (as the conformance suite uses)."""

    async def append_with_id(self, stream: str, entry_id: str, fields: dict[str, str]) -> str: ...


async def _one_call(bus: Bus) -> None:
    # Ten seconds ago, by explicit ids: entries of different streams made
    # within one millisecond have ids that do not say which came first, and
    # these must all be older than anything the test appends after the tail
    # started, whatever the machine's speed.
    past = now_ms() - 10_000
    items = [
        (KEYS.calls_for(SID), _env(Kind.CALL_PROMPT, SID, {"voicePrompt": "Hi"})),
        (KEYS.calls_for(OTHER), _env(Kind.CALL_PROMPT, OTHER, {"voicePrompt": "No"})),
        (KEYS.llm, _env(Kind.LLM_REQUEST, SID, {"messages": []})),
        (KEYS.gateway("gw1"), _env(Kind.LLM_TOKENS, SID, {"text": "Yo", "index": 0})),
        (KEYS.events, fact_envelope("first_token_sent", call=SID, reply_to=2).encode()),
    ]
    raw = cast(RawBus, bus)
    for i, (stream, fields) in enumerate(items):
        await raw.append_with_id(stream, f"{past + i}-0", fields)


async def _collect(bus: Bus, n: int, **filters: str) -> list[TailLine]:
    lines: list[TailLine] = []
    async with open_tail(bus, KEYS, from_start=True, **filters) as lines_in:
        async for line in lines_in:
            lines.append(line)
            if len(lines) == n:
                break
    return lines


async def _follows_every_stream_with_filters(open_bus: BusFactory) -> None:
    async with open_bus() as bus:
        await _one_call(bus)
        with trio.fail_after(TAKEOVER_GUARD_S):
            mine = await _collect(bus, 4, call=SID)
            llm = await _collect(bus, 2, call=SID, kind="llm")
            facts = await _collect(bus, 1, kind="first_token_sent")
    assert sorted(line.label for line in mine) == [
        "call.prompt", "event:first_token_sent", "llm.request", "llm.tokens",
    ]  # fmt: skip
    assert {line.env.call for line in mine} == {SID}
    assert sorted(line.label for line in llm) == ["llm.request", "llm.tokens"]
    assert facts[0].label == "event:first_token_sent"
    assert "caller said" in next(line for line in mine if line.label == "call.prompt").format()


async def _shows_only_what_comes_after_it_started(open_bus: BusFactory) -> None:
    async with open_bus() as bus:
        await _one_call(bus)  # before: not shown
        out = _Screen()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_tail(bus, KEYS, call=SID, out=out))
            await trio.testing.wait_all_tasks_blocked()
            await bus.append(
                KEYS.gateway("gw1"), _env(Kind.LLM_TOKENS, SID, {"text": "new", "index": 1})
            )
            await bus.append(
                KEYS.calls_for(SID), _env(Kind.CALL_PROMPT, SID, {"voicePrompt": "Later"})
            )
            with trio.fail_after(TAKEOVER_GUARD_S):
                lines = await out.wait_lines(2)
            nursery.cancel_scope.cancel()
    assert len(lines) == 2
    assert any('caller said "Later"' in line for line in lines)
    assert any('tokens #1 "new"' in line for line in lines)


async def test_tail_follows_every_stream_with_filters() -> None:
    await _follows_every_stream_with_filters(_memory)


async def test_tail_shows_only_what_comes_after_it_started() -> None:
    await _shows_only_what_comes_after_it_started(_memory)


@pytest.mark.redis
async def test_tail_on_redis_follows_every_stream_with_filters(redis_url: str) -> None:
    await _follows_every_stream_with_filters(lambda: open_redis_bus(redis_url))


@pytest.mark.redis
async def test_tail_on_redis_shows_only_what_comes_after_it_started(redis_url: str) -> None:
    await _shows_only_what_comes_after_it_started(lambda: open_redis_bus(redis_url))


async def test_a_bus_that_breaks_stops_the_tail_with_the_bus_error() -> None:
    # The readers' failure reaches the caller as the bus error itself (the CLI
    # turns it into one line), not wrapped in an exception group.
    bus = FaultyBus(MemoryBus())
    bus.fail_before("read", times=None)
    with trio.fail_after(TAKEOVER_GUARD_S), pytest.raises(ConnectionLost):
        await run_tail(bus, KEYS, out=_Screen())
