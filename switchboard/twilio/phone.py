"""The terminal phone behind ``switchboard call``: talk to an agent as a caller would.

Each line typed is one final caller utterance (a ``prompt`` with ``last: true``);
the agent's ``text`` tokens are written out as they arrive. ``/dtmf 1`` presses
keys, ``/quit`` (or end of input) hangs up. The conversation on stdout *is* the
user interface, so it is written there directly; diagnostics go to the log.

Barge-in: the call speaks the agent's replies at ``speech_rate`` characters per
second (the simulator's :class:`~switchboard.twilio.playback.TimedPlayback`). A line
entered while the agent is talking (its reply still streaming, or still being
spoken) talks over it, as :meth:`SimulatedCall.barge_in` models Twilio: the
queued speech is flushed, ``interrupt`` reports the heard part of the chunk that
was playing, then the line goes as the caller's prompt. The phone prints
``[you interrupted after "..."]`` with that fragment and nothing more of the cut
reply. ``/interrupt`` cuts the agent off without saying anything.

Lines that were already waiting when the last prompt went out (pasted or piped
input, typed ahead) do not interrupt: each waits until the agent has finished
its reply, so a script of lines gets every answer. The greeting plays out
before the first line is read, and at the end of input the phone waits for
the last answer before it hangs up.
"""

from __future__ import annotations

import os
from typing import Final

import structlog
import trio

from relay import End, Language, OutboundMessage, Play, SendDigits, Text, dtmf
from relay.speech import CHARS_PER_SECOND
from switchboard.twilio.call import SimulatedCall
from switchboard.twilio.connect import open_call
from switchboard.twilio.errors import SessionClosed
from switchboard.twilio.playback import TimedPlayback

__all__ = ["run_phone"]

log = structlog.get_logger()

HELP: Final = (
    "Type what the caller says and press Enter; a line typed while the agent talks "
    "interrupts it. /interrupt cuts the agent off without a word, /dtmf 12# presses "
    "keys, /quit (or Ctrl-D) hangs up.\n"
)
MAX_LINE: Final = 64 * 1024
REPLY_WAIT_SECONDS: Final = 60.0


class _Lines:
    """Lines from a byte stream (UTF-8, any of \\n or \\r\\n endings)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""
        self._eof = False

    @property
    def waiting(self) -> bool:
        """A line (or the end of input) is already buffered: it was typed ahead."""
        return b"\n" in self._buffer or self._eof

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
    """The phone's output: text to a byte stream, flushed on every write.

    Writes take a lock: the agent's tokens and the caller's own markers come
    from two tasks, and a stream refuses two concurrent ``send_all`` calls.
    """

    def __init__(self, stream: trio.abc.SendStream) -> None:
        self._stream = stream
        self.lock = trio.Lock()
        self.mid_reply = False
        # Set when the agent's reply to the last prompt has ended (last: true).
        self.reply_done = trio.Event()
        self.reply_done.set()
        # Frames at indexes below this in ``SimulatedCall.received`` belong to a
        # reply the caller cut off: never print them.
        self.fence = 0

    async def write(self, text: str) -> None:
        async with self.lock:
            await self._write(text)

    async def _write(self, text: str) -> None:
        await self._stream.send_all(text.encode())

    async def line(self, text: str) -> None:
        """A whole line, ending any reply being streamed first."""
        async with self.lock:
            await self._line(text)

    async def _line(self, text: str) -> None:
        if self.mid_reply:
            text = "\n" + text
            self.mid_reply = False
        await self._write(text + "\n")


def _agent_talking(call: SimulatedCall, screen: _Screen) -> bool:
    """The agent's reply is still streaming in, or still being spoken."""
    if screen.mid_reply:
        return True
    return isinstance(call.playback, TimedPlayback) and call.playback.active


async def _show_agent(call: SimulatedCall, screen: _Screen) -> None:
    """Write everything the agent sends until the session is over."""
    cursor = 0  # where ``msg`` sits in call.received (the inbox keeps its order)
    while True:
        try:
            msg = await call.next_message()
        except SessionClosed:
            return
        cursor = _index(call.received, msg, cursor)
        async with screen.lock:
            if isinstance(msg, Text) and cursor < screen.fence:
                # Taken from the inbox just before a barge-in flushed the rest.
                cursor += 1
                continue
            cursor += 1
            await _show(msg, screen)


def _index(received: list[OutboundMessage], msg: OutboundMessage, start: int) -> int:
    """Where ``msg`` is in ``received``, searching from ``start`` on."""
    for index in range(start, len(received)):
        if received[index] is msg:
            return index
    return len(received)


