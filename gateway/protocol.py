"""Twilio ConversationRelay, sans-IO: frames in, typed messages out, text to send back.

No sockets, no clock. The gateway feeds every WebSocket text frame Twilio sends to
a :class:`RelayConnection` and sends the strings it returns; the Twilio-side
simulator does the mirror image with :class:`TwilioSide`. The shape follows h11
and wsproto: one frozen dataclass per message, a connection object that enforces
ordering, and two error classes that say whose fault a bad frame was.

Messages (field names are Twilio's wire names in camelCase; ours are snake_case):

- Twilio -> app (:data:`InboundMessage`): :class:`Setup`, :class:`Prompt`,
  :class:`Dtmf`, :class:`Interrupt`, :class:`Error`, :class:`Info`.
- app -> Twilio (:data:`OutboundMessage`): :class:`Text`, :class:`Play`,
  :class:`SendDigits`, :class:`Language`, :class:`End`.

Parsing is tolerant where Twilio's traffic varies (unknown extra keys are ignored,
``durationUntilInterruptMs`` may be a number or a numeric string, absent setup
strings become ``""``) and strict where Twilio itself is strict about what the app
sends (Twilio answers an invalid app message with error 64107).

Errors::

    Exception
     +-- ProtocolError            .kind (FrameErrorKind), .frame_excerpt
          +-- RemoteProtocolError  the peer sent a bad frame (parse_*, receive)
          +-- LocalProtocolError   we tried to send something invalid (serialize, send)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

__all__ = [
    "CLOSE_MALFORMED",
    "CLOSE_NORMAL",
    "DEFAULT_MAX_BYTES",
    "INVALID_MESSAGE_CODE",
    "MAX_CONSECUTIVE_INVALID",
    "REASON_MALFORMED",
    "REASON_NORMAL",
    "AppFrameVerdict",
    "Dtmf",
    "End",
    "Error",
    "FrameErrorKind",
    "InboundMessage",
    "Info",
    "Interrupt",
    "Language",
    "LocalProtocolError",
    "OutboundMessage",
    "Play",
    "Prompt",
    "ProtocolError",
    "RelayConnection",
    "RemoteProtocolError",
    "SendDigits",
    "Setup",
    "Text",
    "TwilioSide",
    "inbound_from_wire",
    "invalid_message_description",
    "outbound_from_wire",
    "parse_inbound",
    "parse_outbound",
    "serialize",
    "to_wire",
]

DEFAULT_MAX_BYTES: Final = 64 * 1024
EXCERPT_CHARS: Final = 200

# Twilio's own numbers (research notes §3, §6.2).
INVALID_MESSAGE_CODE: Final = 64107
MAX_CONSECUTIVE_INVALID: Final = 10
CLOSE_NORMAL: Final = 1000
REASON_NORMAL: Final = "Closing websocket session"
CLOSE_MALFORMED: Final = 1007
REASON_MALFORMED: Final = "Too many consecutive malformed messages."

_DIGITS_RE: Final = re.compile(r"[0-9w#*]+")


class FrameErrorKind(StrEnum):
    """What was wrong with a frame."""

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


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Setup:
    """First message of every session. A new ``session_id`` per session; ``call_sid``
    stays the same across sessions of one call."""

    session_id: str
    call_sid: str
    account_sid: str = ""
    parent_call_sid: str = ""
    from_: str = ""
    to: str = ""
    forwarded_from: str = ""
    caller_name: str = ""
    direction: str = ""
    call_type: str = ""
    call_status: str = ""
    # Excluded from the hash: a mapping is not hashable; frozen as a read-only view.
    custom_parameters: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "custom_parameters", MappingProxyType(dict(self.custom_parameters))
        )


@dataclass(frozen=True, slots=True)
class Prompt:
    """Caller speech. ``last=False`` frames are interim and carry the whole utterance
    so far; the ``last=True`` frame repeats the final text."""

    voice_prompt: str
    lang: str
    last: bool


@dataclass(frozen=True, slots=True)
class Dtmf:
    """One key press."""

    digit: str


@dataclass(frozen=True, slots=True)
class Interrupt:
    """The caller barged in. ``utterance_until_interrupt`` is the agent text heard of
    the chunk that was playing (not necessarily a prefix of the whole reply)."""

    utterance_until_interrupt: str
    duration_until_interrupt_ms: float


@dataclass(frozen=True, slots=True)
class Error:
    """Twilio reports a problem (e.g. ``Invalid message received, code: 64107, ...``)."""

    description: str


@dataclass(frozen=True, slots=True)
class Info:
    """Optional event stream (``agentSpeaking``, ``clientSpeaking``, ``tokensPlayed``...).
    Non-string values on the wire are kept as their compact JSON text."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Text:
    """Text to speak. Keep the token's spaces; end every reply with ``last=True``."""

    token: str
    last: bool = False
    lang: str | None = None
    interruptible: bool | None = None
    preemptible: bool | None = None


