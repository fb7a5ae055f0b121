"""The terminal phone behind ``switchboard call``: talk to an agent as a caller would.

Each line typed is one final caller utterance (a ``prompt`` with ``last: true``);
the agent's ``text`` tokens are written out as they arrive. ``/dtmf 1`` presses
keys, ``/quit`` (or end of input) hangs up. The conversation on stdout *is* the
user interface, so it is written there directly; diagnostics go to the log.
"""

from __future__ import annotations

import os
from typing import Final

import structlog
import trio

from gateway.protocol import End, Language, Play, SendDigits, Text
from switchboard.simulator import DTMF_KEYS, SessionClosed, SimulatedCall, open_call

__all__ = ["run_phone"]

log = structlog.get_logger()

HELP: Final = (
    "Type what the caller says and press Enter. "
    "/dtmf 12# presses keys, /quit (or Ctrl-D) hangs up.\n"
)
MAX_LINE: Final = 64 * 1024


class _Lines:
    """Lines from a byte stream (UTF-8, any of \\n or \\r\\n endings)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""
        self._eof = False

    async def readline(self) -> str | None:
        """The next line without its ending; None at end of input."""
        while b"\n" not in self._buffer:
            if self._eof or len(self._buffer) > MAX_LINE:
                break
            chunk = await self._stream.receive_some(4096)
            if not chunk:
                self._eof = True
            self._buffer += chunk
        if not self._buffer:
            return None
        line, _, rest = self._buffer.partition(b"\n")
        self._buffer = rest
        return line.decode("utf-8", errors="replace").rstrip("\r")


class _Screen:
    """The phone's output: text to a byte stream, flushed on every write."""

    def __init__(self, stream: trio.abc.SendStream) -> None:
        self._stream = stream
        self.mid_reply = False
        # Set when the agent's reply to the last prompt has ended (last: true).
        self.reply_done = trio.Event()
        self.reply_done.set()

    async def write(self, text: str) -> None:
        await self._stream.send_all(text.encode())

    async def line(self, text: str) -> None:
        """A whole line, ending any reply being streamed first."""
        if self.mid_reply:
            text = "\n" + text
            self.mid_reply = False
        await self.write(text + "\n")


async def _show_agent(call: SimulatedCall, screen: _Screen) -> None:
    """Write everything the agent sends until the session is over."""
    while True:
        try:
            msg = await call.next_message()
        except SessionClosed:
            return
        match msg:
            case Text():
                if not screen.mid_reply:
                    await screen.write("agent: ")
                    screen.mid_reply = True
                await screen.write(msg.token)
                if msg.last:
                    await screen.write("\n")
                    screen.mid_reply = False
                    screen.reply_done.set()
            case Play():
                await screen.line(f"[agent plays {msg.source}]")
            case SendDigits():
                await screen.line(f"[agent sends digits {msg.digits}]")
            case Language():
                await screen.line(
                    f"[agent switches language: tts={msg.tts_language} "
                    f"transcription={msg.transcription_language}]"
                )
            case End():
                handoff = f" with handoff data {msg.handoff_data}" if msg.handoff_data else ""
                await screen.line(f"[agent ended the session{handoff}]")


REPLY_WAIT_SECONDS: Final = 60.0


async def _talk(call: SimulatedCall, lines: _Lines, screen: _Screen) -> None:
    """Send what the person types until /quit, end of input, or the session ends.

    After each utterance the phone waits for the agent's reply to end before it
    reads the next line, as a caller would; so piped input (a script of lines)
    gets every answer instead of hanging up over them.
    """
    while True:
        with trio.move_on_after(REPLY_WAIT_SECONDS):
            await screen.reply_done.wait()
        line = await lines.readline()
        if line is None:
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/hangup", "/exit"):
            return
        try:
            if text.startswith("/dtmf"):
                keys = text[len("/dtmf") :].strip()
                if not keys or any(key not in DTMF_KEYS for key in keys):
                    await screen.line("[usage: /dtmf followed by keys 0-9 * #]")
                    continue
                if not call.twiml.dtmf_detection:
                    await screen.line('[key not sent: the TwiML has no dtmfDetection="true"]')
                    continue
                # Echo first, so the agent's answer cannot land in front of it.
                await screen.line(f"[pressed {keys}]")
                for key in keys:
                    await call.dtmf(key)
            elif text.startswith("/"):
                await screen.line(f"[unknown command {text.split()[0]}]\n{HELP.rstrip()}")
            else:
                screen.reply_done = trio.Event()
                await call.prompt(text)
        except SessionClosed:
            return


async def _converse(call: SimulatedCall, stdin: trio.abc.ReceiveStream, screen: _Screen) -> None:
    await screen.write(f"Connected: call {call.call_sid}, session {call.session_id}.\n")
    if call.twiml.welcome_greeting:
        await screen.write(f"agent (greeting): {call.twiml.welcome_greeting}\n")
    await screen.write(HELP)
    async with trio.open_nursery() as nursery:

        async def show_then_stop() -> None:
            await _show_agent(call, screen)
            # The session is over: stop waiting for the person's next line.
            nursery.cancel_scope.cancel()

        nursery.start_soon(show_then_stop)
        await _talk(call, _Lines(stdin), screen)
        if not call.finished:
            await call.hangup()
    status = call.session_status or "unknown"
    summary = f"[call over: session {status}"
    if call.action_response is not None and call.action_response.verbs:
        summary += f"; next TwiML: {', '.join(call.action_response.verbs)}"
    await screen.line(summary + "]")


async def run_phone(
    base_url: str,
    *,
    public_url: str | None = None,
    auth_token: str | None = None,
    from_: str = "+15550100",
    to: str = "+15550199",
    stdin: trio.abc.ReceiveStream | None = None,
    stdout: trio.abc.SendStream | None = None,
) -> None:
    """Place a call to the agent at ``base_url`` and talk to it from the terminal.

    ``stdin``/``stdout`` default to the process's own (duplicated file
    descriptors, so closing them leaves the real ones open); tests pass streams.
    """
    own: list[trio.lowlevel.FdStream] = []
    if stdin is None:
        stdin = trio.lowlevel.FdStream(os.dup(0))
        own.append(stdin)
    if stdout is None:
        stdout = trio.lowlevel.FdStream(os.dup(1))
        own.append(stdout)
    screen = _Screen(stdout)
    try:
        async with open_call(
            base_url, public_url=public_url, auth_token=auth_token, from_=from_, to=to
        ) as call:
            await _converse(call, stdin, screen)
    finally:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            for stream in own:
                await stream.aclose()
    log.info("phone_call_over", call_sid=call.call_sid, status=call.session_status)
