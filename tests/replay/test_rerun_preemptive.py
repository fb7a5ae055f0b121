"""A call with preemptive replies replays and re-runs like any other.

Recorded in the dev composition with partial prompts on: one utterance
whose final repeats the interim words (the held reply is adopted), one whose
last word was revised (discarded), and a plain turn. Today's conversation
actor, re-driven with the recorded entries (the settle timer fires where it
armed one), asks for the same replies and says the same.
"""

from __future__ import annotations

import json

import trio

from actors.telemetry import TelemetryActor, TelemetryConfig
from bus.envelope import Envelope, Kind
from bus.memory import MemoryBus
from switchboard.ops.recording import load_call
from switchboard.ops.rerun import format_rerun, rerun
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.testing.procs import TAKEOVER_GUARD_S
from switchboard.twilio import SimulatedCall, open_call


async def _held_request(bus: MemoryBus, stream: str, after: str) -> str:
    """Wait for the conversation's next held request; its entry id."""
    while True:
        for entry in await bus.read(stream, after, count=100, block_ms=1000):
            after = entry.id
            env = Envelope.decode(entry.fields)
            if env.kind == Kind.LLM_REQUEST and env.body.get("held"):
                return after


def _prompt(text: str, *, last: bool) -> str:
    return json.dumps({"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": last})


async def _speak(
    call: SimulatedCall, bus: MemoryBus, stream: str, interim: str, final: str
) -> None:
    after = (await bus.last_id(stream)) or "0"
    await call.send_raw(_prompt(interim, last=False))
    await _held_request(bus, stream, after)  # the speculation started
    await call.send_raw(_prompt(final, last=True))
    await call.reply()


async def test_rerun_of_a_call_with_preemptive_replies_reports_no_difference() -> None:
    settings = Settings.from_env(
        {
            "SWITCHBOARD_PORT": "0",
            "SWITCHBOARD_PARTITIONS": "4",
            "SWITCHBOARD_PARTIAL_PROMPTS": "true",
            # About speculation itself: a loaded test machine must not shed it.
            "SWITCHBOARD_SPECULATION_MAX_LAG_MS": "0",
            "SWITCHBOARD_SILENCE_REPROMPT_S": "0",
            "SWITCHBOARD_WELCOME_GREETING": "Hello.",
        }
    )
    bus = MemoryBus()
    telemetry = TelemetryActor(TelemetryConfig(keys=settings.keys))
    with trio.fail_after(TAKEOVER_GUARD_S):
        async with trio.open_nursery() as nursery:
            port = await start_dev(nursery, settings, bus, telemetry=telemetry)
            async with open_call(f"http://127.0.0.1:{port}") as call:
                stream = settings.keys.llm_for(call.call_sid)
                await _speak(call, bus, stream, "A table for two", "A table for two.")
                await _speak(call, bus, stream, "At eights", "At eight.")
                await call.send_raw(_prompt("Thanks.", last=True))
                await call.reply()
                sid = call.call_sid
            await telemetry.wait_summary(sid)
            nursery.cancel_scope.cancel()
        rec = await load_call(bus, settings.keys, sid)
        report = await rerun(rec, settings.conversation_config())
    assert report.differences == [], format_rerun(report)
    requests = [i.env for i in rec.of_kind(Kind.LLM_REQUEST, source="llm")]
    assert [bool(r.body.get("held")) for r in requests] == [True, True, False, False]
