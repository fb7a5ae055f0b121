"""One relay session from Twilio's side: the reader and the end of the session.

:class:`RelaySession` holds what a session is made of (the WebSocket, the
``setup`` it opened with, the playback model) and the machinery under the
caller's actions: a reader task that validates every app frame like Twilio
does (an invalid one is dropped and answered with an ``error`` frame, 64107;
ten in a row close the socket with 1007), and the end of the session: close
the socket, then POST the signed ``<Connect action>`` callback with
``SessionStatus`` and keep the TwiML it returns.
:class:`~switchboard.twilio.call.SimulatedCall` adds the caller's actions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urljoin

import structlog
import trio
import trio_websocket

from relay import (
    CLOSE_NORMAL,
    REASON_NORMAL,
    End,
    InboundMessage,
    Info,
    Interrupt,
    OutboundMessage,
    RemoteProtocolError,
    Setup,
    Text,
    TwilioSide,
)
from relay.twiml import RelayTwiml, TwimlError, TwimlResponse, parse_twiml
from switchboard.twilio.errors import SessionClosed, SimulatorError
from switchboard.twilio.http import Origin, http_request
from switchboard.twilio.playback import InstantPlayback, TimedPlayback, by_speech, playback_for

log = structlog.get_logger()

CLEANUP_TIMEOUT: Final = 5.0
WEBSOCKET_ENDED: Final = ("64105", "Websocket ended")


@dataclass(frozen=True, slots=True)
class Line:
    """How a call reaches the app: what every session of the call shares."""

    origin: Origin
    public_url: str
    auth_token: str | None
    webhook_params: Mapping[str, str] = field(default_factory=dict)
    max_frame_bytes: int = 0
    playback_rate: float | None = None
    min_chunk: int = 12


class RelaySession:
    """The state and reader of one session; see the module docstring.

    :attr:`received` is every valid app frame in order (:attr:`received_at`
    their arrival times on the trio clock), :attr:`violations` the invalid
    ones. When the session is over, :attr:`session_status` is ``completed``,
    ``ended`` or ``failed`` and :attr:`action_response` holds the TwiML of the
    action callback.
    """

    def __init__(
        self, *, line: Line, twiml: RelayTwiml, setup: Setup, ws: trio_websocket.WebSocketConnection
    ) -> None:
        self.line = line
        self.twiml = twiml
        self.setup = setup
        self.received: list[OutboundMessage] = []
        # Arrival time (trio clock) of each entry of ``received``, same index:
        # latency measurements need the moment the frame came off the socket.
        self.received_at: list[float] = []
        self.violations: list[RemoteProtocolError] = []
        self.playback: InstantPlayback | TimedPlayback = playback_for(
            twiml, line.playback_rate, send_info=self._send_info, min_chunk=line.min_chunk
        )
        # Barge-in window: None, "in_flight" (until a ping round trip shows the
        # app has read the interrupt) or "late" (until the caller speaks again).
        self._window: str | None = None
        self.flushed: list[OutboundMessage] = []
        self.late_tokens: list[str] = []
        self.interrupts: list[Interrupt] = []
        self._arrived = trio.Event()  # set (and replaced) whenever a frame arrives
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.session_status: str | None = None
        self.action_request: dict[str, str] | None = None
        self.action_response: TwimlResponse | None = None
        self.side = TwilioSide(max_bytes=line.max_frame_bytes)
        self._ws = ws
        self._started = trio.current_time()
        self._finishing = False
        self._finished = trio.Event()
        # Unbounded: the reader must never block on a slow test, and one call's
        # frames are few and small.
        self._inbox_send, self._inbox = trio.open_memory_channel[OutboundMessage](math.inf)
        self._log = log.bind(call_sid=setup.call_sid, session_id=setup.session_id, actor="twilio")

    @property
    def call_sid(self) -> str:
        return self.setup.call_sid

    @property
    def session_id(self) -> str:
        return self.setup.session_id

    @property
    def finished(self) -> bool:
        """The session is over and its action callback (if any) has been made."""
        return self._finished.is_set()

    async def _send(self, msg: InboundMessage) -> None:
        await self._send_frame(self.side.send(msg))

    async def _send_frame(self, frame: str) -> None:
        if self._finishing:
            raise SessionClosed(f"session {self.session_id} is over ({self.session_status})")
        try:
            await self._ws.send_message(frame)
        except trio_websocket.ConnectionClosed:
            raise SessionClosed(f"session {self.session_id} closed while sending") from None

    async def _send_info(self, info: Info) -> None:
        """Playback events to the app; a closed session just stops them."""
        with suppress(SessionClosed):
            await self._send(info)

    async def start(self, nursery: trio.Nursery) -> None:
        """Send ``setup``, start the speaker (timed playback) and the reader."""
        await self._ws.send_message(self.side.send(self.setup))
        self._log.info("simulator_setup_sent", to=self.setup.to, from_=self.setup.from_)
        if isinstance(self.playback, TimedPlayback):
            nursery.start_soon(self.playback.run)
        greeting = self.twiml.welcome_greeting
        if greeting:
            self.playback.say(
                greeting,
                interruptible=by_speech(
                    self.twiml.attributes.get("welcomeGreetingInterruptible"), True
                ),
            )
        await self._send_played()
        nursery.start_soon(self._pump)

    async def _send_played(self) -> None:
        """The info events instant playback queued (timed playback sends its own)."""
        if isinstance(self.playback, InstantPlayback):
            for info in self.playback.drain():
                await self._send_info(info)

    async def _pump(self) -> None:
        """Read and validate app frames until the session ends."""
        while True:
            try:
                frame = await self._ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                await self._app_closed(exc)
                return
            verdict = self.side.receive(frame)
            if verdict.error is not None:
                self.violations.append(verdict.error)
                self._log.warning(
                    "simulator_invalid_app_frame",
                    kind=verdict.error.kind.value,
                    excerpt=verdict.error.frame_excerpt,
                    consecutive=self.side.consecutive_invalid,
                )
                if verdict.reply is not None:
                    try:
                        await self._ws.send_message(verdict.reply)
                    except trio_websocket.ConnectionClosed:
                        continue  # the next get_message reports the close
                if verdict.close is not None:
                    code, reason_text = verdict.close
                    await self._finish(code, reason_text, status="failed", error=WEBSOCKET_ENDED)
                    return
                continue
            assert verdict.message is not None
            if await self._arrive(verdict.message):
                return

    async def _app_closed(self, exc: trio_websocket.ConnectionClosed) -> None:
        if self._finishing:
            return
        # The app's side closed or dropped the socket: Twilio fails the session.
        code, reason = getattr(exc.reason, "code", None), getattr(exc.reason, "reason", None)
        self._log.warning("simulator_app_closed", code=code, reason=reason)
        await self._finish(
            None, None, status="failed", error=WEBSOCKET_ENDED, app_close=(code, reason)
        )

    async def _arrive(self, msg: OutboundMessage) -> bool:
        """A valid app frame: record it, then play it (or flush it after a barge-in).
        True when it ended the session."""
        self.received.append(msg)
        self.received_at.append(trio.current_time())
        self._arrived.set()
        self._arrived = trio.Event()
        if self._window is not None and isinstance(msg, Text):
            # Text after a barge-in, before the caller spoke again.
            if self._window == "late":
                self.late_tokens.append(msg.token)
                self._log.warning("simulator_late_token", token=msg.token)
            else:
                self.flushed.append(msg)
            return False
        self.playback.enqueue(msg)
        await self._send_played()
        self._inbox_send.send_nowait(msg)
        if not isinstance(msg, End):
            return False
        await self._finish(
            CLOSE_NORMAL, REASON_NORMAL, status="ended", handoff_data=msg.handoff_data
        )
        return True

    async def _finish(
        self,
        code: int | None,
        reason: str | None,
        *,
        status: str,
        call_status: str = "in-progress",
        handoff_data: str | None = None,
        error: tuple[str, str] | None = None,
        app_close: tuple[int | None, str | None] | None = None,
    ) -> None:
        """Close the socket (unless the app already did), then make the action callback."""
        if self._finishing:
            return
        self._finishing = True
        self.session_status = status
        try:
            with trio.move_on_after(CLEANUP_TIMEOUT) as scope:
                scope.shield = True
                if code is not None:
                    self.close_code, self.close_reason = code, reason
                    await self._ws.aclose(code, reason)
                elif app_close is not None:
                    self.close_code, self.close_reason = app_close
            # Not within the socket's cleanup time: the callback has Twilio's
            # own timeouts and retry (switchboard.twilio.http), and cutting it
            # short lost the TwiML of a resume behind a restarting balancer.
            with trio.CancelScope(shield=True):
                await self._post_action(status, call_status, handoff_data, error)
        finally:
            self._inbox_send.close()
            self._finished.set()
        self._log.info(
            "simulator_session_over",
            status=status,
            close_code=self.close_code,
            violations=len(self.violations),
            frames_in=self.side.frames_in,
        )

    async def _post_action(
        self,
        status: str,
        call_status: str,
        handoff_data: str | None,
        error: tuple[str, str] | None,
    ) -> None:
        if not self.twiml.action:
            return
        params = dict(self.line.webhook_params)
        params.update(
            CallStatus=call_status,
            SessionId=self.session_id,
            SessionStatus=status,
            SessionDuration=str(int(trio.current_time() - self._started)),
        )
        if handoff_data is not None:
            params["HandoffData"] = handoff_data
        if error is not None:
            params["ErrorCode"], params["ErrorMessage"] = error
        url = urljoin(self.line.public_url + "/twiml", self.twiml.action)
        self.action_request = params
        try:
            response = await http_request(
                self.line.origin, self.twiml.action_method, url, params, self.line.auth_token
            )
            self.action_response = parse_twiml(response.text)
        except (SimulatorError, TwimlError, OSError, trio.BrokenResourceError) as exc:
            # Twilio logs a failed callback and ends the call; so do we.
            self._log.warning("simulator_action_failed", url=url, error=str(exc))
