"""The conversation actor on a MemoryBus, fed exactly as the gateway feeds it.

The LLM side is played by the test: it reads ``llm.request`` entries from
``keys.llm`` and appends ``llm.result`` entries to the call's partition stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
import trio.testing
from structlog.testing import capture_logs

from actors.config import ConversationConfig
from actors.conversation import CallState, ConversationActor
from actors.history import request_messages
from actors.runtime import dead_letter_stream, serve_actor
from bus.base import Bus, Entry
from bus.envelope import Envelope, Kind
from bus.keys import Keys, partition_of
from bus.memory import MemoryBus
from bus.messages import HistoryMessage
from switchboard.testing.requests import requested_messages

KEYS = Keys(namespace="cv", partitions=4)


async def asked(bus: Bus, request: Envelope) -> list[HistoryMessage]:
    """The messages the model is sent for ``request`` (requests carry only what is new)."""
    return await requested_messages(bus, KEYS, request)


GREETING = "Hi! This is the demo line. How can I help?"
SYSTEM = "You are a test agent."
CALL = "CA00000000000000000000000000000001"
SESSION = "VX00000000000000000000000000000001"


def config(greeting: str | None = GREETING) -> ConversationConfig:
    return ConversationConfig(keys=KEYS, system_prompt=SYSTEM, welcome_greeting=greeting)


class Caller:
    """Appends caller events the way the gateway does (seq per session)."""

    def __init__(self, bus: MemoryBus, call: str = CALL, session: str = SESSION) -> None:
        self.bus = bus
        self.call = call
        self.session = session
        self.seq = 0
        self.llm_cursor = "0"

    async def send(self, kind: str, body: dict[str, Any]) -> tuple[str, Envelope]:
        self.seq += 1
        env = Envelope(
            kind=kind,
            call=self.call,
            session=self.session,
            gateway="gw1",
            seq=self.seq,
            body=body,
        )
        entry_id = await self.bus.append(KEYS.calls_for(self.call), env.encode())
        return entry_id, env

    async def setup(self) -> tuple[str, Envelope]:
        return await self.send(
            Kind.CALL_SETUP,
            {
                "type": "setup",
                "sessionId": self.session,
                "callSid": self.call,
                "from": "+15550001",
                "to": "+15550002",
                "customParameters": {},
            },
        )

    async def say(self, text: str, *, last: bool = True) -> tuple[str, Envelope]:
        return await self.send(
            Kind.CALL_PROMPT,
            {"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": last},
        )

    async def reply(self, turn: int, text: str, reply_to: int) -> None:
        """Play the LLM actor: a finished reply for ``turn``."""
        env = Envelope(
            kind=Kind.LLM_RESULT,
            call=self.call,
            session=self.session,
            gateway="gw1",
            turn=turn,
            body={
                "text": text,
                "reply_to": reply_to,
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 1, "output_tokens": 1},
                "timings": {"first_token_ms": 1.0, "total_ms": 2.0},
                "error": None,
            },
        )
        await self.bus.append(KEYS.calls_for(self.call), env.encode())

    async def next_request(self) -> Envelope:
        """Wait for the next ``llm.request`` (blocking read: no polling)."""
        entries = await self.bus.read(KEYS.llm, self.llm_cursor, count=1, block_ms=0)
        self.llm_cursor = entries[0].id
        env = Envelope.decode(entries[0].fields)
        assert env.kind == Kind.LLM_REQUEST
        return env


@asynccontextmanager
async def serving(
    bus: MemoryBus, actor: ConversationActor, consumer: str = "conv-1"
) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_actor, bus, actor, consumer=consumer))
        yield
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()


async def llm_requests(bus: MemoryBus) -> list[Envelope]:
    return [Envelope.decode(e.fields) for e in await bus.range(KEYS.llm)]


async def test_greeting_is_the_first_message_and_system_prompt_is_configured() -> None:
    bus = MemoryBus()
    caller = Caller(bus)
    with trio.fail_after(5):
        async with serving(bus, ConversationActor(config())):
            await caller.setup()
            _, prompt = await caller.say("What are your opening hours?")
            request = await caller.next_request()
    assert request.turn == 1
    assert request.call == CALL and request.session == SESSION and request.gateway == "gw1"
    assert request.body["reply_to"] == prompt.seq == 2
    assert request.body["system"] == SYSTEM
    assert (await asked(bus, request)) == [
        {"role": "assistant", "content": GREETING},
        {"role": "user", "content": "What are your opening hours?"},
    ]


async def test_turns_increment_and_turn_three_carries_the_whole_history() -> None:
    bus = MemoryBus()
    caller = Caller(bus)
    with trio.fail_after(5):
        async with serving(bus, ConversationActor(config())):
            await caller.setup()
            await caller.say("one")
            r1 = await caller.next_request()
            await caller.reply(r1.turn, "answer one", r1.body["reply_to"])
            await caller.say("two")
            r2 = await caller.next_request()
            await caller.reply(r2.turn, "answer two", r2.body["reply_to"])
            await caller.say("three")
            r3 = await caller.next_request()
    assert [r1.turn, r2.turn, r3.turn] == [1, 2, 3]
    assert [r1.body["reply_to"], r2.body["reply_to"], r3.body["reply_to"]] == [2, 3, 4]
    assert (await asked(bus, r3)) == [
        {"role": "assistant", "content": GREETING},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "answer one"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "answer two"},
        {"role": "user", "content": "three"},
    ]
    # Caller speech never reaches the system prompt.
    assert all(r.body["system"] == SYSTEM for r in (r1, r2, r3))


async def test_redelivered_entry_is_skipped() -> None:
    bus = MemoryBus()
    actor = ConversationActor(config())
    actor.attach(bus)
    caller = Caller(bus)
    setup_id, setup = await caller.setup()
    prompt_id, prompt = await caller.say("hello")
    stream = KEYS.calls_for(CALL)
    with trio.fail_after(5):
        await actor.handle(setup, Entry(stream, setup_id, setup.encode()))
        await actor.handle(prompt, Entry(stream, prompt_id, prompt.encode()))
        # The ack was lost: the same entries come again.
        await actor.handle(prompt, Entry(stream, prompt_id, prompt.encode(), deliveries=2))
        await actor.handle(setup, Entry(stream, setup_id, setup.encode(), deliveries=2))
        state = await actor.load_state(CALL)
        requests = await llm_requests(bus)
    assert len(requests) == 1
    assert state is not None
    assert state.turn == 1
    assert state.last_entry_id == prompt_id
    assert state.history == [
        {"role": "assistant", "content": GREETING},
        {"role": "user", "content": "hello"},
    ]


async def test_interim_prompts_are_ignored() -> None:
    bus = MemoryBus()
    caller = Caller(bus)
    actor = ConversationActor(config())
    with trio.fail_after(5):
        async with serving(bus, actor):
            await caller.setup()
            await caller.say("I would", last=False)
            await caller.say("I would like a", last=False)
            await caller.say("I would like a table")
            request = await caller.next_request()
        state = await actor.load_state(CALL)
    assert len(await llm_requests(bus)) == 1
    assert request.turn == 1
    assert request.body["reply_to"] == 4
    assert (await asked(bus, request))[-1] == {"role": "user", "content": "I would like a table"}
    assert state is not None and state.turn == 1


async def test_state_survives_a_new_actor_instance(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    caller = Caller(bus)
    # The old worker dies holding its leases: the successor owns the
    # partitions once they expire (the lease TTL, on the autojump clock).
    with trio.fail_after(30):
        async with serving(bus, ConversationActor(config()), consumer="conv-old"):
            await caller.setup()
            await caller.say("first")
            r1 = await caller.next_request()
            await caller.reply(r1.turn, "first answer", r1.body["reply_to"])
        # The old process is gone; a new one (new consumer) takes over.
        successor = ConversationActor(config())
        async with serving(bus, successor, consumer="conv-new"):
            await caller.say("second")
            r2 = await caller.next_request()
        state = await successor.load_state(CALL)
    assert r2.turn == 2
    assert (await asked(bus, r2)) == [
        {"role": "assistant", "content": GREETING},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second"},
    ]
    assert state is not None and state.turn == 2


async def test_stale_results_are_ignored_and_unanswered_prompts_merge() -> None:
    bus = MemoryBus()
    caller = Caller(bus)
    actor = ConversationActor(config(greeting=None))
    with trio.fail_after(5):
        async with serving(bus, actor):
            await caller.setup()
            await caller.say("book a table")
            r1 = await caller.next_request()
            # The caller speaks again before the reply came back.
            await caller.say("for two people")
            # Turn 2's request waits for turn 1's (cancelled) result.
            await caller.reply(r1.turn, "late answer to turn one", r1.body["reply_to"])
            r2 = await caller.next_request()
            await caller.reply(r2.turn, "A table for two, sure.", r2.body["reply_to"])
            # A duplicate result for the same turn (the request ran twice).
            await caller.reply(r2.turn, "A table for two, sure.", r2.body["reply_to"])
        state = await actor.load_state(CALL)
    assert (await asked(bus, r1)) == [{"role": "user", "content": "book a table"}]
    assert r2.turn == 2
    assert (await asked(bus, r2)) == [{"role": "user", "content": "book a table for two people"}]
    assert state is not None
    # The superseded reply was never heard (no tokensPlayed): it is dropped;
    # the two prompts stay one user turn as the model sees it.
    assert state.history == [
        {"role": "user", "content": "book a table"},
        {"role": "user", "content": "for two people"},
        {"role": "assistant", "content": "A table for two, sure."},
    ]
    assert request_messages(state.history) == [
        {"role": "user", "content": "book a table for two people"},
        {"role": "assistant", "content": "A table for two, sure."},
    ]
    # The superseded generation was cancelled on the control stream.
    cancels = [Envelope.decode(e.fields) for e in await bus.range(KEYS.control)]
    assert [(c.kind, c.body) for c in cancels] == [
        (Kind.CONTROL_CANCEL, {"reply_to": r1.body["reply_to"], "reason": "superseded"})
    ]


async def test_resumed_call_keeps_history_and_close_is_recorded() -> None:
    bus = MemoryBus()
    actor = ConversationActor(config())
    first = Caller(bus)
    with trio.fail_after(5):
        async with serving(bus, actor):
            await first.setup()
            await first.say("hello")
            r1 = await first.next_request()
            await first.reply(r1.turn, "hi there", r1.body["reply_to"])
            await first.send(Kind.CALL_DTMF, {"type": "dtmf", "digit": "5"})
            await first.send(Kind.CALL_CLOSED, {"code": 1000, "reason": "ended"})
        closed = await actor.load_state(CALL)
        # A new session of the same call, through another gateway.
        second = Caller(bus, session="VX00000000000000000000000000000002")
        second.seq = 0
        second.llm_cursor = first.llm_cursor
        async with serving(bus, actor):
            await second.setup()
            await second.say("me again")
            r2 = await second.next_request()
        resumed = await actor.load_state(CALL)
    assert closed is not None and closed.closed
    assert resumed is not None and not resumed.closed
    assert resumed.session == "VX00000000000000000000000000000002"
    assert r2.session == "VX00000000000000000000000000000002"
    assert r2.turn == 2
    assert (await asked(bus, r2))[0] == {"role": "assistant", "content": GREETING}
    assert [m["role"] for m in (await asked(bus, r2))] == [
        "assistant",
        "user",
        "assistant",
        "user",
    ]


def test_call_state_round_trips_through_json() -> None:
    state = CallState(
        call=CALL,
        session=SESSION,
        gateway="gw1",
        turn=3,
        history=[{"role": "user", "content": "x"}],
        last_entry_id="5-1",
        reply_to=9,
        answered_turn=2,
        closed=True,
    )
    assert CallState.from_json(state.to_json()) == state


def same_partition_call(call: str) -> str:
    """Another call sid on ``call``'s partition (one stream, read in order)."""
    p = partition_of(call, KEYS.partitions)
    return next(
        c for c in (f"CA{n:032d}" for n in range(2, 1000)) if partition_of(c, KEYS.partitions) == p
    )


