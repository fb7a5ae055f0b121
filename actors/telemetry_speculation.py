"""Telemetry of preemptive replies: speculations counted, and joined to their turn.

A speculation is a reply started, held, on an interim prompt
(``actors.conversation.speculation``). The LLM actor's facts of it
(``request_taken``, ``provider_first_token``, ``completion_done``, ...)
carry the interim prompt's seq as ``reply_to``; the turn it may become is
keyed by the final prompt's seq (``prompt_received``, ``prompt_applied`` and
the gateway's ``first_token_sent`` of an adopted reply carry that one). The
conversation's facts tie the two:

- ``speculation_started`` (``reply_to``: the interim seq);
- ``speculation_adopted`` (``reply_to``: the final seq, ``speculation``: the
  interim seq): the speculation's facts, before and after, join the final
  prompt's turn;
- ``speculation_discarded`` (``reply_to``: the interim seq): its facts make no
  turn (what it cost is still counted as tokens billed);
- ``speculation_wasted`` (``reply_to``: the interim seq; ``output_tokens``,
  ``input_tokens``): what a discarded speculation's generation cost;
- ``speculation_shed`` (``reply_to``: the interim seq; ``reason``): load
  shedding, a speculation not started (or dropped unrun by its LLM worker)
  because the bus was behind: like a discard, its facts make no turn.

Facts may come in either order around the adoption or discard (the LLM
actor writes its facts with the result, often after the final prompt), so
both the alias and the turn already built are handled. Pure: no bus, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bus.messages import Fact

__all__ = ["SPECULATION_FACTS", "Speculations"]

SPECULATION_FACTS = frozenset(
    {
        "speculation_started",
        "speculation_adopted",
        "speculation_discarded",
        "speculation_wasted",
        "speculation_shed",
    }
)
_KEPT = 64  # speculations remembered per call (adopted or discarded)

Key = tuple[str, int]  # (session, reply_to)


@dataclass(slots=True)
class Speculations:
    """One call's speculations: counts, and where their facts belong."""

    started: int = 0
    adopted: int = 0
    discarded: int = 0
    shed: int = 0
    wasted_output_tokens: int = 0
    wasted_input_tokens: int = 0
    adopted_as: dict[Key, int] = field(default_factory=dict)  # interim -> final seq
    dropped: set[Key] = field(default_factory=set)

    def apply(self, session: str, fact: Fact) -> tuple[Key, Key | None] | None:
        """Count one speculation fact. For an adoption, returns (interim key,
        final key): the caller moves what it holds under the first to the
        second; for a discard (interim key, None): the caller drops it."""
        reply_to = fact.int_field("reply_to")
        if reply_to is None:
            return None
        if fact.name == "speculation_started":
            self.started += 1
        elif fact.name == "speculation_adopted":
            interim = fact.int_field("speculation")
            self.adopted += 1
            if interim is not None:
                self.adopted_as[(session, interim)] = reply_to
                self._bound()
                return (session, interim), (session, reply_to)
        elif fact.name in ("speculation_discarded", "speculation_shed"):
            if fact.name == "speculation_shed":
                self.shed += 1
            else:
                self.discarded += 1
            self.dropped.add((session, reply_to))
            self._bound()
            return (session, reply_to), None
        elif fact.name == "speculation_wasted":
            self.wasted_output_tokens += fact.int_field("output_tokens") or 0
            self.wasted_input_tokens += fact.int_field("input_tokens") or 0
        return None

    def turn_of(self, key: Key) -> Key | None:
        """Where a turn fact keyed ``key`` belongs: the final prompt's turn for an
        adopted speculation, None for a discarded one, else ``key`` itself."""
        if key in self.dropped:
            return None
        final = self.adopted_as.get(key)
        return key if final is None else (key[0], final)

    def _bound(self) -> None:
        while len(self.adopted_as) > _KEPT:
            del self.adopted_as[next(iter(self.adopted_as))]
        while len(self.dropped) > _KEPT:
            self.dropped.remove(min(self.dropped, key=lambda k: k[1]))

    def fields(self) -> dict[str, Any]:
        """The call summary's speculation fields."""
        return {
            "speculations": self.started,
            "speculations_adopted": self.adopted,
            "speculations_discarded": self.discarded,
            "speculations_shed": self.shed,
            "speculation_wasted_output_tokens": self.wasted_output_tokens,
        }
