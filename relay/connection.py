"""The two ends of one ConversationRelay session, as sans-IO state machines.

:class:`RelayConnection` is the app's end (what the gateway holds) and
:class:`TwilioSide` is Twilio's (what the simulator holds). Each is fed the
frames its socket reads and returns the text frames its socket should write;
neither does I/O or reads a clock. As in h11, the protocol state lives here,
in the protocol object, not in the code that drives it.

The app's end of a session moves through four states::

    AWAITING_SETUP --setup received--> OPEN --end sent--> ENDING
          |                              |                  |
          +------------------------------+------------------+--socket closed--> CLOSED

- ``AWAITING_SETUP``: Twilio's first frame must be ``setup``; anything else is
  a :class:`~relay.errors.RemoteProtocolError` (``before_setup``).
- ``OPEN``: frames flow both ways.
- ``ENDING``: we sent ``end``. Twilio closes the session shortly after
  (whatever was still playing), so sending anything more is our mistake: a
  :class:`~relay.errors.LocalProtocolError` (``after_end``). Twilio's frames
  still arrive and are still parsed until the socket closes.
- ``CLOSED``: the socket is gone; nothing more is sent or received.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from relay.codec import (
    CLOSE_MALFORMED,
    DEFAULT_MAX_BYTES,
    MAX_CONSECUTIVE_INVALID,
    REASON_MALFORMED,
    excerpt,
    invalid_message_description,
    parse_inbound,
    parse_outbound,
    serialize,
)
from relay.errors import FrameErrorKind, LocalProtocolError, RemoteProtocolError
from relay.messages import (
    INBOUND_TYPES,
    OUTBOUND_TYPES,
    End,
    Error,
    InboundMessage,
    OutboundMessage,
    Setup,
)

__all__ = ["AppFrameVerdict", "RelayConnection", "SessionState", "TwilioSide"]


class SessionState(StrEnum):
    """Where the app's end of a session is (see the module docstring)."""

    AWAITING_SETUP = "awaiting_setup"
    OPEN = "open"
    ENDING = "ending"
    CLOSED = "closed"


class RelayConnection:
    """The app's side of one ConversationRelay session (what the gateway holds).

    Feed every frame from Twilio to :meth:`receive`; send the strings :meth:`send`
    returns; call :meth:`closed` when the socket is gone. ``setup`` must come
    first and only once. A rejected frame raises :class:`RemoteProtocolError` and
    leaves the connection usable: Twilio's frames are never answered with errors,
    so the caller logs the error and carries on.
    """

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.state = SessionState.AWAITING_SETUP
        self.setup: Setup | None = None
        self.frames_in = 0
        self.errors_in = 0
        self.frames_out = 0

    @property
    def frames_accepted(self) -> int:
        """Frames from Twilio accepted so far (1 after ``setup``)."""
        return self.frames_in - self.errors_in

    def receive(self, frame: str | bytes) -> InboundMessage:
        """Parse one frame from Twilio and check it against the session state."""
        if self.state is SessionState.CLOSED:
            raise LocalProtocolError(FrameErrorKind.AFTER_END, "receive on a closed session")
        self.frames_in += 1
        try:
            msg = parse_inbound(frame, max_bytes=self.max_bytes)
            if isinstance(msg, Setup):
                if self.setup is not None:
                    raise RemoteProtocolError(
                        FrameErrorKind.DUPLICATE_SETUP,
                        "second setup in one session",
                        excerpt(frame),
                    )
                self.setup = msg
                self.state = SessionState.OPEN
            elif self.setup is None:
                raise RemoteProtocolError(
                    FrameErrorKind.BEFORE_SETUP,
                    f"{type(msg).__name__} before setup",
                    excerpt(frame),
                )
        except RemoteProtocolError:
            self.errors_in += 1
            raise
        return msg

    def send(self, msg: OutboundMessage) -> str:
        """The text frame for an app -> Twilio message.

        Raises :class:`LocalProtocolError` for an invalid message, or for any
        message once ``end`` was sent or the socket closed (``after_end``).
        """
        if not isinstance(msg, OUTBOUND_TYPES):
            raise LocalProtocolError(
                FrameErrorKind.UNKNOWN_TYPE, f"the app cannot send {type(msg).__name__}"
            )
        if self.state in (SessionState.ENDING, SessionState.CLOSED):
            raise LocalProtocolError(
                FrameErrorKind.AFTER_END,
                f"{type(msg).__name__} after the session's end ({self.state.value})",
            )
        text = serialize(msg)
        self.frames_out += 1
        if isinstance(msg, End):
            self.state = SessionState.ENDING
        return text

    def closed(self) -> None:
        """The socket is closed (by either side): the session is over."""
        self.state = SessionState.CLOSED


@dataclass(frozen=True, slots=True)
class AppFrameVerdict:
    """What Twilio does with one frame from the app.

    Exactly one of ``message`` (accepted) and ``error`` (rejected) is set. For a
    rejected frame ``reply`` is the ``error`` frame to send back; ``close`` is the
    ``(code, reason)`` to close the socket with, once too many were bad in a row.
    """

    message: OutboundMessage | None = None
    error: RemoteProtocolError | None = None
    reply: str | None = None
    close: tuple[int, str] | None = None


class TwilioSide:
    """Twilio's side of one session (what the simulator holds).

    :meth:`send` serializes Twilio -> app messages (``setup`` first, once);
    :meth:`receive` validates each app frame like Twilio's 64107 check: an invalid
    one is answered with an ``error`` frame and dropped; ``max_consecutive_invalid``
    invalid frames in a row close the socket with 1007. A valid frame resets the run.
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_consecutive_invalid: int = MAX_CONSECUTIVE_INVALID,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_consecutive_invalid = max_consecutive_invalid
        self.setup_sent = False
        self.frames_in = 0
        self.invalid_in = 0
        self.consecutive_invalid = 0
        self.frames_out = 0

    def send(self, msg: InboundMessage) -> str:
        """The text frame for a Twilio -> app message."""
        if not isinstance(msg, INBOUND_TYPES):
            raise LocalProtocolError(
                FrameErrorKind.UNKNOWN_TYPE, f"Twilio does not send {type(msg).__name__}"
            )
        if isinstance(msg, Setup):
            if self.setup_sent:
                raise LocalProtocolError(FrameErrorKind.DUPLICATE_SETUP, "setup already sent")
            self.setup_sent = True
        elif not self.setup_sent:
            raise LocalProtocolError(
                FrameErrorKind.BEFORE_SETUP, f"{type(msg).__name__} before setup"
            )
        text = serialize(msg)
        self.frames_out += 1
        return text

    def receive(self, frame: str | bytes) -> AppFrameVerdict:
        """Validate one frame from the app."""
        self.frames_in += 1
        try:
            msg = parse_outbound(frame, max_bytes=self.max_bytes)
        except RemoteProtocolError as exc:
            self.invalid_in += 1
            self.consecutive_invalid += 1
            close = None
            if self.consecutive_invalid >= self.max_consecutive_invalid:
                close = (CLOSE_MALFORMED, REASON_MALFORMED)
            reply = serialize(Error(invalid_message_description(frame)))
            return AppFrameVerdict(error=exc, reply=reply, close=close)
        self.consecutive_invalid = 0
        return AppFrameVerdict(message=msg)
