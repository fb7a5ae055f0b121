"""A call in progress from Twilio's side: what the caller does and hears.

:class:`SimulatedCall` is a :class:`~switchboard.twilio.session.RelaySession`
plus the caller's actions. :meth:`SimulatedCall.barge_in` interrupts as
Twilio does: flush the queue, ``tokensPlayed`` for the heard part of the
current chunk, ``interrupt`` with that chunk-scoped fragment and its elapsed
ms, then the caller's words. Text that arrives after the interrupt and before
the caller's next prompt is a violation of turn fencing and is recorded in
``late_tokens`` (frames the app wrote before it could have read the
interrupt — those that arrive before a ping/pong round trip — are flushed
silently, as Twilio does).

Session changes: :meth:`SimulatedCall.drop` fails the session as a broken
socket does (action ``SessionStatus=failed``, 64105) and returns the action
TwiML; when that TwiML (or the one after ``end``) starts a fresh
``<Connect><ConversationRelay>``, :meth:`SimulatedCall.follow_action` opens the
new session: new ``VX`` id, ``callStatus`` ``IN_PROGRESS``, same callSid,
``customParameters`` from its ``<Parameter>`` children.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from typing import Final

import trio
import trio_websocket

from relay import (
    CLOSE_NORMAL,
    REASON_NORMAL,
    Dtmf,
    Info,
    Interrupt,
    OutboundMessage,
    Prompt,
    Text,
    dtmf,
    to_wire,
)
from relay.twiml import TwimlError, TwimlResponse
from switchboard.twilio.errors import SessionClosed, SimulatorError
from switchboard.twilio.playback import TimedPlayback
from switchboard.twilio.reply import Reply
from switchboard.twilio.session import CLEANUP_TIMEOUT, WEBSOCKET_ENDED, RelaySession

CLOSE_INTERNAL_ERROR: Final = 1011  # how drop() breaks the socket (anything but 1000)


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits (``CA…``, ``VX…``)."""
    return prefix + secrets.token_hex(16)


