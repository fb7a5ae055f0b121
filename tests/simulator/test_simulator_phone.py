"""The terminal phone, driven through in-memory stdin/stdout streams.

Against the fake app (instant playback: what the phone shows and sends), and
against the real dev composition (timed playback: typing over the agent).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import trio
import trio.testing
from sim_fakeapp import HANDOFF, FakeApp, frames_of_type, serve_fake_app

from bus.envelope import Envelope, Kind
from bus.memory import MemoryBus
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.testing.procs import HANG_GUARD_S
from switchboard.testing.requests import requested_messages
from switchboard.twilio.phone import run_phone

TOKEN = "phone-test-token"
TIMEOUT = 60  # a hang guard: in-process calls on a loaded machine


class Screen:
    """Reads the phone's stdout, waiting for text to appear (never sleeping)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.text = ""
        self.seen = 0

    async def wait_for(self, needle: str) -> str:
        while needle not in self.text[self.seen :]:
            chunk = await self.stream.receive_some(4096)
            assert chunk, f"stdout closed before {needle!r}; got {self.text!r}"
            self.text += chunk.decode()
        self.seen = self.text.index(needle, self.seen) + len(needle)
        return self.text


@asynccontextmanager
async def phone(
    url: str, *, speech_rate: float | None
) -> AsyncIterator[tuple[trio.abc.SendStream, Screen]]:
    """The phone calling ``url`` in the background: (its stdin, its screen).

    Leaving the block waits for the phone to finish (it hangs up at end of
    input or stops when the session ends); the screen stays readable after.
    """
    stdin, phone_in = trio.testing.memory_stream_one_way_pair()
    phone_out, out = trio.testing.memory_stream_one_way_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(
                run_phone,
                url,
                auth_token=TOKEN,
                stdin=phone_in,
                stdout=phone_out,
                speech_rate=speech_rate,
            )
        )
        yield stdin, Screen(out)


async def test_phone_talks_presses_keys_and_quits() -> None:
    app = FakeApp(
        token=TOKEN,
        relay_attrs={"welcomeGreeting": "Hi, how can I help?", "dtmfDetection": "true"},
    )
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app), phone(app.base_url, speech_rate=None) as (stdin, screen):
            await screen.wait_for("agent (greeting): Hi, how can I help?\n")
            await screen.wait_for("/quit")
            await stdin.send_all(b"hello there\r\n")
            await screen.wait_for("agent: You said: hello there\n")
            await stdin.send_all(b"/dtmf 1\n")
            await screen.wait_for("[pressed 1]\nagent: You pressed 1.\n")
            await stdin.send_all(b"/bogus\n\n")
            await screen.wait_for("[unknown command /bogus]")
            await stdin.send_all(b"/quit\n")
            await screen.wait_for("[call over: session completed; next TwiML: Hangup]\n")
    assert screen.text.startswith("Connected: call CA")
    assert [p["voicePrompt"] for p in frames_of_type(app, "prompt")] == ["hello there"]
    assert [d["digit"] for d in frames_of_type(app, "dtmf")] == ["1"]
    [action] = app.action_params()
    assert action["SessionStatus"] == "completed"
    assert app.close == (1000, "Closing websocket session")


async def test_phone_hangs_up_at_end_of_input() -> None:
    app = FakeApp(token=TOKEN)
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app):
            async with phone(app.base_url, speech_rate=None) as (stdin, screen):
                await stdin.send_all(b"/dtmf 1\n")
                await screen.wait_for('[key not sent: the TwiML has no dtmfDetection="true"]')
                await stdin.send_all(b"one last thing")  # no newline, then end of input
                await stdin.aclose()
            # Hanging up at end of input does not wait for the agent's answer.
            await screen.wait_for("[call over: session completed; next TwiML: Hangup]")
    assert [p["voicePrompt"] for p in frames_of_type(app, "prompt")] == ["one last thing"]
    assert frames_of_type(app, "dtmf") == []
    assert [a["SessionStatus"] for a in app.action_params()] == ["completed"]


async def test_phone_stops_when_the_agent_ends_the_session() -> None:
    app = FakeApp(token=TOKEN)
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app):
            async with phone(app.base_url, speech_rate=None) as (stdin, screen):
                await stdin.send_all(b"goodbye\n")
                # run_phone returns by itself: stdin stays open.
            text = await screen.wait_for("[call over: session ended; next TwiML: Hangup]")
    assert "agent: Bye!\n" in text
    assert f"[agent ended the session with handoff data {HANDOFF}]" in text
    [action] = app.action_params()
    assert (action["SessionStatus"], action["HandoffData"]) == ("ended", HANDOFF)


# --------------------------------------------------------------------------- barge-in


@asynccontextmanager
async def dev(**env: str) -> AsyncIterator[tuple[str, MemoryBus, Settings]]:
    """The dev composition (gateway, conversation, scripted LLM) on a MemoryBus."""
    s = Settings.from_env(
        {
            "TWILIO_AUTH_TOKEN": TOKEN,
            "SWITCHBOARD_PORT": "0",
            "SWITCHBOARD_WELCOME_GREETING": "",
            "SWITCHBOARD_SILENCE_REPROMPT_S": "0",
            **env,
        }
    )
    bus = MemoryBus()
    async with trio.open_nursery() as nursery:
        port = await start_dev(nursery, s, bus)
        yield f"http://127.0.0.1:{port}", bus, s
        nursery.cancel_scope.cancel()


