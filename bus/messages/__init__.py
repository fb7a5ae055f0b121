"""One typed message per kind that crosses the bus: the schema, in code.

Modules: ``caller`` (``call.*``), ``llm`` (``llm.*``), ``control``
(``gateway.send``, ``control.cancel``, ``conversation.timer``, ``*.adopt``), ``fact``
(``event``), ``body`` (typed field reads, history message types), ``json``
(``JsonValue``/``JsonObject``: open JSON such as tool schemas and inputs).

Every ``Envelope`` carries a ``body``, a JSON object whose shape depends on the
envelope's ``kind``. This module is that shape: one frozen dataclass per kind,
each with ``to_body()`` (the JSON object to put in the envelope) and a
classmethod ``from_body(body)`` that checks the object and raises
:class:`bus.base.MalformedEntry` (a ``BusError``) naming the kind and the field
when it is not one. ``decode(env)`` picks the class by ``env.kind``;
``envelope(message, call=..., ...)`` builds the envelope of a message.

The wire format is the one the bus carried before these types existed, so
recorded streams still decode and replays still work:

- Caller events (``call.setup`` ... ``call.error``) keep Twilio's camelCase
  field names and their ``type``: the body is the ConversationRelay frame as
  the gateway received it (validated there). The attributes are snake_case.
- Everything else uses snake_case names (``reply_to``, ``after_speech``...).

Reading is tolerant where older entries differ (a missing optional field gets
its default; ``durationUntilInterruptMs`` may be a numeric string, as Twilio
once sent it) and strict about types: a field of the wrong type is a
``MalformedEntry``, never a value of a surprising type further down.

History messages (``llm.request``/``llm.result`` ``messages``) are Anthropic
Messages API messages; :class:`HistoryMessage` and the block ``TypedDict``\\ s
describe them. Only their outer shape is checked here (a role, and content
that is a string or a list of objects with a string ``type``): the API
accepts block types this project does not use, and they pass through.

Kinds this module does not know (a plug-in's own, e.g. ``analytics.call``)
decode as envelopes with a plain-string ``kind``; ``decode`` raises
:class:`UnknownKind`, a ``MalformedEntry``, for them.
"""

from __future__ import annotations

from bus.base import MalformedEntry
from bus.envelope import Envelope
from bus.messages.body import (
    ContentBlock,
    HistoryMessage,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from bus.messages.caller import (
    CallClosed,
    CallDtmf,
    CallError,
    CallEvent,
    CallInfo,
    CallInterrupt,
    CallPrompt,
    CallSetup,
)
from bus.messages.control import (
    ControlAdopt,
    ControlCancel,
    ConversationTimer,
    GatewayAdopt,
    GatewaySend,
)
from bus.messages.fact import Fact
from bus.messages.llm import (
    HistoryRef,
    LlmRequest,
    LlmResult,
    LlmTokens,
    Timings,
    ToolCall,
    Usage,
    history_digest,
)

__all__ = [
    "BusMessage",
    "CallClosed",
    "CallDtmf",
    "CallError",
    "CallEvent",
    "CallInfo",
    "CallInterrupt",
    "CallPrompt",
    "CallSetup",
    "ContentBlock",
    "ControlAdopt",
    "ControlCancel",
    "ConversationTimer",
    "Fact",
    "GatewayAdopt",
    "GatewaySend",
    "HistoryMessage",
    "HistoryRef",
    "LlmRequest",
    "LlmResult",
    "LlmTokens",
    "TextBlock",
    "Timings",
    "ToolCall",
    "ToolResultBlock",
    "ToolUseBlock",
    "UnknownKind",
    "Usage",
    "decode",
    "envelope",
    "history_digest",
]


class UnknownKind(MalformedEntry):
    """An envelope of a kind that has no message type here (a plug-in's own kind)."""


BusMessage = (
    CallEvent
    | CallClosed
    | LlmRequest
    | LlmTokens
    | LlmResult
    | GatewaySend
    | ControlCancel
    | ConversationTimer
    | GatewayAdopt
    | ControlAdopt
    | Fact
)

_TYPES: dict[str, type[BusMessage]] = {
    t.KIND: t
    for t in (
        CallSetup,
        CallPrompt,
        CallDtmf,
        CallInterrupt,
        CallInfo,
        CallError,
        CallClosed,
        LlmRequest,
        LlmTokens,
        LlmResult,
        GatewaySend,
        ControlCancel,
        ConversationTimer,
        GatewayAdopt,
        ControlAdopt,
        Fact,
    )
}


def decode(env: Envelope) -> BusMessage:
    """The typed message in ``env``'s body, by its kind.

    Raises ``UnknownKind`` for a kind without a type here, ``MalformedEntry``
    for a body that is not the kind's message.
    """
    cls = _TYPES.get(env.kind)
    if cls is None:
        raise UnknownKind(f"no message type for kind {env.kind!r}")
    return cls.from_body(env.body)


def envelope(
    message: BusMessage,
    *,
    call: str,
    session: str = "",
    gateway: str = "",
    seq: int = 0,
    turn: int = 0,
    ts: int = 0,
    epoch: int = 0,
) -> Envelope:
    """The envelope that carries ``message`` (its kind and body) with these stamps."""
    return Envelope(
        kind=message.KIND,
        call=call,
        body=message.to_body(),
        session=session,
        gateway=gateway,
        seq=seq,
        turn=turn,
        ts=ts,
        epoch=epoch,
    )
