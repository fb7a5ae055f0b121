"""How a session ends: the ``handoffData`` an ``end`` carries to ``<Connect action>``.

ConversationRelay passes ``end``'s ``handoffData`` string verbatim to the
action callback (``HandoffData``). Switchboard writes a JSON object there
with a ``reason``:

- ``end_call``: the agent hung up (the ``end_call`` tool);
- ``transfer``: with ``number`` (E.164, -> ``<Dial>``) or ``queue``
  (-> ``<Enqueue>``), from the ``transfer`` tool;
- ``silence``: the caller stayed silent past the last re-prompt;
- ``handover``: the gateway is shutting down and hands the call to another
  one (the action callback answers with a fresh ``<Connect>``).

:class:`Handoff` is that object. The JSON text is written exactly as it
always was (``json.dumps`` with its default separators, ``reason`` first), so
recorded streams and action callbacks read the same. Handoff data comes back
through Twilio from a model's tool call: :meth:`Handoff.parse` returns None
for anything that is not a JSON object, and keeps only string targets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

from relay.messages import End

__all__ = ["Handoff", "HandoffReason"]


class HandoffReason(StrEnum):
    """Why we ended the session. Parsed handoffs may carry other reasons."""

    END_CALL = "end_call"
    TRANSFER = "transfer"
    SILENCE = "silence"
    HANDOVER = "handover"


@dataclass(frozen=True, slots=True)
class Handoff:
    """The ``handoffData`` of an ``end``: a reason and, for a transfer, its target."""

    reason: str
    number: str | None = None
    queue: str | None = None

    @classmethod
    def end_call(cls) -> Handoff:
        return cls(HandoffReason.END_CALL)

    @classmethod
    def silence(cls) -> Handoff:
        return cls(HandoffReason.SILENCE)

    @classmethod
    def handover(cls) -> Handoff:
        return cls(HandoffReason.HANDOVER)

    @classmethod
    def transfer(cls, *, number: str | None = None, queue: str | None = None) -> Handoff:
        """A transfer to a ``queue`` or a ``number`` (exactly one)."""
        if (number is None) == (queue is None):
            raise ValueError("a transfer needs exactly one of number or queue")
        return cls(HandoffReason.TRANSFER, number=number, queue=queue)

    def to_data(self) -> str:
        """The ``handoffData`` string."""
        data: dict[str, str] = {"reason": str(self.reason)}
        if self.queue is not None:
            data["queue"] = self.queue
        if self.number is not None:
            data["number"] = self.number
        return json.dumps(data)

    def end(self) -> End:
        """The ``end`` message that carries this handoff."""
        return End(handoff_data=self.to_data())

    @classmethod
    def parse(cls, data: str | None) -> Handoff | None:
        """The handoff in ``HandoffData``; None when it is not a JSON object with a reason."""
        if not data:
            return None
        try:
            parsed = json.loads(data)
        except ValueError:
            return None
        if not isinstance(parsed, dict):
            return None
        reason = parsed.get("reason")
        number, queue = parsed.get("number"), parsed.get("queue")
        return cls(
            reason=reason if isinstance(reason, str) else "",
            number=number if isinstance(number, str) else None,
            queue=queue if isinstance(queue, str) else None,
        )