async def llm_request(bus: MemoryBus, s: Settings, turn: int) -> Envelope:
    """The LLM request of ``turn`` (blocking reads of the request stream)."""
    after = "0"
    while True:
        entries = await bus.read(s.keys.llm, after, block_ms=0)
        for entry in entries:
            env = Envelope.decode(entry.fields)
            if env.kind == Kind.LLM_REQUEST and env.turn == turn:
                return env
        after = entries[-1].id


async def heard_in_full(bus: MemoryBus, s: Settings, screen: Screen, sentence: str) -> None:
    """Until the caller has heard ``sentence`` to its end: its ``tokensPlayed``,
    which the simulator reports as Twilio does, on the call's stream."""
    call_sid = screen.text.split("Connected: call ", 1)[1].split(",", 1)[0]
    after = "0"
    while True:
        entries = await bus.read(s.keys.calls_for(call_sid), after, block_ms=0)
        for entry in entries:
            env = Envelope.decode(entry.fields)
            if env.kind == Kind.CALL_INFO and env.body == {
                "type": "info",
                "name": "tokensPlayed",
                "value": sentence,
            }:
                return
        after = entries[-1].id


async def test_typing_over_the_agent_interrupts_it() -> None:
    # Spoken at 5 chars/s, each reply's first sentence takes about ten
    # seconds and its second ("That was message N from you.") over five.
    # Each barge-in comes once the caller has heard the first sentence in
    # full (its tokensPlayed: an event, not a guess at how far the speech
    # got), so it lands in the second however the machine's load delays or
    # bunches the words, and the reply is known to have been heard in part.
    # The greeting cannot be interrupted, so the first line is a plain prompt.
    async with dev(
        SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS="100",
        SWITCHBOARD_WELCOME_GREETING="Hi.",
        SWITCHBOARD_WELCOME_GREETING_INTERRUPTIBLE="false",
    ) as (url, bus, s):
        with trio.fail_after(HANG_GUARD_S):
            async with phone(url, speech_rate=5) as (stdin, screen):
                try:
                    await screen.wait_for("/quit")
                    await stdin.send_all(b"Tell me about your opening hours please\n")
                    await heard_in_full(
                        bus, s, screen, "You said: Tell me about your opening hours please."
                    )
                    await stdin.send_all(b"What about Sundays?\n")
                    await screen.wait_for("[you interrupted after")
                    cut_at = len(screen.text)
                    await heard_in_full(bus, s, screen, "You said: What about Sundays.")
                    second = await llm_request(bus, s, 2)
                    asked = await requested_messages(bus, s.keys, second)
                    # /interrupt cuts the agent off without a word.
                    await stdin.send_all(b"/interrupt\n")
                    await screen.wait_for("[you interrupted after")
                    silenced_at = len(screen.text)
                    await stdin.send_all(b"Thanks\n")
                    await screen.wait_for("agent: You said: Thanks. That was message 3 from you.\n")
                    await stdin.send_all(b"/quit\n")
                finally:
                    print(screen.text)  # shown when the test fails
            # Leaving the block waited for the phone to hang up.
            await screen.wait_for("[call over: session completed")
    after_cut = screen.text[cut_at:]
    # Nothing of a cut reply is printed after its marker.
    assert "message 1" not in after_cut
    assert "message 2" not in screen.text[silenced_at:]
    assert after_cut.count("agent: ") == 2
    # The gateway got the interrupt: turn 2 remembers only what was heard of turn 1.
    full = "You said: Tell me about your opening hours please. That was message 1 from you."
    kept = [m["content"] for m in asked if m["role"] == "assistant"][-1]
    assert isinstance(kept, str) and full.startswith(kept.rstrip()) and len(kept) < len(full)
    # At least the first sentence, heard in full (its final stop aside).
    assert kept.startswith("You said: Tell me about your opening hours please"), kept
    assert asked[-1] == {"role": "user", "content": "What about Sundays?"}


async def test_a_piped_script_hears_the_greeting_and_every_answer() -> None:
    # All of stdin is there before the call starts, then end of input: the
    # first line must not cut the greeting off, and the last answer (the
    # goodbye before end_call) must be shown before the phone hangs up.
    async with dev(
        SWITCHBOARD_WELCOME_GREETING="Hello, this is the demo agent.",
        SWITCHBOARD_TOOLS="end_call",
    ) as (url, _bus, _s):
        with trio.fail_after(HANG_GUARD_S):
            async with phone(url, speech_rate=400) as (stdin, screen):
                # Sent before the phone first runs: all of stdin is already there.
                await stdin.send_all(b"Hello there\nok, goodbye\n")
                await stdin.aclose()
                await screen.wait_for("agent: You said: Hello there.")
                await screen.wait_for("agent: Thanks for calling. Goodbye!")
                text = await screen.wait_for("[call over")
    assert "[you interrupted" not in text


async def test_switchboard_call_cli_takes_a_speech_rate() -> None:
    # The real console entry point, as a process, against the dev composition.
    async with dev() as (url, _bus, _s):
        with trio.fail_after(HANG_GUARD_S):
            done = await trio.run_process(
                [sys.executable, "-m", "switchboard.cli", "call", "--url", url,
                 "--speech-rate", "0"],
                stdin=b"Hello there\n",
                capture_stdout=True,
                capture_stderr=True,
                env={**os.environ, "TWILIO_AUTH_TOKEN": TOKEN, "SWITCHBOARD_LOG_LEVEL": "error"},
                check=False,
            )  # fmt: skip
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert "agent: You said: Hello there. That was message 1 from you." in out
    assert "[call over: session completed" in out
