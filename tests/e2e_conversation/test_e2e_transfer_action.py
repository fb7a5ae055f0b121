"""End to end in the dev composition: tools reach the caller, and /action acts on them.

Gateway, conversation, LLM (scripted provider, which calls tools from the
caller's words) and telemetry run in this process on a MemoryBus; the caller
is the simulator with timed playback, so ``end`` must wait for the goodbye to
be spoken (``after_speech``).
"""

from __future__ import annotations

import json

import trio
import trio.testing

from bus.memory import MemoryBus
from relay import End, Text
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.twilio import SimulatedCall, TimedPlayback, open_call

TOKEN = "e2e-transfer-token"


async def greeting_over(call: SimulatedCall) -> None:
    """Until the greeting was spoken and its agentSpeaking off sent and read."""
    assert isinstance(call.playback, TimedPlayback)
    await call.playback.wait_heard(1)
    await trio.testing.wait_all_tasks_blocked()


def _settings() -> Settings:
    return Settings.from_env(
        {
            "TWILIO_AUTH_TOKEN": TOKEN,
            "SWITCHBOARD_PORT": "0",
            "SWITCHBOARD_PARTITIONS": "2",
            "SWITCHBOARD_TOOLS": "end_call,transfer",
            "SWITCHBOARD_TRANSFER_NUMBER": "+15551234567",
            "SWITCHBOARD_WELCOME_GREETING": "Hi.",
            "SWITCHBOARD_DEBUG": "speaker-events tokens-played",
        }
    )


async def test_transfer_ends_after_speech_and_action_dials() -> None:
    settings = _settings()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await start_dev(nursery, settings, MemoryBus())
            async with open_call(
                f"http://127.0.0.1:{port}", auth_token=TOKEN, playback_rate=400
            ) as call:
                # The caller speaks once the greeting has been played, as a
                # person does: its agentSpeaking on/off reach the gateway
                # before the prompt, not after the reply (a busy machine).
                await greeting_over(call)
                await call.prompt("Please transfer me to a person.")
                action = await call.wait_ended()
            nursery.cancel_scope.cancel()
    assert call.session_status == "ended"
    assert isinstance(call.received[-1], End)
    handoff = json.loads(call.received[-1].handoff_data or "{}")
    assert handoff == {"reason": "transfer", "number": "+15551234567"}
    assert action is not None and action.verbs == ("Dial",)
    assert "<Dial>+15551234567</Dial>" in action.xml
    # Everything sent before the end was spoken before the end went out.
    spoken = "".join(m.token for m in call.received if isinstance(m, Text))
    assert isinstance(call.playback, TimedPlayback)
    heard = " ".join(call.playback.heard)
    assert heard.replace(" ", "") == ("Hi." + spoken).replace(" ", "")


async def test_end_call_says_goodbye_then_hangs_up() -> None:
    settings = _settings()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await start_dev(nursery, settings, MemoryBus())
            async with open_call(
                f"http://127.0.0.1:{port}", auth_token=TOKEN, playback_rate=400
            ) as call:
                await greeting_over(call)
                await call.prompt("Thanks, goodbye.")
                action = await call.wait_ended()
            nursery.cancel_scope.cancel()
    assert call.session_status == "ended"
    end = call.received[-1]
    assert isinstance(end, End) and json.loads(end.handoff_data or "{}") == {"reason": "end_call"}
    assert any(isinstance(m, Text) and m.token.strip() for m in call.received)
    assert action is not None and action.verbs == ("Hangup",)
