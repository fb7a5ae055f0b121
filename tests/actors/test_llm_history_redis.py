"""Two LLM workers take turns on one call, on a real redis-server.

Neither worker saw the request before the one it takes (the other one had
it), so each rebuilds the history from the call's state in Redis: a plain
GET of the state key, which lives in the call's partition slot while the
request stream lives in its shard's. The conversation worker runs the whole
time; the LLM workers are stopped and started between turns (``stop``: a
stopped worker finishes and acks what it holds first).

The scripted provider's reply counts the caller's messages it was sent
("That was message N from you"): each reply shows the model saw the whole
call.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from actors.config import ConversationConfig, LLMConfig
from actors.conversation import ConversationActor
from actors.llm import LLMActor
from actors.providers import ScriptedProvider
from actors.runtime import serve_actor
from bus.base import Bus
from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.redis import open_redis_bus
from switchboard.testing.redis_server import open_redis_server
from switchboard.testing.requests import requested_messages

pytestmark = pytest.mark.redis

KEYS = Keys(namespace="lhr", partitions=4)
CALL = "CA00000000000000000000000000000078"
SESSION = "VX00000000000000000000000000000078"
GUARD_S = 60


class Caller:
    """Appends caller events as the gateway does; waits for each turn's result."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.seq = 0
        self.after = "0"

    async def send(self, kind: str, body: dict[str, Any]) -> None:
        self.seq += 1
        env = Envelope(
            kind=kind, call=CALL, session=SESSION, gateway="gw1", seq=self.seq, body=body
        )
        await self.bus.append(KEYS.calls_for(CALL), env.encode())

    async def say(self, text: str) -> Envelope:
        """Say ``text``; the ``llm.result`` that answers it."""
        await self.send(
            Kind.CALL_PROMPT,
            {"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": True},
        )
        seq = self.seq
        while True:
            for entry in await self.bus.read(KEYS.calls_for(CALL), self.after, block_ms=1000):
                self.after = entry.id
                env = Envelope.decode(entry.fields)
                if env.kind == Kind.LLM_RESULT and env.body["reply_to"] == seq:
                    return env


async def test_two_workers_alternating_on_one_call_rebuild_each_turn_from_the_state() -> None:
    conversation = ConversationActor(
        ConversationConfig(keys=KEYS, system_prompt="Be brief.", welcome_greeting="Hello.")
    )
    workers = {name: LLMActor(LLMConfig(keys=KEYS), ScriptedProvider()) for name in "ab"}
    results = []
    with trio.fail_after(GUARD_S), capture_logs() as logs:
        async with (
            open_redis_server() as server,
            open_redis_bus(server.url) as bus,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(partial(serve_actor, bus, conversation, consumer="conv-1"))
            caller = Caller(bus)
            await caller.send(
                Kind.CALL_SETUP,
                {"type": "setup", "sessionId": SESSION, "callSid": CALL, "customParameters": {}},
            )
            for n, name in enumerate("abab", start=1):
                stop = trio.Event()
                async with trio.open_nursery() as turn:
                    await turn.start(
                        partial(serve_actor, bus, workers[name], consumer=f"llm-{name}", stop=stop)
                    )
                    results.append(await caller.say(f"question {n}"))
                    stop.set()
            requests = [
                Envelope.decode(e.fields)
                for e in await bus.range(KEYS.llm_for(CALL))
                if e.fields.get("k") == Kind.LLM_REQUEST
            ]
            asked = [await requested_messages(bus, KEYS, r) for r in requests]
            nursery.cancel_scope.cancel()
    assert [r.body["text"] for r in results] == [
        f"You said: question {n}. That was message {n} from you." for n in range(1, 5)
    ]
    assert all(r.body["error"] is None for r in results)
    # The first request of the call refers to nothing; each later one was
    # taken by the worker that did not see the one before it.
    a, b = workers["a"].histories, workers["b"].histories
    assert (a.hits, a.misses, b.hits, b.misses) == (1, 1, 0, 2)
    assert len([e for e in logs if e["event"] == "request_history_from_state"]) == 3
    # What the model was sent, turn 4: the whole call.
    assert len(asked) == 4 and asked[3][0] == {"role": "assistant", "content": "Hello."}
    assert [m["content"] for m in asked[3] if m["role"] == "user"] == [
        f"question {n}" for n in range(1, 5)
    ]