async def test_a_malformed_entry_is_refused_typed_and_the_next_call_on_its_stream_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    actor = ConversationActor(config())
    broken, other = Caller(bus), Caller(bus, call=same_partition_call(CALL))
    with trio.fail_after(60), capture_logs() as logs:
        async with serving(bus, actor):
            await broken.setup()
            await broken.send(Kind.CALL_DTMF, {"type": "dtmf", "digit": 5})  # not a string
            await other.setup()
            await other.say("hello")
            request = await other.next_request()
    assert request.call == other.call and (await asked(bus, request))[-1]["content"] == "hello"
    (dead,) = await bus.range(dead_letter_stream(KEYS))
    assert Envelope.decode(dead.fields).kind == Kind.CALL_DTMF
    assert "digit" in dead.fields["dead.error"] and "MalformedEntry" in dead.fields["dead.error"]
    state = await actor.load_state(CALL)
    assert state is not None and state.dtmf_digits == ""  # nothing of it applied
    assert not [e for e in logs if e["event"] == "caller_dtmf"]


async def test_an_entry_of_a_kind_it_does_not_know_is_skipped() -> None:
    bus = MemoryBus()
    actor = ConversationActor(config())
    actor.attach(bus)
    caller = Caller(bus)
    entry_id, env = await caller.send("analytics.mark", {"note": "x"})
    with capture_logs() as logs:
        await actor.handle(env, Entry(KEYS.calls_for(CALL), entry_id, env.encode()))
    assert [e["event"] for e in logs] == ["unexpected_kind"]
    assert await actor.load_state(CALL) is None
