"""What goes into the turn rules and what comes out of them.

In: ``Incoming``, one entry of the call's partition stream as its typed
message (``bus.messages``) with the envelope stamps the rules need.

Out: the rules never touch the bus. Each message they want sent is an
``Outbound``, a typed message (built, and so checked, where the rule fires)
with the envelope stamps it goes out with, taken when the rule fired: a
cancel for an old session names the old session. Facts are ``FactOut``. The
shell (``actors.conversation.actor``) routes each by its type, stamps the
lease's epoch and appends everything in one batch before it persists the
state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actors.config import ConversationConfig
from bus.envelope import Envelope
from bus.messages import (
    BusMessage,
    ControlAdopt,
    ControlCancel,
    GatewayAdopt,
    GatewaySend,
    LlmRequest,
    decode,
)

# What the rules publish (facts apart).
OutMessage = LlmRequest | ControlCancel | ControlAdopt | GatewaySend | GatewayAdopt


@dataclass(frozen=True, slots=True)
class Incoming:
    """One entry for the rules: its typed ``message`` and its envelope's stamps."""

    message: BusMessage
    call: str
    session: str = ""
    gateway: str = ""
    seq: int = 0
    turn: int = 0
    ts: int = 0  # the envelope's stamp: wall-clock ms when it was written

    @classmethod
    def of(cls, env: Envelope) -> Incoming:
        """``env`` decoded; raises ``MalformedEntry`` (``UnknownKind``) as ``decode`` does."""
        return cls(
            message=decode(env),
            call=env.call,
            session=env.session,
            gateway=env.gateway,
            seq=env.seq,
            turn=env.turn,
            ts=env.ts,
        )


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message for the bus with its envelope stamps.

    Routed by type: ``LlmRequest`` to the LLM stream, ``ControlCancel`` and
    ``ControlAdopt`` to the control stream, ``GatewaySend`` and
    ``GatewayAdopt`` to the gateway named by ``gateway``.
    """

    message: OutMessage
    call: str
    session: str = ""
    gateway: str = ""
    seq: int = 0
    turn: int = 0


@dataclass(frozen=True, slots=True)
class FactOut:
    """A fact for the events stream (``bus.facts``); ``t_ms`` None: when it is published."""

    name: str
    call: str
    fields: dict[str, Any] = field(hash=False)
    session: str = ""
    gateway: str = ""
    seq: int = 0
    turn: int = 0
    t_ms: float | None = None


Effect = Outbound | FactOut


@dataclass(slots=True)
class Step:
    """One message being applied: what the rules may read, and what they produce.

    ``now`` is the timer clock in ms (wall-clock ms in production, so a
    deadline means the same to the next owner of the partition); ``wall_ms``
    is the wall-clock time the entry is applied, for facts. The rules read no
    clock and no context variable: everything they know comes in here.
    """

    config: ConversationConfig
    now: float
    wall_ms: float
    effects: list[Effect] = field(default_factory=list)

    def send(
        self,
        message: OutMessage,
        call: str,
        *,
        session: str,
        gateway: str,
        seq: int = 0,
        turn: int = 0,
    ) -> None:
        """Publish ``message`` with these envelope stamps."""
        self.effects.append(Outbound(message, call, session, gateway, seq, turn))
