"""The conversation's state cache: used under the lease it was written with, never after.

MemoryBus and the autojump clock. "Used" is shown by behaviour: a state
written to the bus behind the owner's back is ignored while the owner holds
the lease (it never reads), and is what a new owner, or the same worker under
a new epoch, continues from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
import trio.testing

from actors.config import ConversationConfig
from actors.conversation import CallState, ConversationActor
from actors.conversation.cache import StateCache
from actors.partitions import owner_of
from actors.runtime import serve_actor
from bus.base import Lease
from bus.envelope import Envelope, Kind
from bus.keys import Keys, partition_of
from bus.memory import MemoryBus
from switchboard.testing.requests import requested_messages

KEYS = Keys(namespace="sc", partitions=4)
SESSION = "VX00000000000000000000000000000001"
TTL_MS = 5000


def config(cache: int = 16) -> ConversationConfig:
    return ConversationConfig(
        keys=KEYS, system_prompt="test", welcome_greeting=None, state_cache_calls=cache
    )


async def until(cond: Callable[[], bool], step: float = 0.05) -> None:
    """Wait for a condition on the virtual clock (callers bound it with fail_after)."""
    while True:
        if cond():
            return
        await trio.sleep(step)


class Caller:
    def __init__(self, bus: MemoryBus, call: str) -> None:
        self.bus = bus
        self.call = call
        self.seq = 0
        self.cursor = "0"

    async def send(self, kind: str, body: dict[str, Any], turn: int = 0) -> None:
        self.seq += 1
        env = Envelope(
            kind=kind, call=self.call, session=SESSION, gateway="gw1", seq=self.seq, turn=turn,
            body=body,
        )  # fmt: skip
        await self.bus.append(KEYS.calls_for(self.call), env.encode())

    async def setup(self) -> None:
        body = {"type": "setup", "sessionId": SESSION, "callSid": self.call,
                "customParameters": {}}  # fmt: skip
        await self.send(Kind.CALL_SETUP, body)

    async def turn(self, text: str) -> list[dict[str, Any]]:
        """Say ``text``, answer the request; the request's messages."""
        await self.send(Kind.CALL_PROMPT, {"type": "prompt", "voicePrompt": text, "last": True})
        entries = await self.bus.read(KEYS.llm, self.cursor, count=1, block_ms=0)
        self.cursor = entries[0].id
        request = Envelope.decode(entries[0].fields)
        body = {"text": f"answer to {text}", "reply_to": request.body["reply_to"],
                "stop_reason": "end_turn", "error": None}  # fmt: skip
        await self.send(Kind.LLM_RESULT, body, turn=request.turn)
        return await requested_messages(self.bus, KEYS, request)

    async def applied(self, turn: int) -> None:
        """Wait until the state in the bus has ``turn``'s result applied."""

        async def done() -> bool:
            raw = await self.bus.get(KEYS.state(self.call))
            return raw is not None and CallState.from_json(raw).answered_turn >= turn

        while True:
            if await done():
                return
            await trio.sleep(0.05)


def holder(bus: MemoryBus, partition: int) -> str | None:
    state = bus._live_lease(KEYS.lease(partition))
    return state.owner if state is not None else None


async def tamper(bus: MemoryBus, call: str, marker: str, lease: Lease | None = None) -> None:
    """Rewrite the stored state's first message, as another writer would."""
    raw = await bus.get(KEYS.state(call))
    assert raw is not None
    state = CallState.from_json(raw)
    state.history[0] = {"role": "user", "content": marker}
    if lease is None:
        await bus.set(KEYS.state(call), state.to_json())
    else:
        assert await bus.set_if_lease(KEYS.state(call), state.to_json(), lease)


async def start(
    nursery: trio.Nursery, bus: MemoryBus, actor: ConversationActor, name: str
) -> trio.CancelScope:
    """Serve ``actor`` as ``name``; cancelling the scope is dying (leases abandoned)."""
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await serve_actor(
                bus, actor, consumer=name, lease_ttl_ms=TTL_MS, task_status=task_status
            )

    await nursery.start(run)
    return scope


def contents(messages: list[dict[str, Any]]) -> list[Any]:
    return [m["content"] for m in messages]


