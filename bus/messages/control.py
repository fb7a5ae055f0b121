"""Messages between actors and to the gateway: ``gateway.send``, ``control.cancel``,
``conversation.timer``, and the adoption of a speculative reply (``gateway.adopt``,
``control.adopt``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from bus.envelope import Kind
from bus.messages.body import Body


@dataclass(frozen=True, slots=True)
class GatewaySend:
    """``gateway.send``: an app-to-Twilio frame (its wire object) for the call's socket.

    ``after_speech``: send it only once the current reply has been spoken.
    ``origin``: who built it (``conversation`` or ``llm``, a tool), for replay.
    The gateway validates ``frame`` as Twilio would before sending it.
    """

    KIND: ClassVar[Kind] = Kind.GATEWAY_SEND

    frame: Mapping[str, Any] = field(hash=False)
    after_speech: bool = False
    origin: str = ""

    def to_body(self) -> dict[str, Any]:
        return {"frame": dict(self.frame), "after_speech": self.after_speech, "origin": self.origin}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        b = Body(cls.KIND, body)
        return cls(
            frame=b.object_("frame"),
            after_speech=b.bool_("after_speech", False),
            origin=b.str_("origin", ""),
        )


@dataclass(frozen=True, slots=True)
class ControlCancel:
    """``control.cancel``: stop generating the reply to ``reply_to`` of the envelope's
    call and session; ``reason`` is ``interrupt``, ``superseded`` or ``hangup``."""

    KIND: ClassVar[Kind] = Kind.CONTROL_CANCEL

    reply_to: int
    reason: str = ""

    def to_body(self) -> dict[str, Any]:
        return {"reply_to": self.reply_to, "reason": self.reason}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        b = Body(cls.KIND, body)
        return cls(reply_to=b.int_("reply_to"), reason=b.str_("reason", ""))


@dataclass(frozen=True, slots=True)
class ConversationTimer:
    """``conversation.timer``: timer ``timer`` (``silence``, ``dtmf``, ``request``,
    ``settle``) of the call was due at ``deadline_ms`` (wall-clock ms)."""

    KIND: ClassVar[Kind] = Kind.CONVERSATION_TIMER

    timer: str
    deadline_ms: int

    def to_body(self) -> dict[str, Any]:
        return {"timer": self.timer, "deadline_ms": self.deadline_ms}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        b = Body(cls.KIND, body)
        return cls(timer=b.str_("timer"), deadline_ms=b.int_("deadline_ms"))


@dataclass(frozen=True, slots=True)
class GatewayAdopt:
    """``gateway.adopt``: the held reply to the interim prompt ``reply_to`` answers
    the final prompt ``seq`` of the envelope's session.

    The gateway releases what it holds of that reply at once, and forwards
    the rest as it comes, unless an interrupt or a newer final prompt
    arrived after ``seq`` (then it drops the reply). See ``gateway.fence``.
    """

    KIND: ClassVar[Kind] = Kind.GATEWAY_ADOPT

    reply_to: int
    seq: int

    def to_body(self) -> dict[str, Any]:
        return {"reply_to": self.reply_to, "seq": self.seq}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        b = Body(cls.KIND, body)
        return cls(reply_to=b.int_("reply_to"), seq=b.int_("seq"))


@dataclass(frozen=True, slots=True)
class ControlAdopt:
    """``control.adopt``: the held reply to ``reply_to`` of the envelope's call and
    session was adopted for the final prompt ``seq``: its tools may run now."""

    KIND: ClassVar[Kind] = Kind.CONTROL_ADOPT

    reply_to: int
    seq: int

    def to_body(self) -> dict[str, Any]:
        return {"reply_to": self.reply_to, "seq": self.seq}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        b = Body(cls.KIND, body)
        return cls(reply_to=b.int_("reply_to"), seq=b.int_("seq"))
