"""The ConversationRelay vocabulary: pure, no I/O, no clock, nothing else of ours.

Everything the gateway (the app's end), the actors (which build the frames a
caller hears) and the simulator (Twilio's end) must agree on about Twilio's
protocol lives here, once. Modules, bottom up (each imports only those above):

- ``errors``      whose fault a bad frame was (Remote/LocalProtocolError).
- ``dtmf``        the keypad: phone keys, the end-of-entry key, sendDigits.
- ``messages``    one frozen dataclass per message, both directions.
- ``handoff``     the ``handoffData`` of ``end``: end_call, transfer, silence.
- ``decode``      frames and wire dicts to messages: the reading rules.
- ``encode``      messages to wire dicts and text frames, ours validated.
- ``codec``       the public face of both, with Twilio's numbers.
- ``connection``  the two ends of a session as state machines.
- ``twiml``       ``<Connect><ConversationRelay>``: building and parsing.
- ``signature``   ``X-Twilio-Signature``: signing and constant-time checking.
- ``speech``      the speaking rate every estimate from text length assumes.

The names most code needs are re-exported here (``from relay import Text``).
"""

from relay.codec import (
    CLOSE_MALFORMED,
    CLOSE_NORMAL,
    DEFAULT_MAX_BYTES,
    INVALID_MESSAGE_CODE,
    MAX_CONSECUTIVE_INVALID,
    REASON_MALFORMED,
    REASON_NORMAL,
    inbound_from_wire,
    invalid_message_description,
    outbound_from_wire,
    parse_inbound,
    parse_outbound,
    serialize,
    to_wire,
)
from relay.connection import AppFrameVerdict, RelayConnection, SessionState, TwilioSide
from relay.errors import FrameErrorKind, LocalProtocolError, ProtocolError, RemoteProtocolError
from relay.handoff import Handoff, HandoffReason
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
    wire_type,
)

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
    "Handoff",
    "HandoffReason",
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
    "SessionState",
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
    "wire_type",
]
