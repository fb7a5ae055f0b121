"""A cancel published before an LLM worker starts is still honoured.

A worker that (re)starts, e.g. to take over a reclaimed request after a
failover, reads the control stream back ``cancel_memory_s`` on start, so a
request whose cancel it never saw live is not generated. MemoryBus,
autojump clock, the real ``ScriptedProvider``.
"""

from __future__ import annotations

from functools import partial

import trio
import trio.testing
from llm_envelopes import control_cancel, llm_request

from actors.config import LLMConfig
from actors.llm import LLMActor
from actors.providers import ScriptedProvider
from actors.runtime import serve_actor
from bus.envelope import Envelope, Kind, now_ms
from bus.keys import GROUP_LLM, Keys
from bus.memory import MemoryBus

KEYS = Keys(namespace="llmreadback", partitions=4)
CALL = "CA00000000000000000000000000000043"


def request(words: str, *, seq: int) -> Envelope:
    return llm_request(CALL, [{"role": "user", "content": words}], seq=seq)


async def publish_cancel(bus: MemoryBus, reply_to: int) -> None:
    await bus.append(KEYS.control, control_cancel(CALL, reply_to).encode())


async def results(bus: MemoryBus, count: int) -> list[Envelope]:
    found = await bus.read(KEYS.calls_for(CALL), "0", count=count, block_ms=60_000)
    while len(found) < count:
        found += await bus.read(KEYS.calls_for(CALL), found[-1].id, block_ms=60_000)
    return [Envelope.decode(e.fields) for e in found]


async def spoken(bus: MemoryBus, reply_to: int) -> str:
    out = [Envelope.decode(e.fields) for e in await bus.range(KEYS.gateway("gw1"))]
    return "".join(
        e.body["text"] for e in out if e.kind == Kind.LLM_TOKENS and e.body["reply_to"] == reply_to
    )


async def run_after_cancels(*, requests_first: bool) -> tuple[MemoryBus, list[Envelope]]:
    bus = MemoryBus()
    await publish_cancel(bus, 5)
    actor = LLMActor(LLMConfig(keys=KEYS), ScriptedProvider(token_gap_ms=100))
    pending = [request("tell me a long story", seq=5), request("and another one", seq=7)]
    if requests_first:
        await bus.ensure_group(KEYS.llm, GROUP_LLM)
        for env in pending:
            await bus.append(KEYS.llm, env.encode())
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-late"))
            if not requests_first:
                for env in pending:
                    await bus.append(KEYS.llm, env.encode())
            found = await results(bus, 2)
            nursery.cancel_scope.cancel()
    return bus, found


async def test_a_cancel_published_before_the_worker_started_stops_its_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus, found = await run_after_cancels(requests_first=False)
    by_reply = {e.body["reply_to"]: e.body for e in found}
    assert by_reply[5]["cancelled"] is True and by_reply[5]["text"] == ""
    assert await spoken(bus, 5) == ""
    # A request nobody cancelled is answered as usual.
    assert by_reply[7]["cancelled"] is False
    assert by_reply[7]["text"] and await spoken(bus, 7) == by_reply[7]["text"]


async def test_requests_waiting_when_the_worker_starts_are_read_after_the_read_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The worker's first read finds both requests: it must already know the cancel.
    bus, found = await run_after_cancels(requests_first=True)
    by_reply = {e.body["reply_to"]: e.body for e in found}
    assert by_reply[5]["cancelled"] is True and by_reply[5]["text"] == ""
    assert await spoken(bus, 5) == ""
    assert by_reply[7]["cancelled"] is False


async def test_a_cancel_older_than_the_memory_is_forgotten(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    # Entry ids are wall-clock ms: an id from ten minutes ago is an old cancel.
    old = control_cancel(CALL, 5)
    stale_ms = now_ms() - 600_000
    await bus.append_with_id(KEYS.control, f"{stale_ms}-0", old.encode())
    actor = LLMActor(LLMConfig(keys=KEYS, cancel_memory_s=120.0), ScriptedProvider())
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-late"))
            await bus.append(KEYS.llm, request("hello", seq=5).encode())
            [result] = await results(bus, 1)
            nursery.cancel_scope.cancel()
    assert result.body["cancelled"] is False and result.body["text"]