async def test_the_owner_uses_its_cached_state_while_it_holds_the_lease(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    caller = Caller(bus, "CA01")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await start(nursery, bus, ConversationActor(config()), "conv-1")
            await caller.setup()
            await caller.turn("first")
            await caller.applied(1)
            await tamper(bus, caller.call, "written behind the owner's back")
            messages = await caller.turn("second")
            nursery.cancel_scope.cancel()
    # The owner never re-read the state: the write behind its back is not seen.
    assert contents(messages) == ["first", "answer to first", "second"]


async def test_no_cache_when_turned_off(autojump_clock: trio.testing.MockClock) -> None:
    bus = MemoryBus()
    caller = Caller(bus, "CA01")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await start(nursery, bus, ConversationActor(config(cache=0)), "conv-1")
            await caller.setup()
            await caller.turn("first")
            await caller.applied(1)
            await tamper(bus, caller.call, "marker")
            messages = await caller.turn("second")
            nursery.cancel_scope.cancel()
    assert contents(messages) == ["marker", "answer to first", "second"]


async def test_after_failover_and_back_the_old_owner_reads_the_new_owners_state(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    # A call whose partition moves to conv-b when conv-b joins.
    call = next(
        c
        for c in (f"CA{i:02d}" for i in range(100))
        if owner_of(partition_of(c, KEYS.partitions), ["conv-a", "conv-b"]) == "conv-b"
    )
    p = partition_of(call, KEYS.partitions)
    caller = Caller(bus, call)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await start(nursery, bus, ConversationActor(config()), "conv-a")
            await caller.setup()
            await caller.turn("first")  # conv-a caches the state
            await caller.applied(1)
            b = await start(nursery, bus, ConversationActor(config()), "conv-b")
            await until(lambda: holder(bus, p) == "conv-b")
            await caller.turn("second")  # conv-b, from the bus
            await caller.applied(2)
            b.cancel()  # conv-b dies; conv-a takes the partition back (new epoch)
            await until(lambda: holder(bus, p) == "conv-a")
            messages = await caller.turn("third")
            nursery.cancel_scope.cancel()
    # conv-a's cached state (after "first") is stale: it read conv-b's.
    assert contents(messages) == [
        "first", "answer to first", "second", "answer to second", "third"
    ]  # fmt: skip


async def test_after_losing_the_lease_and_taking_it_again_the_cache_is_not_used(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    caller = Caller(bus, "CA01")
    p = partition_of(caller.call, KEYS.partitions)
    lease_key = KEYS.lease(p)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await start(nursery, bus, ConversationActor(config()), "conv-1")
            await caller.setup()
            await caller.turn("first")
            await caller.applied(1)
            old_epoch = bus._epochs[lease_key]
            # The lease moves on (as after a stall past its TTL): another
            # writer writes the state under the new epoch and lets go.
            await bus.release_lease(Lease(lease_key, "conv-1", old_epoch))
            thief = await bus.acquire_lease(lease_key, "thief", TTL_MS)
            assert thief is not None
            await tamper(bus, caller.call, "written under the next epoch", thief)
            await bus.release_lease(thief)
            await until(lambda: holder(bus, p) == "conv-1" and bus._epochs[lease_key] > thief.epoch)
            messages = await caller.turn("second")
            nursery.cancel_scope.cancel()
    assert contents(messages) == ["written under the next epoch", "answer to first", "second"]


async def test_cache_entries_are_bound_to_their_lease_epoch_and_bounded() -> None:
    cache = StateCache(max_calls=2)
    lease = Lease("sc:lease:0", "w", 3)
    for call in ("a", "b", "c"):
        cache.put(CallState(call=call), lease, 0, ttl_ms=60_000)
    assert len(cache) == 2
    assert cache.take("a", lease) is None  # least recently written: evicted
    assert cache.take("b", Lease("sc:lease:0", "w", 4)) is None  # another epoch
    assert cache.take("b", lease) is None  # and taking it dropped it
    assert cache.take("c", None) is None  # outside a lease
    cache.put(CallState(call="d"), lease, 0, ttl_ms=60_000)
    got = cache.take("d", lease)
    assert got is not None and got.call == "d"
    assert cache.take("d", lease) is None  # taken: back only once persisted
    cache.put(CallState(call="e"), lease, 1, ttl_ms=60_000)
    cache.drop_partition(1)
    assert cache.take("e", lease) is None
