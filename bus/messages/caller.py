"""Caller events as the bus carries them: Twilio's frames, typed.

The gateway validates each ConversationRelay frame and appends it to the
call's partition stream with Twilio's field names and ``type`` (so stored
streams stay readable as Twilio frames); these classes are their typed
forms, attributes in snake_case. ``call.closed`` is the gateway's own: the
session's socket closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Self

from bus.envelope import Kind
from bus.messages.body import Body, whole_ms

# snake_case attribute -> Twilio's wire name, for the flat string fields of setup.
_SETUP_STRINGS = (
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


@dataclass(frozen=True, slots=True)
class CallSetup:
    """``call.setup``: Twilio's ``setup`` frame, first of every session."""

    KIND: ClassVar[Kind] = Kind.CALL_SETUP

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
    custom_parameters: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "custom_parameters", MappingProxyType(dict(self.custom_parameters))
        )

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "setup",
            "sessionId": self.session_id,
            "callSid": self.call_sid,
        }
        for attr, wire in _SETUP_STRINGS:
            body[wire] = getattr(self, attr)
        body["customParameters"] = dict(self.custom_parameters)
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        b = Body(cls.KIND, body)
        strings = {attr: b.str_(wire, "") for attr, wire in _SETUP_STRINGS}
        return cls(
            session_id=b.str_("sessionId", ""),
            call_sid=b.str_("callSid", ""),
            custom_parameters=b.str_map("customParameters"),
            **strings,
        )


@dataclass(frozen=True, slots=True)
class CallPrompt:
    """``call.prompt``: caller speech; ``last=False`` is interim (the whole utterance so far)."""

    KIND: ClassVar[Kind] = Kind.CALL_PROMPT

    voice_prompt: str
    lang: str = ""
    last: bool = True

    def to_body(self) -> dict[str, Any]:
        return {
            "type": "prompt",
            "voicePrompt": self.voice_prompt,
            "lang": self.lang,
            "last": self.last,
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        b = Body(cls.KIND, body)
        return cls(
            voice_prompt=b.str_("voicePrompt", ""),
            lang=b.str_("lang", ""),
            last=b.bool_("last", True),
        )


@dataclass(frozen=True, slots=True)
class CallDtmf:
    """``call.dtmf``: one key press."""

    KIND: ClassVar[Kind] = Kind.CALL_DTMF

    digit: str

    def to_body(self) -> dict[str, Any]:
        return {"type": "dtmf", "digit": self.digit}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        return cls(digit=Body(cls.KIND, body).str_("digit"))


@dataclass(frozen=True, slots=True)
class CallInterrupt:
    """``call.interrupt``: the caller barged in, having heard ``utterance_until_interrupt``
    of the chunk that was playing, ``duration_until_interrupt_ms`` into it.

    With ``withdrawn`` (the seq of a final prompt) it is the gateway's, not the
    caller's: it apologised for that prompt (asked the caller to say it again)
    and fences its late reply, so none of that reply is ever heard.
    """

    KIND: ClassVar[Kind] = Kind.CALL_INTERRUPT

    utterance_until_interrupt: str = ""
    duration_until_interrupt_ms: float = 0.0
    withdrawn: int = 0  # optional on the wire: 0 (absent) for a caller's barge-in

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "interrupt",
            "utteranceUntilInterrupt": self.utterance_until_interrupt,
            "durationUntilInterruptMs": whole_ms(float(self.duration_until_interrupt_ms)),
        }
        if self.withdrawn:
            body["withdrawn"] = self.withdrawn
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        b = Body(cls.KIND, body)
        return cls(
            utterance_until_interrupt=b.str_("utteranceUntilInterrupt", ""),
            duration_until_interrupt_ms=b.number("durationUntilInterruptMs", 0.0),
            withdrawn=b.int_("withdrawn", 0),
        )


@dataclass(frozen=True, slots=True)
class CallInfo:
    """``call.info``: an optional event (``tokensPlayed``, ``agentSpeaking``...)."""

    KIND: ClassVar[Kind] = Kind.CALL_INFO

    name: str
    value: str = ""

    def to_body(self) -> dict[str, Any]:
        return {"type": "info", "name": self.name, "value": self.value}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        b = Body(cls.KIND, body)
        return cls(name=b.str_("name"), value=b.str_("value", ""))


@dataclass(frozen=True, slots=True)
class CallError:
    """``call.error``: Twilio reports a problem with what the app sent."""

    KIND: ClassVar[Kind] = Kind.CALL_ERROR

    description: str

    def to_body(self) -> dict[str, Any]:
        return {"type": "error", "description": self.description}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        return cls(description=Body(cls.KIND, body).str_("description", ""))


@dataclass(frozen=True, slots=True)
class CallClosed:
    """``call.closed``: the session's socket closed (``code`` None: no close frame)."""

    KIND: ClassVar[Kind] = Kind.CALL_CLOSED

    code: int | None = None
    reason: str = ""

    def to_body(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        b = Body(cls.KIND, body)
        return cls(code=b.opt_int("code"), reason=b.str_("reason", ""))


CallEvent = CallSetup | CallPrompt | CallDtmf | CallInterrupt | CallInfo | CallError
