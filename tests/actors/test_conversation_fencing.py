"""Nothing heard twice from a stale conversation worker.

The break: a conversation worker published its ``llm.request`` before its
fenced state write, so a worker that had lost its partition (stalled past
its lease) still published requests: 10 duplicate generations in 400 turns.
Now the state (with the entry's outbox) is written first, under the lease,
and only then are the messages appended; a new owner re-publishes what the
last entry left unpublished, and the LLM actor drops a request published
late by a worker that had lost its partition.
"""

from __future__ import annotations

from functools import partial

import trio
from structlog.testing import capture_logs

from actors.config import ConversationConfig, LLMConfig
from actors.conversation import ConversationActor
from actors.llm import LLMActor
from actors.providers import ScriptedProvider
from actors.runtime import serve_actor
from bus.base import Entry, Lease
from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.memory import MemoryBus
from switchboard.testing.faults import FaultyBus

KEYS = Keys(namespace="fence", partitions=1)
CALL = "CA000000000000000000000000000000F1"
SESSION = "VX000000000000000000000000000000F1"
LATE = "a prompt the worker stalls on"


def caller_env(seq: int, kind: str, body: dict[str, object]) -> Envelope:
    return Envelope(kind=kind, call=CALL, session=SESSION, gateway="gw1", seq=seq, body=body)


def setup_env() -> Envelope:
    body = {"type": "setup", "sessionId": SESSION, "callSid": CALL, "customParameters": {}}
    return caller_env(1, Kind.CALL_SETUP, body)


def prompt_env(seq: int, text: str) -> Envelope:
    body = {"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": True}
    return caller_env(seq, Kind.CALL_PROMPT, body)


def config() -> ConversationConfig:
    return ConversationConfig(keys=KEYS, system_prompt="Test.", silence_reprompt_s=0)


class Stalling(ConversationActor):
    """The real conversation; the ``LATE`` prompt waits for ``gate`` first (a stall)."""

    def __init__(self, gate: trio.Event) -> None:
        super().__init__(config())
        self.gate = gate
        self.stalled = trio.Event()
        self.done = trio.Event()

    async def handle(self, env: Envelope, entry: Entry) -> None:
        if env.body.get("voicePrompt") != LATE:
            await super().handle(env, entry)
            return
        self.stalled.set()
        try:
            await self.gate.wait()
            await super().handle(env, entry)
        finally:
            self.done.set()


async def test_a_worker_that_lost_its_lease_publishes_nothing() -> None:
    bus = MemoryBus()
    gate = trio.Event()
    actor = Stalling(gate)
    stream = KEYS.calls(0)
    with trio.fail_after(30), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            # A long lease: the renewal never notices the theft; the fenced write must.
            await nursery.start(
                partial(serve_actor, bus, actor, consumer="w1", lease_ttl_ms=60_000)
            )
            await bus.append(stream, setup_env().encode())
            await bus.append(stream, prompt_env(2, LATE).encode())
            await actor.stalled.wait()
            # The stall outlasts the lease: another worker owns the partition now.
            lease = KEYS.lease(0)
            await bus.release_lease(Lease(lease, "w1", 1))
            assert await bus.acquire_lease(lease, "w2", 60_000) is not None
            gate.set()
            await actor.done.wait()
            requests = await bus.range(KEYS.llm)
            nursery.cancel_scope.cancel()
    assert requests == []
    assert [e["event"] for e in logs if e["event"] == "state_write_fenced"] == [
        "state_write_fenced"
    ]
    assert await bus.pending_count(stream, "conversation") == 1  # the new owner's


async def test_a_request_persisted_but_never_published_is_published_by_the_redelivery() -> None:
    inner = MemoryBus()
    bus = FaultyBus(inner)
    actor = ConversationActor(config())
    actor.attach(bus)
    stream = KEYS.calls_for(CALL)
    setup, prompt = setup_env(), prompt_env(2, "Are you open on Sunday?")
    setup_id = await inner.append(stream, setup.encode())
    prompt_id = await inner.append(stream, prompt.encode())
    with trio.fail_after(10):
        await actor.handle(setup, Entry(stream, setup_id, setup.encode()))
        # The worker dies between its state write and its append.
        bus.fail_before("append_many")
        try:
            await actor.handle(prompt, Entry(stream, prompt_id, prompt.encode()))
        except Exception as exc:  # the injected ConnectionLost
            assert "injected" in str(exc)
        assert await inner.range(KEYS.llm) == []
        state = await actor.load_state(CALL)
        assert state is not None and state.last_entry_id == prompt_id
        # Redelivered (to this or the next owner): the missing request goes out.
        await actor.handle(prompt, Entry(stream, prompt_id, prompt.encode(), deliveries=2))
        # Again (the ack was lost this time): it is there already, not sent twice.
        await actor.handle(prompt, Entry(stream, prompt_id, prompt.encode(), deliveries=3))
        requests = [Envelope.decode(e.fields) for e in await inner.range(KEYS.llm)]
    assert len(requests) == 1
    assert requests[0].body["reply_to"] == 2
    assert requests[0].body["messages"][-1] == {
        "role": "user",
        "content": "Are you open on Sunday?",
    }


def request(reply_to: int, epoch: int) -> Envelope:
    return Envelope(
        kind=Kind.LLM_REQUEST,
        call=CALL,
        session=SESSION,
        gateway="gw1",
        seq=reply_to,
        turn=reply_to,
        epoch=epoch,
        body={
            "system": "Test.",
            "reply_to": reply_to,
            "messages": [{"role": "user", "content": f"question {reply_to}"}],
        },
    )


async def test_the_llm_actor_drops_a_request_published_late_by_a_stale_worker() -> None:
    bus = MemoryBus()
    actor = LLMActor(LLMConfig(keys=KEYS), ScriptedProvider())
    results = KEYS.calls_for(CALL)
    with trio.fail_after(30), capture_logs() as logs:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-1", stop=stop))
            # Turn 2 under epoch 1, answered.
            await bus.append(KEYS.llm, request(2, epoch=1).encode())
            # The new owner (epoch 2) re-publishes turn 3, which the old owner
            # had persisted but not yet published...
            await bus.append(KEYS.llm, request(3, epoch=2).encode())
            # ...then the stalled old owner wakes and publishes it: dropped.
            await bus.append(KEYS.llm, request(3, epoch=1).encode())
            # Epochs start again after Redis lost its data: a new turn under
            # epoch 1 is answered.
            await bus.append(KEYS.llm, request(4, epoch=1).encode())
            seen: list[int] = []
            after = "0"
            while 4 not in seen:
                for entry in await bus.read(results, after, block_ms=1000):
                    after = entry.id
                    seen.append(Envelope.decode(entry.fields).body["reply_to"])
            stop.set()  # graceful: what is in flight finishes and is acked
    assert await bus.pending_count(KEYS.llm, "llm") == 0
    assert sorted(seen) == [2, 3, 4]
    stale = [e for e in logs if e["event"] == "request_stale_epoch"]
    assert [(e["reply_to"], e["epoch"], e["newer_epoch"]) for e in stale] == [(3, 1, 2)]
