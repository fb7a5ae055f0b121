"""Barge-in, superseding, DTMF, silence and resume in the conversation actor.

The actor runs on a MemoryBus, fed exactly as the gateway feeds it; the test
plays the LLM actor (reads ``llm.request``, appends ``llm.result``) and reads
what the conversation publishes on the control and gateway streams. Timers
run on the autojump clock: the actor's clock is Trio's, in milliseconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
import trio.testing

from actors.config import ConversationConfig
from actors.conversation import CallState, ConversationActor
from actors.history import request_messages
from actors.runtime import serve_actor
from bus.base import Bus
from bus.envelope import Envelope, Kind
from bus.keys import Keys, partition_of
from bus.memory import MemoryBus
from bus.messages import HistoryMessage
from switchboard.testing.requests import requested_messages

KEYS = Keys(namespace="ct", partitions=4)


async def asked(bus: Bus, request: Envelope) -> list[HistoryMessage]:
    """The messages the model is sent for ``request`` (requests carry only what is new)."""
    return await requested_messages(bus, KEYS, request)


GREETING = "Hi! This is the demo line. How can I help?"
CALL = "CA00000000000000000000000000000007"
SESSION = "VX00000000000000000000000000000007"


def trio_ms() -> float:
    return trio.current_time() * 1000


def make_actor(**overrides: Any) -> ConversationActor:
    fields: dict[str, Any] = {
        "keys": KEYS,
        "system_prompt": "You are a test agent.",
        "welcome_greeting": GREETING,
        "silence_reprompt_s": 0,  # off unless a test is about it
    }
    fields.update(overrides)
    return ConversationActor(ConversationConfig(**fields), clock=trio_ms)


class Line:
    """The gateway and the LLM actor as the conversation sees them."""

    def __init__(self, bus: MemoryBus, session: str = SESSION) -> None:
        self.bus = bus
        self.session = session
        self.seq = 0
        self.cursors = {KEYS.llm: "0", KEYS.control: "0", KEYS.gateway("gw1"): "0"}

    async def send(self, kind: str, body: dict[str, Any]) -> Envelope:
        self.seq += 1
        env = Envelope(
            kind=kind, call=CALL, session=self.session, gateway="gw1", seq=self.seq, body=body
        )
        await self.bus.append(KEYS.calls_for(CALL), env.encode())
        return env

    async def setup(self, **params: str) -> Envelope:
        body = {"type": "setup", "sessionId": self.session, "callSid": CALL}
        return await self.send(Kind.CALL_SETUP, {**body, "customParameters": params})

    async def say(self, text: str) -> Envelope:
        body = {"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": True}
        return await self.send(Kind.CALL_PROMPT, body)

    async def played(self, text: str) -> None:
        await self.send(Kind.CALL_INFO, {"type": "info", "name": "tokensPlayed", "value": text})

    async def interrupt(self, fragment: str, duration_ms: float = 500) -> Envelope:
        body = {
            "type": "interrupt",
            "utteranceUntilInterrupt": fragment,
            "durationUntilInterruptMs": duration_ms,
        }
        return await self.send(Kind.CALL_INTERRUPT, body)

    async def dtmf(self, digit: str) -> Envelope:
        return await self.send(Kind.CALL_DTMF, {"type": "dtmf", "digit": digit})

    async def result(
        self,
        request: Envelope,
        text: str,
        *,
        messages: list[dict[str, Any]] | None = None,
        cancelled: bool = False,
    ) -> None:
        body: dict[str, Any] = {
            "text": text,
            "reply_to": request.body["reply_to"],
            "stop_reason": None if cancelled else "end_turn",
            "usage": {"input_tokens": 1, "output_tokens": 1},
            "timings": {"first_token_ms": 1.0, "total_ms": 2.0},
            "error": None,
            "cancelled": cancelled,
        }
        if messages is not None:
            body["messages"] = messages
        env = Envelope(
            kind=Kind.LLM_RESULT, call=CALL, session=request.session, gateway="gw1",
            turn=request.turn, body=body,
        )  # fmt: skip
        await self.bus.append(KEYS.calls_for(CALL), env.encode())

    async def next(self, stream: str) -> Envelope:
        """The next entry the conversation wrote to ``stream`` (blocking read)."""
        entries = await self.bus.read(stream, self.cursors[stream], count=1, block_ms=0)
        self.cursors[stream] = entries[0].id
        return Envelope.decode(entries[0].fields)

    async def request(self) -> Envelope:
        return await self.next(KEYS.llm)

    async def cancel(self) -> Envelope:
        return await self.next(KEYS.control)

    async def frame(self) -> Envelope:
        return await self.next(KEYS.gateway("gw1"))


@asynccontextmanager
async def serving(
    bus: MemoryBus, actor: ConversationActor, consumer: str = "conv-1"
) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_actor, bus, actor, consumer=consumer))
        yield nursery
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()


async def state_of(actor: ConversationActor) -> CallState:
    state = await actor.load_state(CALL)
    assert state is not None
    return state


REPLY = "Sure. We open at nine in the morning, and we close at ten at night."


async def test_interrupt_before_the_result_cancels_and_truncates_to_tokens_played() -> None:
    bus, actor = MemoryBus(), make_actor()
    line = Line(bus)
    with trio.fail_after(5):
        async with serving(bus, actor):
            await line.setup()
            await line.say("When are you open?")
            r1 = await line.request()
            await line.played("Sure. ")
            await line.played("We open at nine")
            interrupt = await line.interrupt("We open at nine", 900)
            cancel = await line.cancel()
            # The cancelled generation still reports everything it streamed.
            await line.result(r1, REPLY, cancelled=True)
            await line.say("And on Sundays?")
            r2 = await line.request()
    assert cancel.kind == Kind.CONTROL_CANCEL
    assert cancel.body == {"reply_to": r1.body["reply_to"], "reason": "interrupt"}
    assert (cancel.call, cancel.session, cancel.turn) == (CALL, SESSION, 1)
    assert interrupt.seq > r1.body["reply_to"]
    assert (await asked(bus, r2)) == [
        {"role": "assistant", "content": GREETING},
        {"role": "user", "content": "When are you open?"},
        {"role": "assistant", "content": "Sure. We open at nine"},
        {"role": "user", "content": "And on Sundays?"},
    ]


async def test_interrupt_after_the_result_truncates_by_the_chunk_fragment() -> None:
    bus, actor = MemoryBus(), make_actor()
    line = Line(bus)
    with trio.fail_after(5):
        async with serving(bus, actor):
            await line.setup()
            await line.say("When are you open?")
            r1 = await line.request()
            await line.result(r1, REPLY)
            # No tokensPlayed subscription; the fragment covers only the
            # chunk that was playing, with different case and punctuation.
            await line.interrupt("and WE close", 700)
            await line.say("Thanks")
            r2 = await line.request()
        control = await bus.range(KEYS.control)
    assert control == []  # nothing left to cancel: the reply was complete
    assert (await asked(bus, r2))[2] == {
        "role": "assistant",
        "content": "Sure. We open at nine in the morning, and we close",
    }


async def test_interrupting_the_greeting_truncates_it() -> None:
    bus, actor = MemoryBus(), make_actor()
    line = Line(bus)
    with trio.fail_after(5):
        async with serving(bus, actor):
            await line.setup()
            await line.interrupt("Hi! This is the", 600)
            await line.say("I need a table")
            r1 = await line.request()
    assert (await asked(bus, r1)) == [
        {"role": "assistant", "content": "Hi! This is the"},
        {"role": "user", "content": "I need a table"},
    ]


async def test_interrupt_with_an_unknown_fragment_falls_back_to_duration() -> None:
    bus, actor = MemoryBus(), make_actor(welcome_greeting=None)
    line = Line(bus)
    with trio.fail_after(5):
        async with serving(bus, actor):
            await line.setup()
            await line.say("When are you open?")
            r1 = await line.request()
            await line.interrupt("<speak>something else entirely</speak>", 1000)
            await line.result(r1, REPLY)
            await line.say("ok")
            r2 = await line.request()
    # ~14 characters a second, cut at a word boundary.
    assert (await asked(bus, r2))[1] == {"role": "assistant", "content": "Sure. We open"}


async def test_superseded_reply_keeps_only_tool_pairs_when_unheard() -> None:
    bus, actor = MemoryBus(), make_actor(welcome_greeting=None)
    line = Line(bus)
    tool_use = {"type": "tool_use", "id": "toolu_1", "name": "send_digits",
                "input": {"digits": "123"}}  # fmt: skip
    tool_result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sent"}
    messages = [
        {"role": "assistant", "content": [{"type": "text", "text": "Dialling now."}, tool_use]},
        {"role": "user", "content": [tool_result]},
        {"role": "assistant", "content": [{"type": "text", "text": "Done, I pressed them."}]},
    ]
    with trio.fail_after(5):
        async with serving(bus, actor):
            await line.setup()
            await line.say("press one two three")
            r1 = await line.request()
            await line.say("actually wait")
            cancel = await line.cancel()
            # The new turn's request waits for the cancelled turn's result.
            await line.result(r1, "Dialling now.Done, I pressed them.", messages=messages,
                              cancelled=True)  # fmt: skip
            r2 = await line.request()
            await line.result(r2, "Waiting.")
        state = await state_of(actor)
    assert cancel.body == {"reply_to": r1.body["reply_to"], "reason": "superseded"}
    assert (await asked(bus, r2)) == [
        {"role": "user", "content": "press one two three"},
        {"role": "assistant", "content": [tool_use]},
        {"role": "user", "content": [tool_result, {"type": "text", "text": "actually wait"}]},
    ]
    # The caller heard nothing of turn 1 (no tokensPlayed): its text is gone,
    # the tool pair stays, before the prompt that superseded it.
    assert state.history == [
        {"role": "user", "content": "press one two three"},
        {"role": "assistant", "content": [tool_use]},
        {"role": "user", "content": [tool_result]},
        {"role": "user", "content": "actually wait"},
        {"role": "assistant", "content": "Waiting."},
    ]
    shaped = request_messages(state.history)
    assert [m["role"] for m in shaped] == ["user", "assistant", "user", "assistant"]
    assert shaped[2]["content"] == [tool_result, {"type": "text", "text": "actually wait"}]


async def test_superseded_reply_keeps_what_tokens_played_say_was_heard() -> None:
    bus, actor = MemoryBus(), make_actor(welcome_greeting=None)
    line = Line(bus)
    with trio.fail_after(5):
        async with serving(bus, actor):
            await line.setup()
            await line.say("When are you open?")
            r1 = await line.request()
            await line.played("Sure. We open at nine ")
            await line.say("never mind")
            await line.result(r1, REPLY, cancelled=True)
            r2 = await line.request()
            await line.result(r2, "OK.")
            await line.say("bye")
            r3 = await line.request()
    assert (await asked(bus, r3)) == [
        {"role": "user", "content": "When are you open?"},
        {"role": "assistant", "content": "Sure. We open at nine"},
        {"role": "user", "content": "never mind"},
        {"role": "assistant", "content": "OK."},
        {"role": "user", "content": "bye"},
    ]


async def test_a_request_waiting_for_a_lost_result_goes_out_after_a_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus, actor = MemoryBus(), make_actor(welcome_greeting=None)
    line = Line(bus)
    with trio.fail_after(30):
        async with serving(bus, actor):
            await line.setup()
            await line.say("one")
            await line.request()
            await line.say("two")
            start = trio.current_time()
            r2 = await line.request()  # turn 1's result never comes
            waited = trio.current_time() - start
    assert r2.turn == 2 and waited >= 1.0
    assert (await asked(bus, r2)) == [{"role": "user", "content": "one two"}]


async def test_dtmf_entry_ends_with_hash_and_with_the_idle_timer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus, actor = MemoryBus(), make_actor(welcome_greeting=None, dtmf_idle_s=3.0)
    line = Line(bus)
    with trio.fail_after(30):
        async with serving(bus, actor):
            await line.setup()
            await line.dtmf("1")
            await line.dtmf("2")
            hash_ = await line.dtmf("#")
            r1 = await line.request()
            await line.result(r1, "You pressed one two.")
            await line.dtmf("4")
            last = await line.dtmf("2")
            before = trio.current_time()
            r2 = await line.request()  # after the idle timeout, no '#'
            waited = trio.current_time() - before
    assert (await asked(bus, r1))[-1] == {"role": "user", "content": "[keypad] 1 2"}
    assert r1.body["reply_to"] == hash_.seq
    assert (await asked(bus, r2))[-1] == {"role": "user", "content": "[keypad] 4 2"}
    assert r2.body["reply_to"] == last.seq
    assert waited >= 3.0


async def test_dtmf_menu_entry_is_spoken_as_the_callers_words() -> None:
    menu = {"1": "I want to check an order.", "0": "I want to talk to a person."}
    bus, actor = MemoryBus(), make_actor(welcome_greeting=None, dtmf_menu=menu)
    line = Line(bus)
    with trio.fail_after(5):
        async with serving(bus, actor):
            await line.setup()
            await line.dtmf("0")
            await line.dtmf("#")
            r1 = await line.request()
    assert (await asked(bus, r1)) == [{"role": "user", "content": "I want to talk to a person."}]


async def test_silence_reprompts_then_ends_the_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    actor = make_actor(
        welcome_greeting="Hi.", silence_reprompt_s=5.0, silence_max_reprompts=2,
        reprompt_text="Still there?", goodbye_text="Goodbye for now.",
    )  # fmt: skip
    line = Line(bus)
    with trio.fail_after(120):
        async with serving(bus, actor):
            await line.setup()
            await line.say("hello")
            r1 = await line.request()
            await line.result(r1, "Hello! What can I do for you?")
            start = trio.current_time()
            first = await line.frame()
            first_after = trio.current_time() - start
            second = await line.frame()
            goodbye = await line.frame()
            end = await line.frame()
        state = await state_of(actor)
    assert first.body == {"frame": {"type": "text", "token": "Still there?", "last": True},
                          "after_speech": False, "origin": "conversation"}  # fmt: skip
    assert second.body["frame"]["token"] == "Still there?"
    assert goodbye.body["frame"] == {
        "type": "text",
        "token": "Goodbye for now.",
        "last": True,
        "interruptible": False,
    }
    assert end.body == {"frame": {"type": "end", "handoffData": '{"reason": "silence"}'},
                        "after_speech": True, "origin": "conversation"}  # fmt: skip
    assert all(f.session == SESSION and f.kind == Kind.GATEWAY_SEND for f in (first, end))
    # Silence counts from when the reply should have finished playing.
    assert first_after >= 5.0 + len("Hello! What can I do for you?") / 14.0 - 0.01
    assert [m["content"] for m in state.history[-3:]] == [
        "Still there?",
        "Still there?",
        "Goodbye for now.",
    ]
    assert state.ending and state.timers == {}


async def test_caller_input_resets_the_silence_timer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    actor = make_actor(
        welcome_greeting=None, silence_reprompt_s=5.0, reprompt_text="Hello?", dtmf_idle_s=10.0
    )
    line = Line(bus)
    with trio.fail_after(60):
        async with serving(bus, actor):
            await line.setup()
            await line.say("one")
            r1 = await line.request()
            await line.result(r1, "A.")
            await trio.sleep(4.0)
            await line.dtmf("5")  # input: the 5 s start again (and a DTMF entry begins)
            await trio.sleep(4.0)
            await line.say("two")
            r2 = await line.request()
            await line.result(r2, "B.")
            start = trio.current_time()
            reprompt = await line.frame()
            waited = trio.current_time() - start
    assert (await asked(bus, r2))[-1] == {"role": "user", "content": "[keypad] 5 two"}
    assert reprompt.body["frame"]["token"] == "Hello?"
    assert waited >= 5.0


async def test_silence_timer_survives_a_failover(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    line = Line(bus)
    config: dict[str, Any] = {"welcome_greeting": None, "silence_reprompt_s": 20.0,
                              "reprompt_text": "Anyone there?"}  # fmt: skip
    with trio.fail_after(120):
        # The first worker applies the reply (arming the timer), then dies
        # holding its leases: nothing of it is left but the bus.
        async with serving(bus, make_actor(**config), consumer="conv-old"):
            await line.setup()
            await line.say("hello")
            r1 = await line.request()
            await line.result(r1, "Hi.")
            await trio.testing.wait_all_tasks_blocked()
        armed = trio.current_time()
        assert await bus.range(KEYS.gateway("gw1")) == []  # it died before the deadline
        index = await bus.get(KEYS.timers(partition_of(CALL, KEYS.partitions)))
        assert index is not None and CALL in index
        async with serving(bus, make_actor(**config), consumer="conv-new"):
            reprompt = await line.frame()
            fired = trio.current_time()
    assert reprompt.body["frame"]["token"] == "Anyone there?"
    # Fired once the new owner took over (the lease TTL) and the deadline passed.
    assert fired - armed >= 20.0 - 0.5


async def test_resumed_session_keeps_history_and_answers_the_cut_off_question_again() -> None:
    bus = MemoryBus()
    actor = make_actor(resume_greeting="Sorry, we got cut off.")
    first, second = Line(bus), Line(bus, session="VX00000000000000000000000000000008")
    with trio.fail_after(5):
        async with serving(bus, actor):
            await first.setup()
            await first.say("When are you open?")
            r1 = await first.request()
            await first.send(Kind.CALL_CLOSED, {"code": 1006, "reason": "dropped"})
            cancel = await first.cancel()
            # The reply finishes after the socket dropped: nobody heard it.
            await first.result(r1, REPLY)
            second.cursors = dict(first.cursors)
            await second.setup(resumed="true")
            # After Twilio's resume greeting, the question is answered again.
            again = await second.request()
            await second.result(again, REPLY)
            await second.say("Hello again")
            r2 = await second.request()
    assert cancel.body == {"reply_to": r1.body["reply_to"], "reason": "hangup"}
    assert again.session == second.session and again.turn == 2
    assert (await asked(bus, again)) == [
        {"role": "assistant", "content": GREETING},
        {"role": "user", "content": "When are you open?"},
    ]
    assert r2.session == second.session and r2.turn == 3
    assert (await asked(bus, r2)) == [
        {"role": "assistant", "content": GREETING},
        {"role": "user", "content": "When are you open?"},
        {"role": "assistant", "content": REPLY},
        {"role": "user", "content": "Hello again"},
    ]


async def test_a_session_that_ended_normally_is_greeted_again_without_a_repeat() -> None:
    bus = MemoryBus()
    actor = make_actor(resume_greeting="Sorry, we got cut off.")
    first, second = Line(bus), Line(bus, session="VX00000000000000000000000000000008")
    with trio.fail_after(5):
        async with serving(bus, actor):
            await first.setup()
            await first.say("When are you open?")
            r1 = await first.request()
            await first.send(Kind.CALL_CLOSED, {"code": 1000, "reason": "ended"})
            await first.cancel()
            await first.result(r1, REPLY)
            second.cursors = dict(first.cursors)
            await second.setup(resumed="true")
            await second.say("Hello again")
            r2 = await second.request()
    assert r2.turn == 2
    assert (await asked(bus, r2)) == [
        {"role": "assistant", "content": GREETING},
        {"role": "user", "content": "When are you open?"},
        {"role": "assistant", "content": "Sorry, we got cut off."},
        {"role": "user", "content": "Hello again"},
    ]
