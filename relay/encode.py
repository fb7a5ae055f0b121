"""Writing ConversationRelay frames: typed messages to wire dicts and JSON text.

The serializing half of :mod:`relay.codec` (which is the public face).
:func:`to_wire` gives a message's wire dict with Twilio's field names and
``None`` optionals left out; an outbound message is then checked by the same
reader that checks an app's frames (:func:`relay.decode.outbound`), so a message
of ours that Twilio would refuse raises :class:`LocalProtocolError` here, where
it was built. :func:`serialize` writes one compact text frame.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from relay.decode import SETUP_STRINGS, Fields, dict_excerpt, outbound
from relay.errors import FrameErrorKind, LocalProtocolError
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

__all__ = ["serialize", "to_wire"]


def _number(value: float) -> int | float:
    # Twilio sends whole milliseconds as an integer; keep that on the wire.
    return int(value) if float(value).is_integer() else value


def to_wire(msg: InboundMessage | OutboundMessage) -> dict[str, Any]:
    """The wire dict of a message: Twilio's field names, ``None`` optionals left out.

    Outbound messages are validated exactly as :func:`relay.codec.parse_outbound`
    validates frames; an invalid one raises :class:`LocalProtocolError`.
    """
    inbound = _inbound_wire(msg)
    if inbound is not None:
        return inbound
    d = _outbound_wire(msg)
    outbound(Fields(d, LocalProtocolError, dict_excerpt(d)))
    return d


def _inbound_wire(msg: InboundMessage | OutboundMessage) -> dict[str, Any] | None:
    """The wire dict of a Twilio -> app message; ``None`` for any other message."""
    match msg:
        case Setup():
            d: dict[str, Any] = {
                "type": "setup",
                "sessionId": msg.session_id,
                "callSid": msg.call_sid,
            }
            for attr, wire in SETUP_STRINGS:
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
        case _:
            return None


def _outbound_wire(msg: InboundMessage | OutboundMessage) -> dict[str, Any]:
    """The wire dict of an app -> Twilio message, not yet validated."""
    d: dict[str, Any]
    match msg:
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
