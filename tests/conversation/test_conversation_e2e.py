"""The conversation end to end: simulator (timed playback) -> dev composition.

Gateway, conversation, LLM (scripted provider) and telemetry run in this
process on a MemoryBus; the caller is the simulator speaking replies at a set
rate, so barge-in cuts a real playback. What the model is asked next is read
from the LLM request stream. Real sockets take real time: rates are fast and
every wait is for an event, bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from bus.envelope import Envelope, Kind
from bus.memory import MemoryBus
from bus.messages import HistoryMessage
from relay import End, Text
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.testing.requests import requested_messages
from switchboard.twilio import SimulatedCall, TimedPlayback, open_call

TOKEN = "conversation-e2e-token"


def settings(**env: str) -> Settings:
    base = {
        "TWILIO_AUTH_TOKEN": TOKEN,
        "SWITCHBOARD_PORT": "0",
        "SWITCHBOARD_PARTITIONS": "2",
        "SWITCHBOARD_WELCOME_GREETING": "Hi.",
        "SWITCHBOARD_SILENCE_REPROMPT_S": "0",
    }
    return Settings.from_env({**base, **env})


@asynccontextmanager
async def dev(s: Settings) -> AsyncIterator[tuple[str, MemoryBus]]:
    bus = MemoryBus()
    async with trio.open_nursery() as nursery:
        port = await start_dev(nursery, s, bus)
        yield f"http://127.0.0.1:{port}", bus
        nursery.cancel_scope.cancel()


async def wait_entry(
    bus: MemoryBus, stream: str, match: Callable[[Envelope], bool], after: str = "0"
) -> Envelope:
    """The first entry of ``stream`` after ``after`` that ``match``es (blocking reads)."""
    while True:
        entries = await bus.read(stream, after, block_ms=0)
        for entry in entries:
            env = Envelope.decode(entry.fields)
            if match(env):
                return env
        after = entries[-1].id


async def request_for_turn(bus: MemoryBus, s: Settings, turn: int) -> Envelope:
    return await wait_entry(bus, s.keys.llm, lambda e: e.turn == turn)


async def result_for_turn(bus: MemoryBus, s: Settings, call: str, turn: int) -> Envelope:
    return await wait_entry(
        bus, s.keys.calls_for(call), lambda e: e.kind == Kind.LLM_RESULT and e.turn == turn
    )


def assistant_texts(messages: list[HistoryMessage]) -> list[Any]:
    return [m["content"] for m in messages if m["role"] == "assistant"]


def timed(call: SimulatedCall) -> TimedPlayback:
    assert isinstance(call.playback, TimedPlayback)
    return call.playback


async def test_interrupt_before_the_llm_finished_cancels_it_and_keeps_what_was_heard() -> None:
    s = settings(
        SWITCHBOARD_DEBUG="speaker-events tokens-played",
        SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS="80",
    )
    with trio.fail_after(30):
        async with (
            dev(s) as (url, bus),
            open_call(url, auth_token=TOKEN, playback_rate=300) as call,
        ):
            await timed(call).wait_heard(1)  # the greeting
            await call.prompt("Tell me about your opening hours, please.")
            # The first sentence is complete (and playing) long before the
            # reply's last words are generated.
            await timed(call).wait_into_chunk(12)
            assert await call.barge_in("What about Sundays?")
            first = await result_for_turn(bus, s, call.call_sid, 1)
            second = await request_for_turn(bus, s, 2)
            asked = await requested_messages(bus, s.keys, second)
            await call.reply()
            heard = " ".join(timed(call).heard)
    assert first.body["cancelled"] is True
    full = first.body["text"]
    kept = assistant_texts(asked)[-1]
    assert isinstance(kept, str) and kept
    # Exactly what the caller heard of turn 1 (tokensPlayed), nothing more.
    assert full.startswith(kept) and len(kept) < len(full)
    fragment = call.interrupts[-1].utterance_until_interrupt.rstrip(" .,:;!?")
    assert fragment and kept.endswith(fragment)
    assert fragment in heard
    assert asked[-1] == {"role": "user", "content": "What about Sundays?"}
    assert call.late_tokens == []


async def test_interrupt_after_the_llm_finished_truncates_by_the_fragment() -> None:
    s = settings()  # no tokensPlayed: only the interrupt's chunk fragment
    with trio.fail_after(30):
        async with (
            dev(s) as (url, bus),
            open_call(url, auth_token=TOKEN, playback_rate=120) as call,
        ):
            await call.prompt("Tell me about your opening hours, please.")
            first = await result_for_turn(bus, s, call.call_sid, 1)
            await timed(call).wait_heard(2)  # the greeting, then sentence one
            played_whole = timed(call).heard[1]  # the reply's first chunk
            await timed(call).wait_into_chunk(8)
            assert await call.barge_in("OK")
            second = await request_for_turn(bus, s, 2)
            asked = await requested_messages(bus, s.keys, second)
            await call.reply()
    assert first.body["cancelled"] is False
    full = first.body["text"]
    kept = assistant_texts(asked)[-1]
    fragment = call.interrupts[-1].utterance_until_interrupt.rstrip(" .,:;!?")
    # Everything of the chunks played in full, plus the fragment of the next.
    assert full.startswith(kept) and len(played_whole) < len(kept) < len(full)
    assert kept.endswith(fragment)


async def test_interrupting_the_greeting_truncates_it_in_history() -> None:
    greeting = "Hello and welcome to the bistro, where every table has a view of the sea."
    s = settings(SWITCHBOARD_WELCOME_GREETING=greeting)
    with trio.fail_after(30):
        async with (
            dev(s) as (url, bus),
            open_call(url, auth_token=TOKEN, playback_rate=120) as call,
        ):
            await timed(call).wait_into_chunk(10)
            assert await call.barge_in("A table for two")
            request = await request_for_turn(bus, s, 1)
            asked = await requested_messages(bus, s.keys, request)
            await call.reply()
    kept = asked[0]
    assert kept["role"] == "assistant"
    assert greeting.startswith(kept["content"]) and len(kept["content"]) < len(greeting)
    assert asked[1] == {"role": "user", "content": "A table for two"}


async def test_dtmf_entry_by_hash_and_by_idle_timeout() -> None:
    s = settings(SWITCHBOARD_DTMF_IDLE_S="0.3")
    with trio.fail_after(30):
        async with dev(s) as (url, bus), open_call(url, auth_token=TOKEN) as call:
            for digit in "12#":
                assert await call.dtmf(digit)
            first = await call.reply()
            assert await call.dtmf("7")
            second = await call.reply()  # after the idle timeout: no '#'
            r1 = await request_for_turn(bus, s, 1)
            r2 = await request_for_turn(bus, s, 2)
            asked = [await requested_messages(bus, s.keys, r) for r in (r1, r2)]
    assert asked[0][-1] == {"role": "user", "content": "[keypad] 1 2"}
    assert asked[1][-1] == {"role": "user", "content": "[keypad] 7"}
    assert "1 2" in first.text and "7" in second.text


async def test_silence_reprompts_then_says_goodbye_and_ends() -> None:
    s = settings(
        SWITCHBOARD_SILENCE_REPROMPT_S="0.3",
        SWITCHBOARD_SILENCE_MAX_REPROMPTS="1",
        SWITCHBOARD_REPROMPT_TEXT="Are you still there?",
        SWITCHBOARD_GOODBYE_TEXT="Goodbye for now.",
    )
    with trio.fail_after(30):
        async with (
            dev(s) as (url, _bus),
            open_call(url, auth_token=TOKEN, playback_rate=400) as call,
        ):
            action = await call.wait_ended()
    texts = [m.token for m in call.received if isinstance(m, Text)]
    assert texts == ["Are you still there?", "Goodbye for now."]
    end = call.received[-1]
    assert isinstance(end, End) and json.loads(end.handoff_data or "{}") == {"reason": "silence"}
    assert call.session_status == "ended"
    assert action is not None and action.verbs == ("Hangup",)
    # The goodbye was spoken before the call ended (after_speech).
    assert timed(call).heard[-1] == "Goodbye for now."


async def test_resume_after_a_dropped_socket_continues_the_history() -> None:
    s = settings(SWITCHBOARD_RESUME_GREETING="Sorry, we got cut off.")
    with trio.fail_after(30):
        async with dev(s) as (url, bus), open_call(url, auth_token=TOKEN) as call:
            await call.prompt("My name is Ada.")
            first = await call.reply()
            action = await call.drop()
            assert action is not None and action.relay is not None
            async with call.follow_action() as resumed:
                assert resumed.call_sid == call.call_sid
                await resumed.prompt("What is my name?")
                await resumed.reply()
                request = await request_for_turn(bus, s, 2)
                asked = await requested_messages(bus, s.keys, request)
    assert request.session == resumed.session_id != call.session_id
    assert asked == [
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": f"{first.text} Sorry, we got cut off."},
        {"role": "user", "content": "What is my name?"},
    ]


async def test_a_reply_cut_off_by_a_failed_session_is_answered_again_on_the_new_one() -> None:
    """The socket drops while the reply is still streaming (its gateway
    died): after the resume greeting the caller gets the whole answer."""
    from actors.providers.scripted import scripted_reply

    s = settings(
        SWITCHBOARD_RESUME_GREETING="Sorry, we got cut off.",
        SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS="100",
    )
    question = "Tell me about the opening hours of every branch you have in the city"
    with trio.fail_after(30):
        async with dev(s) as (url, bus), open_call(url, auth_token=TOKEN) as call:
            await call.prompt(question)
            first = await call.next_message()
            assert isinstance(first, Text) and not first.last
            action = await call.drop()
            assert action is not None and action.relay is not None
            async with call.follow_action() as resumed:
                again = await resumed.reply()
                request = await request_for_turn(bus, s, 2)
                history = await requested_messages(bus, s.keys, request)
    assert history[-1] == {"role": "user", "content": question}
    assert again.text == scripted_reply(history)
    assert request.session == resumed.session_id