class SimulatedCall(RelaySession):
    """One call in progress, from Twilio's side. Made by :func:`open_call`.

    Caller actions: :meth:`prompt`, :meth:`dtmf`, :meth:`barge_in`,
    :meth:`interrupt` (a bare interrupt frame), :meth:`hangup`, :meth:`drop`.
    App output: :attr:`received` (every valid frame, in order), :meth:`reply`,
    :meth:`next_message`. Protocol violations by the app are in :attr:`violations`;
    text of an interrupted reply that arrived after the interrupt is in
    :attr:`late_tokens`. :attr:`playback` is the playback model.
    When the session is over, :attr:`session_status` is ``completed``, ``ended`` or
    ``failed`` and :attr:`action_response` holds the TwiML of the action callback.
    """

    # -- caller -> app

    async def prompt(self, text: str, *, lang: str = "en-US", partials: bool = False) -> None:
        """The caller says ``text``. With ``partials``, interim prompts carrying the
        cumulative words so far (``last: false``) come first, as with ``partialPrompts``."""
        self._window = None
        if partials:
            words = text.split()
            for n in range(1, len(words)):
                await self._send(Prompt(" ".join(words[:n]), lang, False))
        await self._send(Prompt(text, lang, True))

    async def dtmf(self, digit: str) -> bool:
        """The caller presses one key. Twilio only reports key presses when the TwiML
        sets ``dtmfDetection="true"``; otherwise nothing is sent and this returns False."""
        if not dtmf.is_key(digit):
            raise ValueError(f"not a phone key: {digit!r}")
        if not self.twiml.dtmf_detection:
            return False
        self._window = None
        await self._send(Dtmf(digit))
        return True

    async def interrupt(
        self,
        utterance_until_interrupt: str = "",
        duration_until_interrupt_ms: float = 0.0,
        *,
        duration_as_string: bool = False,
    ) -> None:
        """The caller barges in. ``duration_as_string`` sends the duration the way an
        older Twilio revision did (``"460"``), to exercise tolerant parsers."""
        self.playback.flush()
        msg = Interrupt(utterance_until_interrupt, duration_until_interrupt_ms)
        frame = self.side.send(msg)
        if duration_as_string:
            wire = to_wire(msg)
            wire["durationUntilInterruptMs"] = str(wire["durationUntilInterruptMs"])
            frame = _json(wire)
        await self._send_frame(frame)

    async def barge_in(self, text: str | None = None, *, lang: str = "en-US") -> bool:
        """The caller talks over the agent, as Twilio reports it.

        If something is playing and may be interrupted by speech: the queue is
        flushed (unread text frames of the reply leave the inbox too),
        ``info tokensPlayed`` reports the heard part of the current chunk (when
        subscribed), then ``interrupt`` with that fragment and the chunk's
        elapsed ms. Then ``text`` (if given) is sent as the caller's prompt;
        without it, text arriving before the next :meth:`prompt` lands in
        :attr:`late_tokens`. Returns whether an interrupt was sent (False when
        nothing was playing or it was not interruptible: only the prompt goes).
        Needs timed playback (``open_call(playback_rate=...)``).
        """
        if not isinstance(self.playback, TimedPlayback):
            raise SimulatorError("barge_in needs timed playback (open_call(playback_rate=...))")
        cut = self.playback.cut()
        if cut is not None:
            fragment, elapsed_ms = cut
            self._drain_inbox_text()
            self._window = "in_flight"
            if fragment and self.playback.tokens_played:
                await self._send(Info("tokensPlayed", fragment))
            msg = Interrupt(fragment, elapsed_ms)
            self.interrupts.append(msg)
            await self._send(msg)
            self._log.info("simulator_barge_in", heard=fragment, elapsed_ms=elapsed_ms)
            # Frames the app wrote before it read the interrupt are still on the
            # wire; a ping round trip lets them arrive (flushed, as Twilio does).
            with suppress(trio_websocket.ConnectionClosed):
                await self._ws.ping()
            if self._window == "in_flight":
                self._window = "late"
        if text is not None:
            await self.prompt(text, lang=lang)
        return cut is not None

    def _drain_inbox_text(self) -> None:
        """Take unread text frames out of the inbox (the caller will never hear
        them); other unread frames keep their order."""
        kept: list[OutboundMessage] = []
        while True:
            try:
                msg = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if isinstance(msg, Text):
                self.flushed.append(msg)
            else:
                kept.append(msg)
        for msg in kept:
            self._inbox_send.send_nowait(msg)

    async def drop(self, *, error: tuple[str, str] = WEBSOCKET_ENDED) -> TwimlResponse | None:
        """The session fails (no 1000 close): the action callback reports it
        ``failed`` with ``error`` (``ErrorCode``, ``ErrorMessage``): by default
        64105, the socket dropped; Twilio reports a provider setting it cannot
        use, say, as 64106 the same way. Returns the action's TwiML (e.g. a
        fresh relay to resume)."""
        if not self._finishing:
            await self._finish(
                CLOSE_INTERNAL_ERROR,
                "connection lost",
                status="failed",
                call_status="in-progress",
                error=error,
            )
        await self._finished.wait()
        return self.action_response

    @asynccontextmanager
    async def follow_action(self) -> AsyncIterator[SimulatedCall]:
        """Start the session the action TwiML asks for (a fresh ``<Connect>
        <ConversationRelay>``): new session id, ``callStatus`` ``IN_PROGRESS``,
        the same callSid and playback settings. Waits for this session to end."""
        await self._finished.wait()
        document = self.action_response
        if document is None or document.relay is None:
            verbs = document.verbs if document is not None else ()
            raise TwimlError(f"the action TwiML starts no ConversationRelay: {verbs}")
        setup = replace(
            self.setup,
            session_id=new_sid("VX"),
            call_status="IN_PROGRESS",
            custom_parameters=document.relay.parameters,
        )
        # connect.py opens sessions and builds calls: imported here, not at the top.
        from switchboard.twilio.connect import open_session

        params = dict(self.line.webhook_params, CallStatus="in-progress")
        line = replace(self.line, webhook_params=params)
        async with open_session(line, document.relay, setup) as call:
            yield call

    async def send_raw(self, frame: str) -> None:
        """Send any text frame as Twilio (for tests of the app's error handling)."""
        await self._send_frame(frame)

    async def hangup(self) -> TwimlResponse | None:
        """The caller hangs up: close 1000, then the action callback with
        ``SessionStatus=completed``. Returns the action's TwiML (moot, the call is over)."""
        if not self._finishing:
            await self._finish(
                CLOSE_NORMAL, REASON_NORMAL, status="completed", call_status="completed"
            )
        await self._finished.wait()
        return self.action_response

    # -- app -> caller

    async def next_message(self) -> OutboundMessage:
        """The next valid frame from the app; :class:`SessionClosed` once the session
        is over and everything has been taken."""
        try:
            return await self._inbox.receive()
        except trio.EndOfChannel:
            raise SessionClosed(
                f"session {self.session_id} is over ({self.session_status})"
            ) from None

    async def reply(self, *, on_token: Callable[[Text], Awaitable[None]] | None = None) -> Reply:
        """Collect ``text`` frames until one has ``last: true``. Other messages are
        skipped here (they stay in :attr:`received`). ``on_token`` sees each frame as
        it arrives. Raises :class:`SessionClosed` if the session ends first."""
        frames: list[Text] = []
        while True:
            try:
                msg = await self.next_message()
            except SessionClosed as exc:
                raise SessionClosed(str(exc), partial=Reply(tuple(frames))) from None
            if not isinstance(msg, Text):
                continue
            frames.append(msg)
            if on_token is not None:
                await on_token(msg)
            if msg.last:
                return Reply(tuple(frames))

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, checking it after every app frame
        (e.g. ``lambda: call.late_tokens``). Returns at once if the session is over."""
        while not predicate() and not self._finished.is_set():
            arrived = self._arrived
            with trio.move_on_after(CLEANUP_TIMEOUT):
                await arrived.wait()

    async def wait_ended(self) -> TwimlResponse | None:
        """Wait until the session is over; the action callback's TwiML, if any."""
        await self._finished.wait()
        return self.action_response

    # -- machinery


def _json(d: dict[str, object]) -> str:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)
