"""``switchboard tail``: a plain XREAD over every stream, filtered by call and kind."""

from __future__ import annotations

from contextlib import aclosing

import pytest
import trio

from bus.envelope import Envelope, Kind
from bus.facts import fact_envelope
from bus.keys import Keys
from bus.redis import open_redis_bus
from switchboard.tail import TailLine, tail
from switchboard.testing.procs import TAKEOVER_GUARD_S

pytestmark = pytest.mark.redis


async def test_tail_follows_every_stream_with_filters(redis_url: str) -> None:
    keys = Keys(namespace="tailtest", partitions=2)
    sid, other = "CA" + "1" * 32, "CA" + "2" * 32
    async with open_redis_bus(redis_url) as bus:
        await bus.append(
            keys.calls_for(sid),
            Envelope(Kind.CALL_PROMPT, sid, {"voicePrompt": "Hi", "last": True}).encode(),
        )
        await bus.append(
            keys.calls_for(other), Envelope(Kind.CALL_PROMPT, other, {"voicePrompt": "No"}).encode()
        )
        await bus.append(keys.llm, Envelope(Kind.LLM_REQUEST, sid, {"messages": []}).encode())
        await bus.append(
            keys.gateway("gw1"), Envelope(Kind.LLM_TOKENS, sid, {"text": "Yo", "index": 0}).encode()
        )
        await bus.append(
            keys.events, fact_envelope("first_token_sent", call=sid, reply_to=2).encode()
        )

    async def collect(n: int, **filters: str) -> list[TailLine]:
        lines: list[TailLine] = []
        async with aclosing(tail(redis_url, keys, from_start=True, **filters)) as lines_in:
            async for line in lines_in:
                lines.append(line)
                if len(lines) == n:
                    break
        return lines

    with trio.fail_after(TAKEOVER_GUARD_S):
        mine = await collect(4, call=sid)
        llm = await collect(2, call=sid, kind="llm")
        facts = await collect(1, kind="first_token_sent")
    assert sorted(line.label for line in mine) == [
        "call.prompt", "event:first_token_sent", "llm.request", "llm.tokens",
    ]  # fmt: skip
    assert {line.env.call for line in mine} == {sid}
    assert sorted(line.label for line in llm) == ["llm.request", "llm.tokens"]
    assert facts[0].label == "event:first_token_sent"
    assert "caller said" in next(line for line in mine if line.label == "call.prompt").format()
