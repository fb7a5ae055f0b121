"""The ConversationRelay messages: one frozen dataclass per message type.

Field names are Twilio's wire names in snake_case (``voicePrompt`` is
``voice_prompt``, ``from`` is ``from_``); :mod:`relay.codec` maps them to
and from the wire.

- Twilio -> app (:data:`InboundMessage`): :class:`Setup`, :class:`Prompt`,
  :class:`Dtmf`, :class:`Interrupt`, :class:`Error`, :class:`Info`.
- app -> Twilio (:data:`OutboundMessage`): :class:`Text`, :class:`Play`,
  :class:`SendDigits`, :class:`Language`, :class:`End`.

Building a message does not validate it (a parsed frame is already valid);
:func:`relay.codec.to_wire` validates an outbound message the way Twilio
would before it reaches the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

__all__ = [
    "INBOUND_TYPES",
    "OUTBOUND_TYPES",
    "Dtmf",
    "End",
    "Error",
    "InboundMessage",
    "Info",
    "Interrupt",
    "Language",
    "OutboundMessage",
    "Play",
    "Prompt",
    "SendDigits",
    "Setup",
    "Text",
    "wire_type",
]


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

INBOUND_TYPES: Final = (Setup, Prompt, Dtmf, Interrupt, Error, Info)
OUTBOUND_TYPES: Final = (Text, Play, SendDigits, Language, End)


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
