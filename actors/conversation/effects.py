"""What the turn rules ask the actor to do: messages to publish.

The rules never touch the bus. Each message they want sent is an ``Outbound``
carrying the envelope stamps it goes out with (taken when the rule fired: a
cancel for an old session names the old session), and the shell
(``actors.conversation.actor``) routes it by kind, stamps the lease's epoch
and appends everything in one batch before it persists the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actors.config import ConversationConfig
from bus.envelope import Kind


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message for the bus: ``kind`` and ``body`` with their envelope stamps.

    Routed by kind: ``llm.request`` to the LLM stream, ``control.cancel`` to
    the control stream, ``gateway.send`` to the gateway named by ``gateway``.
    """

    kind: Kind
    call: str
    body: dict[str, Any] = field(hash=False)
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

    def send(self, kind: Kind, call: str, body: dict[str, Any], **stamps: Any) -> None:
        self.effects.append(Outbound(kind=kind, call=call, body=body, **stamps))
