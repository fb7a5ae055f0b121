"""What went wrong with a ConversationRelay frame, and whose fault it was.

The split follows h11 and wsproto: a :class:`RemoteProtocolError` means the
peer sent something the protocol does not allow (a bad frame from Twilio to
the gateway, or from the app to the simulator); a :class:`LocalProtocolError`
means our own code tried to do something the protocol does not allow (send an
invalid message, send after ``end``)::

    Exception
     +-- ProtocolError            .kind (FrameErrorKind), .detail, .frame_excerpt
          +-- RemoteProtocolError  the peer sent a bad frame (parse_*, receive)
          +-- LocalProtocolError   we tried to send something invalid (serialize, send)
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["FrameErrorKind", "LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class FrameErrorKind(StrEnum):
    """What was wrong with a frame (or with the moment it was sent)."""

    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    BAD_VALUE = "bad_value"
    BINARY = "binary"
    TOO_LARGE = "too_large"
    BEFORE_SETUP = "before_setup"
    DUPLICATE_SETUP = "duplicate_setup"
    # The session is ending or closed: after ``end`` Twilio closes the socket
    # whatever was still to come, so nothing more may be sent.
    AFTER_END = "after_end"


class ProtocolError(Exception):
    """A ConversationRelay frame or message that breaks the protocol.

    ``kind`` says what broke, ``frame_excerpt`` holds the start of the offending
    frame (at most 200 characters) for logs.
    """

    def __init__(self, kind: FrameErrorKind, detail: str, frame_excerpt: str = "") -> None:
        super().__init__(f"{kind.value}: {detail}")
        self.kind = kind
        self.detail = detail
        self.frame_excerpt = frame_excerpt


class RemoteProtocolError(ProtocolError):
    """The peer sent a bad frame (Twilio to the gateway, or the app to the simulator)."""


class LocalProtocolError(ProtocolError):
    """We tried to send something the protocol does not allow."""
