"""ConversationRelay on the wire: JSON text frames to typed messages and back.

No sockets, no clock. :func:`parse_inbound` reads a frame Twilio sent,
:func:`parse_outbound` a frame an app sent (validated as Twilio validates it),
:func:`serialize` writes one frame. ``*_from_wire`` and :func:`to_wire` do the
same for an already decoded JSON object (a bus body carries the wire dict).

This module is the public face and holds Twilio's numbers; the reading rules
live in :mod:`relay.decode`, the writing in :mod:`relay.encode`.

Parsing is tolerant where Twilio's traffic varies (unknown extra keys are ignored,
``durationUntilInterruptMs`` may be a number or a numeric string, absent setup
strings become ``""``) and strict where Twilio itself is strict about what the app
sends (Twilio answers an invalid app message with error 64107). Errors are those
of :mod:`relay.errors`: a bad frame from the peer is a
:class:`~relay.errors.RemoteProtocolError`, an invalid message of ours a
:class:`~relay.errors.LocalProtocolError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from relay.decode import Fields, decode_frame, dict_excerpt, excerpt, inbound, outbound
from relay.encode import serialize, to_wire
from relay.errors import RemoteProtocolError
from relay.messages import InboundMessage, OutboundMessage

__all__ = [
    "CLOSE_MALFORMED",
    "CLOSE_NORMAL",
    "DEFAULT_MAX_BYTES",
    "INVALID_MESSAGE_CODE",
    "MAX_CONSECUTIVE_INVALID",
    "REASON_MALFORMED",
    "REASON_NORMAL",
    "excerpt",
    "inbound_from_wire",
    "invalid_message_description",
    "outbound_from_wire",
    "parse_inbound",
    "parse_outbound",
    "serialize",
    "to_wire",
]

DEFAULT_MAX_BYTES: Final = 64 * 1024

# Twilio's own numbers (research notes §3, §6.2).
INVALID_MESSAGE_CODE: Final = 64107
MAX_CONSECUTIVE_INVALID: Final = 10
CLOSE_NORMAL: Final = 1000
REASON_NORMAL: Final = "Closing websocket session"
CLOSE_MALFORMED: Final = 1007
REASON_MALFORMED: Final = "Too many consecutive malformed messages."


def parse_inbound(frame: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> InboundMessage:
    """Parse one frame Twilio sent. Raises :class:`RemoteProtocolError` only."""
    d = decode_frame(frame, max_bytes)
    return inbound(Fields(d, RemoteProtocolError, excerpt(frame)))


def parse_outbound(frame: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> OutboundMessage:
    """Parse and validate one frame an app sent, as Twilio does (64107 on failure).

    Raises :class:`RemoteProtocolError` only: from the simulator's side the app is
    the remote peer.
    """
    d = decode_frame(frame, max_bytes)
    return outbound(Fields(d, RemoteProtocolError, excerpt(frame)))


def inbound_from_wire(d: Mapping[str, Any]) -> InboundMessage:
    """Rebuild a Twilio -> app message from its decoded wire dict (e.g. a bus body)."""
    return inbound(Fields(d, RemoteProtocolError, dict_excerpt(d)))


def outbound_from_wire(d: Mapping[str, Any]) -> OutboundMessage:
    """Rebuild and validate an app -> Twilio message from its wire dict (e.g. the
    ``frame`` of a ``gateway.send`` body). Raises :class:`RemoteProtocolError`."""
    return outbound(Fields(d, RemoteProtocolError, dict_excerpt(d)))


def invalid_message_description(frame: str | bytes) -> str:
    """The ``error`` description Twilio sends for an invalid app frame (observed text)."""
    text = frame if isinstance(frame, str) else bytes(frame).decode("utf-8", errors="replace")
    return f"Invalid message received, code: {INVALID_MESSAGE_CODE}, {text}"
