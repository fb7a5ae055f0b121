"""Interim prompts on their way to the bus: only what the conversation can use.

With ``partialPrompts`` on, Twilio sends an interim prompt (``last: false``,
the whole utterance so far) about every 250 ms while the caller speaks. Each
one published is a full trip through the hot path (an append, a partition
stream entry, a conversation read and ack), several a second per call, and a
final prompt queues behind them. The conversation needs only the latest
interim words of the utterance and their ``seq`` (to start a preemptive
reply on them), so the gateway publishes interim prompts by these rules
(pure; the session's publisher, :mod:`gateway.publish`, applies them):

1. **Unused, none.** When nothing reads interim prompts (preemptive replies
   off: the conversation drops them), none is published.
2. **Same words, once.** An interim prompt whose words equal the last one
   published in this utterance is not published: the conversation has them
   already, under the earlier ``seq``.
3. **Latest only.** While an append of the session is in flight, at most one
   interim prompt waits; a newer one replaces it.
4. **Never in the way.** A final prompt drops the interim prompt waiting (the
   final carries the whole utterance) and ends the utterance; any other
   caller event (interrupt, key, ...) is published after the waiting one, so
   the partition stream keeps the order the caller spoke in. A final prompt,
   interrupt or key is never held back or dropped by these rules.

Outcomes are counted on ``/metrics`` (``switchboard_gateway_interim_prompts``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

__all__ = ["InterimGate", "InterimOutcome"]

T = TypeVar("T")


class InterimOutcome(StrEnum):
    """What became of one interim prompt (the metric's label)."""

    QUEUED = "queued"  # waiting for the session's append slot (published unless replaced)
    PUBLISHED = "published"  # appended to the partition stream
    UNUSED = "unused"  # rule 1
    REPEATED = "repeated"  # rule 2
    REPLACED = "replaced"  # rule 3: a newer one took its place
    SUPERSEDED = "superseded"  # rule 4: the final prompt came first


@dataclass(eq=False, slots=True)
class InterimGate(Generic[T]):
    """The rules above for one session; ``T`` is what is published (an envelope)."""

    enabled: bool = True
    waiting: T | None = None  # the interim prompt waiting for the append slot
    _words: str | None = None  # of the last interim queued in this utterance

    def interim(self, text: str, item: T) -> list[InterimOutcome]:
        """An interim prompt with ``text`` arrived, as ``item``: what happened.

        ``QUEUED`` means ``item`` is now :attr:`waiting`; a ``REPLACED``
        beside it is the one it took the place of.
        """
        if not self.enabled:
            return [InterimOutcome.UNUSED]
        words = " ".join(text.split())
        if words == self._words:
            return [InterimOutcome.REPEATED]
        self._words = words
        outcomes = [InterimOutcome.QUEUED]
        if self.waiting is not None:
            outcomes.append(InterimOutcome.REPLACED)
        self.waiting = item
        return outcomes

    def take(self) -> T | None:
        """The waiting interim prompt, handed to the append slot (None: none waits)."""
        item, self.waiting = self.waiting, None
        return item

    def final(self) -> list[InterimOutcome]:
        """A final prompt arrived: the waiting interim prompt is dropped (the
        final carries the whole utterance) and the utterance is over."""
        self._words = None
        if self.waiting is None:
            return []
        self.waiting = None
        return [InterimOutcome.SUPERSEDED]

    def broken(self) -> None:
        """An interrupt or a key: the conversation forgets the utterance so far,
        so the same words are worth publishing again. The waiting interim
        prompt stays, to be published before the event."""
        self._words = None
