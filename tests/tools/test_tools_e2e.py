"""Every tool end to end: a simulated Twilio call against the dev composition.

One process (``start_dev``: gateway and every actor on a MemoryBus), the
real scripted provider (its tool triggers are documented in
``actors/providers/scripted.py``), and the simulator playing Twilio over a
real socket, including the ``<Connect action>`` callback whose TwiML decides
what happens after ``end``. Real sockets, so real time: each test waits for
the frames it expects, bounded by ``fail_after``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import trio

from bus.memory import MemoryBus
from relay import End, Language, SendDigits
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.twilio import SimulatedCall, open_call

TRANSFER_NUMBER = "+15551234567"


@asynccontextmanager
async def dev_call(env: Mapping[str, str]) -> AsyncIterator[SimulatedCall]:
    settings = Settings.from_env({"SWITCHBOARD_PORT": "0", "SWITCHBOARD_PARTITIONS": "4", **env})
    async with trio.open_nursery() as nursery:
        port = await start_dev(nursery, settings, MemoryBus())
        async with open_call(f"http://127.0.0.1:{port}") as call:
            yield call
        nursery.cancel_scope.cancel()


async def test_end_call_says_goodbye_then_hangs_up() -> None:
    with trio.fail_after(30):
        async with dev_call({"SWITCHBOARD_TOOLS": "end_call"}) as call:
            await call.prompt("That's all, goodbye.")
            reply = await call.reply()
            action = await call.wait_ended()
    assert reply.text == "Thanks for calling. Goodbye!"
    ends = [m for m in call.received if isinstance(m, End)]
    assert len(ends) == 1 and json.loads(ends[0].handoff_data or "") == {"reason": "end_call"}
    # The end came after the reply's closing token.
    assert call.received.index(ends[0]) > call.received.index(reply.frames[-1])
    assert call.session_status == "ended"
    assert action is not None and action.verbs == ("Hangup",)


async def test_transfer_ends_with_handoff_and_action_dials_the_number() -> None:
    env = {"SWITCHBOARD_TOOLS": "transfer", "SWITCHBOARD_TRANSFER_NUMBER": TRANSFER_NUMBER}
    with trio.fail_after(30):
        async with dev_call(env) as call:
            await call.prompt("Can I talk to a person?")
            reply = await call.reply()
            action = await call.wait_ended()
    assert reply.text == "Let me transfer you to a person."
    [end] = [m for m in call.received if isinstance(m, End)]
    assert json.loads(end.handoff_data or "") == {"reason": "transfer", "number": TRANSFER_NUMBER}
    assert action is not None and action.verbs == ("Dial",)
    assert f"<Dial>{TRANSFER_NUMBER}</Dial>" in action.xml


async def test_send_digits_reaches_the_line() -> None:
    with trio.fail_after(30):
        async with dev_call({"SWITCHBOARD_TOOLS": "send_digits"}) as call:
            await call.prompt("Please press 4 2 #.")
            first = await call.reply()
            digits = [m for m in call.received if isinstance(m, SendDigits)]
    assert [d.digits for d in digits] == ["42#"]
    assert first.text == "Sending the digits now. Done."


async def test_switch_language_sends_a_language_message() -> None:
    env = {"SWITCHBOARD_TOOLS": "switch_language", "SWITCHBOARD_LANGUAGES": "es-ES"}
    with trio.fail_after(30):
        async with dev_call(env) as call:
            await call.prompt("Can we speak Spanish?")
            reply = await call.reply()
    [language] = [m for m in call.received if isinstance(m, Language)]
    assert language.tts_language == language.transcription_language == "es-ES"
    assert reply.text == "Switching languages. Listo. ¿En qué puedo ayudarle?"


async def test_user_tool_from_the_entry_point_answers_the_caller() -> None:
    with trio.fail_after(30):
        async with dev_call({"SWITCHBOARD_TOOLS": "order_status"}) as call:
            await call.prompt("What is the order status of 1001?")
            reply = await call.reply()
            await call.prompt("Thanks.")
            after = await call.reply()
    assert reply.text == "One moment. Order 1001 shipped yesterday and arrives tomorrow."
    assert after.text.startswith("You said: Thanks")
