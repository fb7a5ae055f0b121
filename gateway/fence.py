"""The reply fence: which reply tokens of one session may still reach the caller.

Pure (no I/O, no clock). The whole contract, shared with the actors, is here:

1. **Caller fence.** The gateway stamps every caller event with the session's
   ``seq``; every reply carries ``reply_to``, the ``seq`` of the prompt it
   answers. A final prompt or an ``interrupt`` at ``seq = S`` sets the fence to
   ``S``: tokens with ``reply_to < S`` are dropped (``fenced``). The gateway
   never needs to know how the conversation numbers turns, and a slow cancel
   can never reach the caller.
2. **No repeats.** Token batches are numbered per reply (``index`` 0, 1, ...);
   a batch at or below the last one forwarded for its ``reply_to`` is a
   redelivery or a regeneration and is dropped (``duplicate``).
   A reply ends with ``last: true``; nothing of that reply passes after it
   (``after_last``), whatever its index. Two LLM workers can stream one
   request when one reclaims it from a stalled other; they coalesce tokens
   into batches differently, so the slower one's indices run past the
   faster one's final batch, and the index rule alone let the caller hear
   the end of the reply twice.
3. **The newest attempt only.** A request reclaimed from a stalled worker
   is streamed by two attempts. Each batch carries its attempt's
   ``generation``; a resuming attempt first writes an opening entry
   (``index`` -1) with a higher one. From the first entry of a generation
   on, batches of older generations of that reply are dropped
   (``stale_generation``); the newer attempt continues from exactly what
   was forwarded before its opening entry (``actors.llm.resume`` reads the
   same stream in the same order), so the caller never hears two texts
   spliced, nor a span twice.
4. **At the socket too.** A token batch already queued when the fence moves
   is dropped when it would be written (:meth:`ReplyFence.still_current`),
   so nothing of a cut-off reply is written after the gateway read the
   interrupt.
5. **The live session only.** Tokens, and frames that wait for speech to
   end, are for the session they name; other frames go to the call's live
   session when they name none (:meth:`ReplyFence.admits_session`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Admission", "ReplyFence"]


class Admission(StrEnum):
    """What happens to one token batch (the values are ``outbound_dropped`` reasons)."""

    SEND = "send"
    FENCED = "fenced"
    DUPLICATE = "duplicate"
    AFTER_LAST = "after_last"
    STALE_GENERATION = "stale_generation"
    OPENED = "opened"  # a newer generation's opening entry: nothing to send, nothing lost


@dataclass(eq=False, slots=True)
class ReplyFence:
    """The fencing state of one relay session."""

    session_id: str = ""
    fence: int = 0  # seq of the latest final prompt or interrupt
    _last_index: dict[int, int] = field(default_factory=dict)  # reply_to -> index forwarded
    _finished: set[int] = field(default_factory=set)  # replies whose last batch was forwarded
    _generation: dict[int, int] = field(default_factory=dict)  # reply_to -> newest generation

    def caller_event(self, seq: int, *, cuts_reply: bool) -> None:
        """The caller event stamped ``seq`` arrived; ``cuts_reply`` for a final
        prompt or an interrupt, which fence every older reply at once."""
        if not cuts_reply:
            return
        self.fence = seq
        for reply_to in [r for r in self._last_index if r < seq]:
            del self._last_index[reply_to]
        self._finished = {r for r in self._finished if r >= seq}
        for reply_to in [r for r in self._generation if r < seq]:
            del self._generation[reply_to]

    def admits_session(self, session: str, *, strict: bool) -> bool:
        """Whether a frame naming ``session`` is for this one. ``strict`` frames
        (tokens, after_speech frames) must name it; others may name none."""
        if strict or session:
            return session == self.session_id
        return True

    def admit(self, reply_to: int, index: int, generation: int = 0) -> Admission:
        """Whether token batch ``index`` of the reply to ``reply_to``, written by
        attempt ``generation``, may be sent now. The first entry of a newer
        generation (its opening, ``index`` < 0) makes it the reply's newest."""
        if reply_to < self.fence:
            return Admission.FENCED
        newest = self._generation.get(reply_to, 0)
        if generation < newest:
            return Admission.STALE_GENERATION
        if generation > newest:
            self._generation[reply_to] = generation
        if index < 0:
            return Admission.OPENED
        if reply_to in self._finished:
            return Admission.AFTER_LAST
        if index <= self._last_index.get(reply_to, -1):
            return Admission.DUPLICATE
        return Admission.SEND

    def is_first(self, reply_to: int) -> bool:
        """True until a batch of the reply to ``reply_to`` was forwarded."""
        return reply_to not in self._last_index

    def forwarded(self, reply_to: int, index: int, *, last: bool = False) -> None:
        """Batch ``index`` of the reply to ``reply_to`` went to the socket's queue;
        ``last``: it was the reply's final batch."""
        self._last_index[reply_to] = index
        if last:
            self._finished.add(reply_to)

    def still_current(self, reply_to: int) -> bool:
        """At write time: the reply to ``reply_to`` has not been fenced since it was queued."""
        return reply_to >= self.fence
