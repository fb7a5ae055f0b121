"""A poison entry costs one call, never its partition.

The break (a real attack): one caller's entry made every worker that took it
stall or die; each new owner of the partition took it again and stalled too,
for ever, and the other calls on the partition waited behind it. The
runtime now bounds each entry: a handler past its deadline is cancelled and
retried a bounded number of times, and an entry delivered too often (its
workers died, stalled or lost their lease while handling it, as counted by
the group's pending list) is dead-lettered without being handled again. The
caller of that call hears an apology; the next calls on the partition go on.

Run on the memory bus and on a real redis-server (delivery counts come from
``XPENDING`` there).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from actors.config import ConversationConfig
from actors.conversation import ConversationActor
from actors.runtime import dead_letter_stream, serve_actor
from bus.base import Bus, Entry
from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.memory import MemoryBus
from bus.redis import open_redis_bus
from switchboard.testing.redis_server import open_redis_server

KEYS = Keys(namespace="poison", partitions=1)  # every call on one partition
POISON_CALL = "CA000000000000000000000000000000AA"
GOOD_CALL = "CA000000000000000000000000000000BB"
POISON = "this prompt stalls every worker"


@asynccontextmanager
async def open_bus(kind: str) -> AsyncIterator[Bus]:
    if kind == "memory":
        yield MemoryBus()
        return
    async with open_redis_server() as server, open_redis_bus(server.url) as bus:
        yield bus


class StallingConversation(ConversationActor):
    """The real conversation, but the poison prompt never finishes (a worker
    stuck on it, as the tokensPlayed flood made them)."""

    def __init__(self, config: ConversationConfig, started: trio.Event | None = None) -> None:
        super().__init__(config)
        self.started = started if started is not None else trio.Event()
        self.poison_attempts = 0

    async def handle(self, env: Envelope, entry: Entry) -> None:
        if env.body.get("voicePrompt") == POISON:
            self.poison_attempts += 1
            self.started.set()
            await trio.sleep_forever()
        await super().handle(env, entry)


class Caller:
    def __init__(self, bus: Bus, call: str) -> None:
        self.bus = bus
        self.call = call
        self.seq = 0

    async def send(self, kind: str, body: dict[str, object]) -> str:
        self.seq += 1
        env = Envelope(
            kind=kind,
            call=self.call,
            session=f"VX{self.call[2:]}",
            gateway="gw1",
            seq=self.seq,
            body=body,
        )
        return await self.bus.append(KEYS.calls_for(self.call), env.encode())

    async def setup(self) -> str:
        body = {"type": "setup", "sessionId": f"VX{self.call[2:]}", "callSid": self.call}
        return await self.send(Kind.CALL_SETUP, {**body, "customParameters": {}})

    async def say(self, text: str) -> str:
        body = {"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": True}
        return await self.send(Kind.CALL_PROMPT, body)


def config(**kw: float | int) -> ConversationConfig:
    return ConversationConfig(keys=KEYS, system_prompt="Test.", silence_reprompt_s=0, **kw)  # type: ignore[arg-type]


async def requests_for(bus: Bus, call: str) -> list[Envelope]:
    envs = [Envelope.decode(e.fields) for e in await bus.range(KEYS.llm)]
    return [e for e in envs if e.call == call]


async def wait_request(bus: Bus, call: str, text: str) -> Envelope:
    """The llm.request whose last message is ``text`` (blocking reads, no polling)."""
    after = "0"
    while True:
        for entry in await bus.read(KEYS.llm, after, count=10, block_ms=1000):
            after = entry.id
            env = Envelope.decode(entry.fields)
            if env.call == call and env.body["messages"][-1]["content"] == text:
                return env


async def apologies(bus: Bus) -> list[Envelope]:
    envs = [Envelope.decode(e.fields) for e in await bus.range(KEYS.gateway("gw1"))]
    return [e for e in envs if e.kind == Kind.GATEWAY_SEND]


@pytest.mark.parametrize("bus_kind", ["memory", "redis"])
async def test_a_handler_past_its_deadline_is_retried_then_dead_lettered(bus_kind: str) -> None:
    with trio.fail_after(60):  # hang guard for a loaded machine
        async with open_bus(bus_kind) as bus, trio.open_nursery() as nursery:
            actor = StallingConversation(config(handler_deadline_s=0.2))
            poison, good = Caller(bus, POISON_CALL), Caller(bus, GOOD_CALL)
            await nursery.start(partial(serve_actor, bus, actor, consumer="w1", max_attempts=3))
            await poison.setup()
            await good.setup()
            poison_id = await poison.say(POISON)
            await good.say("Are you open on Sunday?")
            # The other call on the partition is answered after the poison is given up.
            await wait_request(bus, GOOD_CALL, "Are you open on Sunday?")
            dead = await bus.range(dead_letter_stream(KEYS))
            sent = await apologies(bus)
            poison_requests = await requests_for(bus, POISON_CALL)
            nursery.cancel_scope.cancel()
    assert actor.poison_attempts == 3
    assert [d.fields["dead.id"] for d in dead] == [poison_id]
    assert "deadline" in dead[0].fields["dead.error"]
    assert [s.call for s in sent] == [POISON_CALL]
    assert sent[0].body["frame"] == {
        "type": "text",
        "token": ConversationConfig().apology_text,
        "last": True,
    }
    assert poison_requests == []


@pytest.mark.parametrize("bus_kind", ["memory", "redis"])
async def test_an_entry_whose_workers_keep_dying_is_dead_lettered_by_delivery_count(
    bus_kind: str,
) -> None:
    # No deadline: the worker dies holding the entry (cancelled, as kill -9
    # would leave it: unacked, the lease abandoned). Each next owner takes
    # it from the partition's pending list with a higher delivery count.
    cfg = config(handler_deadline_s=3600, max_deliveries=2)
    with trio.fail_after(60):
        async with open_bus(bus_kind) as bus:
            poison, good = Caller(bus, POISON_CALL), Caller(bus, GOOD_CALL)
            await bus.ensure_group(KEYS.calls(0), "conversation")
            await poison.setup()
            await good.setup()
            poison_id = await poison.say(POISON)
            await good.say("Are you open on Sunday?")
            attempts = 0
            for worker in ("w1", "w2"):
                started = trio.Event()
                actor = StallingConversation(cfg, started)
                async with trio.open_nursery() as nursery:
                    await nursery.start(
                        partial(serve_actor, bus, actor, consumer=worker, lease_ttl_ms=300)
                    )
                    await started.wait()
                    nursery.cancel_scope.cancel()  # the worker dies mid-entry
                attempts += actor.poison_attempts
            # The third delivery is over the limit: never handled again.
            last = StallingConversation(cfg)
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                serve = partial(serve_actor, bus, last, consumer="w3", lease_ttl_ms=300, stop=stop)
                await nursery.start(serve)
                await wait_request(bus, GOOD_CALL, "Are you open on Sunday?")
                stop.set()  # graceful: the entry in flight finishes and is acked
            dead = await bus.range(dead_letter_stream(KEYS))
            sent = await apologies(bus)
            pending = await bus.pending_count(KEYS.calls(0), "conversation")
    assert attempts == 2 and last.poison_attempts == 0
    assert [d.fields["dead.id"] for d in dead] == [poison_id]
    assert dead[0].fields["dead.deliveries"] == "3"
    assert "delivered 3 times" in dead[0].fields["dead.error"]
    assert [s.call for s in sent] == [POISON_CALL]
    assert pending == 0
