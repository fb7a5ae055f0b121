"""The terminal phone, driven through in-memory stdin/stdout streams against the fake app."""

from __future__ import annotations

from functools import partial

import trio
import trio.testing
from sim_fakeapp import HANDOFF, FakeApp, frames_of_type, serve_fake_app

from switchboard.phone import run_phone

TOKEN = "phone-test-token"
TIMEOUT = 10


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


async def test_phone_talks_presses_keys_and_quits() -> None:
    app = FakeApp(
        token=TOKEN,
        relay_attrs={"welcomeGreeting": "Hi, how can I help?", "dtmfDetection": "true"},
    )
    stdin, phone_in = trio.testing.memory_stream_one_way_pair()
    phone_out, out = trio.testing.memory_stream_one_way_pair()
    screen = Screen(out)
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app), trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(run_phone, app.base_url, auth_token=TOKEN, stdin=phone_in, stdout=phone_out)
            )
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
    stdin, phone_in = trio.testing.memory_stream_one_way_pair()
    phone_out, out = trio.testing.memory_stream_one_way_pair()
    screen = Screen(out)
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    partial(
                        run_phone, app.base_url, auth_token=TOKEN, stdin=phone_in, stdout=phone_out
                    )
                )
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
    stdin, phone_in = trio.testing.memory_stream_one_way_pair()
    phone_out, out = trio.testing.memory_stream_one_way_pair()
    screen = Screen(out)
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    partial(
                        run_phone, app.base_url, auth_token=TOKEN, stdin=phone_in, stdout=phone_out
                    )
                )
                await stdin.send_all(b"goodbye\n")
                # run_phone returns by itself: stdin stays open.
            text = await screen.wait_for("[call over: session ended; next TwiML: Hangup]")
    assert "agent: Bye!\n" in text
    assert f"[agent ended the session with handoff data {HANDOFF}]" in text
    [action] = app.action_params()
    assert (action["SessionStatus"], action["HandoffData"]) == ("ended", HANDOFF)