@dataclass(frozen=True, slots=True)
class Play:
    """Play an audio URL; ``loop=0`` means 1000 times."""

    source: str
    loop: int | None = None
    preemptible: bool | None = None
    interruptible: bool | None = None


@dataclass(frozen=True, slots=True)
class SendDigits:
    """DTMF tones to the far end: ``0-9``, ``#``, ``*``, ``w`` (half-second pause)."""

    digits: str


@dataclass(frozen=True, slots=True)
class Language:
    """Switch TTS and/or STT language; at least one must be given."""

    tts_language: str | None = None
    transcription_language: str | None = None


@dataclass(frozen=True, slots=True)
class End:
    """End the session; ``handoff_data`` reaches the ``<Connect action>`` callback verbatim."""

    handoff_data: str | None = None


InboundMessage = Setup | Prompt | Dtmf | Interrupt | Error | Info
OutboundMessage = Text | Play | SendDigits | Language | End

_INBOUND_TYPES: Final = (Setup, Prompt, Dtmf, Interrupt, Error, Info)
_OUTBOUND_TYPES: Final = (Text, Play, SendDigits, Language, End)

# snake_case attribute -> Twilio's wire name, for the flat string fields of setup.
_SETUP_STRINGS: Final = (
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


# --------------------------------------------------------------------------- decoding


def _excerpt(frame: str | bytes) -> str:
    if isinstance(frame, bytes):
        return frame[:EXCERPT_CHARS].decode("utf-8", errors="replace")
    return frame[:EXCERPT_CHARS]


def _decode_frame(frame: str | bytes, max_bytes: int) -> dict[str, Any]:
    """Text frame -> JSON object, or RemoteProtocolError."""
    if isinstance(frame, bytes | bytearray | memoryview):
        raise RemoteProtocolError(
            FrameErrorKind.BINARY,
            "binary frame; ConversationRelay uses text frames",
            _excerpt(bytes(frame)),
        )
    # A str of n chars is at most 4n UTF-8 bytes; only count when it could matter.
    size = (
        len(frame) if len(frame) * 4 <= max_bytes else len(frame.encode("utf-8", "surrogatepass"))
    )
    if size > max_bytes:
        raise RemoteProtocolError(
            FrameErrorKind.TOO_LARGE, f"frame of {size} bytes exceeds {max_bytes}", _excerpt(frame)
        )
    try:
        decoded = json.loads(frame)
    except (ValueError, RecursionError) as exc:
        # RecursionError: deeply nested arrays from a hostile peer.
        raise RemoteProtocolError(FrameErrorKind.NOT_JSON, str(exc), _excerpt(frame)) from None
    if not isinstance(decoded, dict):
        raise RemoteProtocolError(
            FrameErrorKind.NOT_OBJECT,
            f"JSON {type(decoded).__name__}, not an object",
            _excerpt(frame),
        )
    return decoded


class _Fields:
    """Typed access to the fields of one decoded message, raising a chosen error class."""

    __slots__ = ("d", "err", "excerpt", "type")

    def __init__(self, d: Mapping[str, Any], err: type[ProtocolError], excerpt: str) -> None:
        self.d = d
        self.err = err
        self.excerpt = excerpt
        self.type = d.get("type")

    def fail(self, kind: FrameErrorKind, detail: str) -> ProtocolError:
        return self.err(kind, f"{self.type}: {detail}", self.excerpt)

    def str_(self, key: str, *, required: bool = False, default: str = "") -> str:
        value = self.d.get(key)
        if value is None:
            if required:
                raise self.fail(FrameErrorKind.MISSING_FIELD, f"{key!r} is required")
            return default
        if not isinstance(value, str):
            raise self.fail(FrameErrorKind.WRONG_TYPE, f"{key!r} must be a string")
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

    def number(self, key: str, default: float) -> float:
        """A number, tolerating Twilio's older string encoding (``"460"``)."""
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
        return number

    def str_map(self, key: str) -> dict[str, str]:
        value = self.d.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self.fail(FrameErrorKind.WRONG_TYPE, f"{key!r} must be an object of strings")
        return dict(value)


def _inbound(f: _Fields) -> InboundMessage:
    match f.type:
        case "setup":
            strings = {attr: f.str_(wire) for attr, wire in _SETUP_STRINGS}
            return Setup(
                session_id=f.str_("sessionId", required=True),
                call_sid=f.str_("callSid", required=True),
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
                duration_until_interrupt_ms=f.number("durationUntilInterruptMs", 0.0),
            )
        case "error":
            return Error(description=f.str_("description", required=True))
        case "info":
            value = f.d.get("value")
            if value is not None and not isinstance(value, str):
                value = json.dumps(value, separators=(",", ":"))
            return Info(name=f.str_("name", required=True), value=value or "")
        case str():
            raise f.fail(FrameErrorKind.UNKNOWN_TYPE, "unknown message type")
        case None:
            raise f.fail(FrameErrorKind.MISSING_FIELD, "'type' is required")
        case _:
            raise f.fail(FrameErrorKind.WRONG_TYPE, "'type' must be a string")


def _outbound(f: _Fields) -> OutboundMessage:
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
            if not _DIGITS_RE.fullmatch(digits):
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


def parse_inbound(frame: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> InboundMessage:
    """Parse one frame Twilio sent. Raises :class:`RemoteProtocolError` only."""
    d = _decode_frame(frame, max_bytes)
    return _inbound(_Fields(d, RemoteProtocolError, _excerpt(frame)))


def parse_outbound(frame: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> OutboundMessage:
    """Parse and validate one frame an app sent, as Twilio does (64107 on failure).

    Raises :class:`RemoteProtocolError` only: from the simulator's side the app is
    the remote peer.
    """
    d = _decode_frame(frame, max_bytes)
    return _outbound(_Fields(d, RemoteProtocolError, _excerpt(frame)))


def inbound_from_wire(d: Mapping[str, Any]) -> InboundMessage:
    """Rebuild a Twilio -> app message from its decoded wire dict (e.g. a bus body)."""
    return _inbound(_Fields(d, RemoteProtocolError, _dict_excerpt(d)))


def outbound_from_wire(d: Mapping[str, Any]) -> OutboundMessage:
    """Rebuild and validate an app -> Twilio message from its wire dict (e.g. the
    ``frame`` of a ``gateway.send`` body). Raises :class:`RemoteProtocolError`."""
    return _outbound(_Fields(d, RemoteProtocolError, _dict_excerpt(d)))


def _dict_excerpt(d: Mapping[str, Any]) -> str:
    try:
        return json.dumps(d, separators=(",", ":"), default=repr)[:EXCERPT_CHARS]
    except (TypeError, ValueError):
        return repr(d)[:EXCERPT_CHARS]


# --------------------------------------------------------------------------- encoding


def _number(value: float) -> int | float:
    # Twilio sends whole milliseconds as an integer; keep that on the wire.
    return int(value) if float(value).is_integer() else value


def to_wire(msg: InboundMessage | OutboundMessage) -> dict[str, Any]:
    """The wire dict of a message: Twilio's field names, ``None`` optionals left out.

    Outbound messages are validated exactly as :func:`parse_outbound` validates
    frames; an invalid one raises :class:`LocalProtocolError`.
    """
    match msg:
        case Setup():
            d: dict[str, Any] = {
                "type": "setup",
                "sessionId": msg.session_id,
                "callSid": msg.call_sid,
            }
            for attr, wire in _SETUP_STRINGS:
                d[wire] = getattr(msg, attr)
            d["customParameters"] = dict(msg.custom_parameters)
            return d
        case Prompt():
            return {
                "type": "prompt",
                "voicePrompt": msg.voice_prompt,
                "lang": msg.lang,
                "last": msg.last,
            }
        case Dtmf():
            return {"type": "dtmf", "digit": msg.digit}
        case Interrupt():
            return {
                "type": "interrupt",
                "utteranceUntilInterrupt": msg.utterance_until_interrupt,
                "durationUntilInterruptMs": _number(msg.duration_until_interrupt_ms),
            }
        case Error():
            return {"type": "error", "description": msg.description}
        case Info():
            return {"type": "info", "name": msg.name, "value": msg.value}
        case Text():
            d = {"type": "text", "token": msg.token, "last": msg.last}
            _put(d, "lang", msg.lang)
            _put(d, "interruptible", msg.interruptible)
            _put(d, "preemptible", msg.preemptible)
        case Play():
            d = {"type": "play", "source": msg.source}
            _put(d, "loop", msg.loop)
            _put(d, "preemptible", msg.preemptible)
            _put(d, "interruptible", msg.interruptible)
        case SendDigits():
            d = {"type": "sendDigits", "digits": msg.digits}
        case Language():
            d = {"type": "language"}
            _put(d, "ttsLanguage", msg.tts_language)
            _put(d, "transcriptionLanguage", msg.transcription_language)
        case End():
            d = {"type": "end"}
            _put(d, "handoffData", msg.handoff_data)
        case _:
            raise LocalProtocolError(
                FrameErrorKind.UNKNOWN_TYPE,
                f"not a ConversationRelay message: {type(msg).__name__}",
            )
    _outbound(_Fields(d, LocalProtocolError, _dict_excerpt(d)))
    return d


def _put(d: dict[str, Any], key: str, value: object) -> None:
    if value is not None:
        d[key] = value


def serialize(msg: InboundMessage | OutboundMessage) -> str:
    """Compact JSON text of a message, ready for one WebSocket text frame.

    Raises :class:`LocalProtocolError` for an invalid outbound message.
    """
    d = to_wire(msg)
    # Every frame to every caller goes through here: orjson writes the same
    # bytes as ``json.dumps(separators=(",", ":"), ensure_ascii=False)`` for
    # strings, bools, ints and key order, several times faster. Floats (only
    # ``interrupt`` carries one) format differently (1e-07 vs 1e-7), and
    # orjson refuses lone surrogates and ints beyond 64 bits: those keep json.
    if not isinstance(msg, Interrupt):
        try:
            return orjson.dumps(d).decode()
        except orjson.JSONEncodeError:
            pass
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)


_WIRE_TYPES: Final[Mapping[type, str]] = MappingProxyType(
    {
        Setup: "setup",
        Prompt: "prompt",
        Dtmf: "dtmf",
        Interrupt: "interrupt",
        Error: "error",
        Info: "info",
        Text: "text",
        Play: "play",
        SendDigits: "sendDigits",
        Language: "language",
        End: "end",
    }
)


def wire_type(msg: InboundMessage | OutboundMessage) -> str:
    """The message's wire ``type`` (``"text"``, ``"sendDigits"``, ...), without encoding it."""
    return _WIRE_TYPES[type(msg)]


def invalid_message_description(frame: str | bytes) -> str:
    """The ``error`` description Twilio sends for an invalid app frame (observed text)."""
    text = frame if isinstance(frame, str) else bytes(frame).decode("utf-8", errors="replace")
    return f"Invalid message received, code: {INVALID_MESSAGE_CODE}, {text}"


# --------------------------------------------------------------------------- connections


class RelayConnection:
    """The app's side of one ConversationRelay session (what the gateway holds).

    Feed every frame from Twilio to :meth:`receive`; send the strings :meth:`send`
    returns. ``setup`` must come first and only once. A rejected frame raises
    :class:`RemoteProtocolError` and leaves the connection usable: Twilio's frames
    are never answered with errors, so the caller logs the error and carries on.
    """

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
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
        self.frames_in += 1
        try:
            msg = parse_inbound(frame, max_bytes=self.max_bytes)
            if isinstance(msg, Setup):
                if self.setup is not None:
                    raise RemoteProtocolError(
                        FrameErrorKind.DUPLICATE_SETUP,
                        "second setup in one session",
                        _excerpt(frame),
                    )
                self.setup = msg
            elif self.setup is None:
                raise RemoteProtocolError(
                    FrameErrorKind.BEFORE_SETUP,
                    f"{type(msg).__name__} before setup",
                    _excerpt(frame),
                )
        except RemoteProtocolError:
            self.errors_in += 1
            raise
        return msg

    def send(self, msg: OutboundMessage) -> str:
        """The text frame for an app -> Twilio message; :class:`LocalProtocolError` if invalid."""
        if not isinstance(msg, _OUTBOUND_TYPES):
            raise LocalProtocolError(
                FrameErrorKind.UNKNOWN_TYPE, f"the app cannot send {type(msg).__name__}"
            )
        text = serialize(msg)
        self.frames_out += 1
        return text


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
        if not isinstance(msg, _INBOUND_TYPES):
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