async def _show(msg: OutboundMessage, screen: _Screen) -> None:
    """One agent message on screen (the caller holds the screen's lock)."""
    match msg:
        case Text():
            if not screen.mid_reply:
                await screen._write("agent: ")
                screen.mid_reply = True
            await screen._write(msg.token)
            if msg.last:
                await screen._write("\n")
                screen.mid_reply = False
                screen.reply_done.set()
        case Play():
            await screen._line(f"[agent plays {msg.source}]")
        case SendDigits():
            await screen._line(f"[agent sends digits {msg.digits}]")
        case Language():
            await screen._line(
                f"[agent switches language: tts={msg.tts_language} "
                f"transcription={msg.transcription_language}]"
            )
        case End():
            handoff = f" with handoff data {msg.handoff_data}" if msg.handoff_data else ""
            await screen._line(f"[agent ended the session{handoff}]")
        case _:
            pass


async def _wait_agent_done(call: SimulatedCall, screen: _Screen) -> None:
    """Until the agent's reply has arrived in full and been spoken (bounded)."""
    with trio.move_on_after(REPLY_WAIT_SECONDS):
        await screen.reply_done.wait()
        playback = call.playback
        if isinstance(playback, TimedPlayback):
            while playback.active:
                await playback.wait_heard(len(playback.heard) + 1)


async def _barge_in(call: SimulatedCall, screen: _Screen, text: str | None) -> None:
    """Talk over the agent (``text`` None: just cut it off), as Twilio reports it.

    The simulator flushes the speech, sends ``interrupt`` with the heard fragment
    and fences the cut reply's later tokens; the fence here covers the tokens this
    phone already took from the inbox but has not printed yet.
    """
    async with screen.lock:
        # No checkpoint between the fence and the cut: every frame of the cut
        # reply that arrived so far lies below the fence.
        screen.fence = len(call.received)
        if not isinstance(call.playback, TimedPlayback):
            interrupted = False
            if text is not None:
                await call.prompt(text)
        else:
            interrupted = await call.barge_in(text)
        if interrupted:
            heard = call.interrupts[-1].utterance_until_interrupt
            await screen._line(f'[you interrupted after "{heard}"]')
            log.info("phone_barge_in", heard=heard, said=text)
        if text is not None:
            screen.reply_done = trio.Event()
        elif interrupted:
            # Nothing more of the cut reply is coming: the caller may speak.
            screen.reply_done.set()
    if text is None and not interrupted:
        await screen.line("[nothing to interrupt: the agent is not speaking]")


async def _talk(call: SimulatedCall, lines: _Lines, screen: _Screen) -> None:
    """Send what the person types until /quit, end of input, or the session ends.

    A line typed while the agent talks interrupts it. A line that was already
    waiting when the last prompt went out (typed ahead, piped) waits until the
    agent has finished its reply, as a caller would; so a script of lines gets
    every answer instead of talking over them.
    """
    # The greeting plays out before the first line is read: piped input has its
    # first line ready at once, and it must not cut the greeting off.
    await _wait_agent_done(call, screen)
    while True:
        if lines.waiting:
            await _wait_agent_done(call, screen)
        line = await lines.readline()
        if line is None:
            # End of input: hear the answer to the last line before hanging up
            # (the end may only show after that line was read: not "waiting").
            await _wait_agent_done(call, screen)
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/hangup", "/exit"):
            return
        try:
            if text.startswith("/dtmf"):
                keys = text[len("/dtmf") :].strip()
                if not dtmf.is_keys(keys):
                    await screen.line("[usage: /dtmf followed by keys 0-9 * #]")
                    continue
                if not call.twiml.dtmf_detection:
                    await screen.line('[key not sent: the TwiML has no dtmfDetection="true"]')
                    continue
                # Echo first, so the agent's answer cannot land in front of it.
                await screen.line(f"[pressed {keys}]")
                for key in keys:
                    await call.dtmf(key)
            elif text == "/interrupt":
                await _barge_in(call, screen, None)
            elif text.startswith("/"):
                await screen.line(f"[unknown command {text.split()[0]}]\n{HELP.rstrip()}")
            elif _agent_talking(call, screen):
                await _barge_in(call, screen, text)
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
    speech_rate: float | None = CHARS_PER_SECOND,
) -> None:
    """Place a call to the agent at ``base_url`` and talk to it from the terminal.

    ``speech_rate`` (characters per second) is how fast the agent's replies are
    "spoken": what a line typed mid-reply can interrupt, and how much of the
    reply the interrupt reports as heard. None plays everything the moment it
    arrives (no barge-in: lines typed mid-reply go as plain prompts).
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
            base_url,
            public_url=public_url,
            auth_token=auth_token,
            from_=from_,
            to=to,
            playback_rate=speech_rate,
        ) as call:
            await _converse(call, stdin, screen)
    finally:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            for stream in own:
                await stream.aclose()
    log.info("phone_call_over", call_sid=call.call_sid, status=call.session_status)
