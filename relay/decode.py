"""Reading ConversationRelay frames: JSON text to typed messages, validated.

The parsing half of :mod:`relay.codec` (which is the public face): the frame
checks (text, size, JSON object), :class:`Fields` for typed access to one
decoded message, and the two readers, :func:`inbound` for what Twilio sends
(tolerant where Twilio's traffic varies) and :func:`outbound` for what an app
sends (strict, as Twilio is). The error class is the caller's choice, so the
same rules reject a peer's frame (``RemoteProtocolError``) and our own message
(``LocalProtocolError``, from :mod:`relay.encode`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from relay import dtmf
from relay.errors import FrameErrorKind, ProtocolError, RemoteProtocolError
from relay.messages import (
    Dtmf,
    End,
    Error,
    InboundMessage,
    Info,
    Interrupt,
    Language,
    OutboundMessage,
    Play,
    Prompt,
    SendDigits,
    Setup,
    Text,
)

__all__ = [
    "EXCERPT_CHARS",
    "MAX_DURATION_MS",
    "MAX_SID_CHARS",
    "SETUP_STRINGS",
    "Fields",
    "decode_frame",
    "dict_excerpt",
    "excerpt",
    "inbound",
    "outbound",
]

EXCERPT_CHARS: Final = 200
# A callSid or sessionId names bus keys and log lines: Twilio's are 34
# characters (two letters, 32 hex digits); anything empty or far longer is not one.
MAX_SID_CHARS: Final = 64
# ``durationUntilInterruptMs`` above this (Twilio's longest call is 4 hours)
# is not a duration of speech.
MAX_DURATION_MS: Final = 24 * 3600 * 1000.0


# snake_case attribute -> Twilio's wire name, for the flat string fields of setup.
SETUP_STRINGS: Final = (
    ("account_sid", "accountSid"),
    ("parent_call_sid", "parentCallSid"),
    ("from_", "from"),
    ("to", "to"),
    ("forwarded_from", "forwardedFrom"),
    ("caller_name", "callerName"),
    ("direction", "direction"),
    ("call_type", "callType"),
    ("call_status", "callStatus"),
)


def excerpt(frame: str | bytes) -> str:
    """The start of a frame, for logs and errors."""
    if isinstance(frame, bytes):
        return frame[:EXCERPT_CHARS].decode("utf-8", errors="replace")
    return frame[:EXCERPT_CHARS]


def decode_frame(frame: str | bytes, max_bytes: int) -> dict[str, Any]:
    """Text frame -> JSON object, or RemoteProtocolError."""
    if isinstance(frame, bytes | bytearray | memoryview):
        raise RemoteProtocolError(
            FrameErrorKind.BINARY,
            "binary frame; ConversationRelay uses text frames",
            excerpt(bytes(frame)),
        )
    # A str of n chars is at most 4n UTF-8 bytes; only count when it could matter.
    size = (
        len(frame) if len(frame) * 4 <= max_bytes else len(frame.encode("utf-8", "surrogatepass"))
    )
    if size > max_bytes:
        raise RemoteProtocolError(
            FrameErrorKind.TOO_LARGE, f"frame of {size} bytes exceeds {max_bytes}", excerpt(frame)
        )
    try:
        decoded = json.loads(frame)
    except (ValueError, RecursionError) as exc:
        # RecursionError: deeply nested arrays from a hostile peer.
        raise RemoteProtocolError(FrameErrorKind.NOT_JSON, str(exc), excerpt(frame)) from None
    if not isinstance(decoded, dict):
        raise RemoteProtocolError(
            FrameErrorKind.NOT_OBJECT,
            f"JSON {type(decoded).__name__}, not an object",
            excerpt(frame),
        )
    return decoded


class Fields:
    """Typed access to the fields of one decoded message, raising a chosen error class."""

    __slots__ = ("d", "err", "excerpt", "type")

    def __init__(self, d: Mapping[str, Any], err: type[ProtocolError], excerpt: str) -> None:
        self.d = d
        self.err = err
        self.excerpt = excerpt
        self.type = d.get("type")

    def fail(self, kind: FrameErrorKind, detail: str) -> ProtocolError:
        return self.err(kind, f"{self.type}: {detail}", self.excerpt)

    def text(self, key: str, value: str) -> str:
        """``value`` if it is valid Unicode text (a JSON ``\\ud800`` escape decodes to
        a lone surrogate, which no UTF-8 writer downstream accepts)."""
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                detail = f"{key!r} holds a lone surrogate"
                raise self.fail(FrameErrorKind.BAD_VALUE, detail) from None
        return value

    def str_(self, key: str, *, required: bool = False, default: str = "") -> str:
        value = self.d.get(key)
        if value is None:
            if required:
                raise self.fail(FrameErrorKind.MISSING_FIELD, f"{key!r} is required")
            return default
        if not isinstance(value, str):
            raise self.fail(FrameErrorKind.WRONG_TYPE, f"{key!r} must be a string")
        return self.text(key, value)

    def sid(self, key: str) -> str:
        """A required, non-empty Twilio SID of reasonable length."""
        value = self.str_(key, required=True)
        if not value or len(value) > MAX_SID_CHARS or not value.isprintable() or " " in value:
            raise self.fail(
                FrameErrorKind.BAD_VALUE,
                f"{key!r} must be 1 to {MAX_SID_CHARS} printable characters without spaces",
            )
        return value

    def opt_str(self, key: str) -> str | None:
        return self.str_(key) if self.d.get(key) is not None else None

    def bool_(self, key: str, default: bool) -> bool:
        value = self.opt_bool(key)
        return default if value is None else value

    def opt_bool(self, key: str) -> bool | None:
        value = self.d.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self.fail(FrameErrorKind.WRONG_TYPE, f"{key!r} must be a boolean")
        return value

    def opt_int(self, key: str) -> int | None:
        value = self.d.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(FrameErrorKind.WRONG_TYPE, f"{key!r} must be an integer")
        return value

    def number(self, key: str, default: float, *, maximum: float = math.inf) -> float:
        """A number in ``[0, maximum]``, tolerating Twilio's older string encoding (``"460"``)."""
        value = self.d.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            raise self.fail(FrameErrorKind.WRONG_TYPE, f"{key!r} must be a number")
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise self.fail(FrameErrorKind.BAD_VALUE, f"{key!r} is not numeric") from None
        else:
            raise self.fail(FrameErrorKind.WRONG_TYPE, f"{key!r} must be a number")
        if not math.isfinite(number):
            raise self.fail(FrameErrorKind.BAD_VALUE, f"{key!r} must be finite")
        if not 0 <= number <= maximum:
            raise self.fail(FrameErrorKind.BAD_VALUE, f"{key!r} must be within 0..{maximum:g}")
        return number

    def str_map(self, key: str) -> dict[str, str]:
        value = self.d.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self.fail(FrameErrorKind.WRONG_TYPE, f"{key!r} must be an object of strings")
        return {self.text(key, k): self.text(key, v) for k, v in value.items()}


def inbound(f: Fields) -> InboundMessage:
    match f.type:
        case "setup":
            strings = {attr: f.str_(wire) for attr, wire in SETUP_STRINGS}
            return Setup(
                session_id=f.sid("sessionId"),
                call_sid=f.sid("callSid"),
                custom_parameters=f.str_map("customParameters"),
                **strings,
            )
        case "prompt":
            # Twilio always sends lang and last; a missing last means a final prompt.
            return Prompt(
                voice_prompt=f.str_("voicePrompt", required=True),
                lang=f.str_("lang"),
                last=f.bool_("last", True),
            )
        case "dtmf":
            return Dtmf(digit=f.str_("digit", required=True))
        case "interrupt":
            # An interrupt is worth acting on even with fields missing: fence the turn.
            return Interrupt(
                utterance_until_interrupt=f.str_("utteranceUntilInterrupt"),
                duration_until_interrupt_ms=f.number(
                    "durationUntilInterruptMs", 0.0, maximum=MAX_DURATION_MS
                ),
            )
        case "error":
            return Error(description=f.str_("description", required=True))
        case "info":
            value = f.d.get("value")
            if value is not None and not isinstance(value, str):
                value = json.dumps(value, separators=(",", ":"))
            value = f.text("value", value) if value else ""
            return Info(name=f.str_("name", required=True), value=value)
        case str():
            raise f.fail(FrameErrorKind.UNKNOWN_TYPE, "unknown message type")
        case None:
            raise f.fail(FrameErrorKind.MISSING_FIELD, "'type' is required")
        case _:
            raise f.fail(FrameErrorKind.WRONG_TYPE, "'type' must be a string")


def outbound(f: Fields) -> OutboundMessage:
    match f.type:
        case "text":
            return Text(
                token=f.str_("token", required=True),
                last=f.bool_("last", False),
                lang=f.opt_str("lang"),
                interruptible=f.opt_bool("interruptible"),
                preemptible=f.opt_bool("preemptible"),
            )
        case "play":
            source = f.str_("source", required=True)
            parts = urlsplit(source)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise f.fail(FrameErrorKind.BAD_VALUE, "'source' must be an http(s) URL")
            loop = f.opt_int("loop")
            if loop is not None and loop < 0:
                raise f.fail(FrameErrorKind.BAD_VALUE, "'loop' must be >= 0")
            return Play(
                source=source,
                loop=loop,
                preemptible=f.opt_bool("preemptible"),
                interruptible=f.opt_bool("interruptible"),
            )
        case "sendDigits":
            digits = f.str_("digits", required=True)
            if not dtmf.is_send_digits(digits):
                raise f.fail(FrameErrorKind.BAD_VALUE, "'digits' may hold only 0-9, w, # and *")
            return SendDigits(digits=digits)
        case "language":
            tts = f.opt_str("ttsLanguage")
            stt = f.opt_str("transcriptionLanguage")
            if not tts and not stt:
                raise f.fail(
                    FrameErrorKind.MISSING_FIELD,
                    "one of 'ttsLanguage' or 'transcriptionLanguage' is required",
                )
            return Language(tts_language=tts or None, transcription_language=stt or None)
        case "end":
            return End(handoff_data=f.opt_str("handoffData"))
        case str():
            raise f.fail(FrameErrorKind.UNKNOWN_TYPE, "unknown message type")
        case None:
            raise f.fail(FrameErrorKind.MISSING_FIELD, "'type' is required")
        case _:
            raise f.fail(FrameErrorKind.WRONG_TYPE, "'type' must be a string")


def dict_excerpt(d: Mapping[str, Any]) -> str:
    try:
        return json.dumps(d, separators=(",", ":"), default=repr)[:EXCERPT_CHARS]
    except (TypeError, ValueError):
        return repr(d)[:EXCERPT_CHARS]
