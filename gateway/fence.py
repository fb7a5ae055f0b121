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
6. **Withdrawn replies.** When the reply deadline's apology asked the caller
   to say prompt ``S`` again (:mod:`gateway.reply_deadline`), a late reply to
   ``S`` (or to an older prompt) is dropped like a fenced one
   (:meth:`ReplyFence.withdraw`): the caller would hear an answer after
   being asked to repeat, then the answer to the repeat too.
7. **Held replies.** A speculative reply (``actors.conversation.speculation``)
   answers an interim prompt: its ``reply_to`` is that prompt's ``seq`` and
   its token batches are marked ``held``. They are kept here (``HOLD``,
   :meth:`ReplyFence.keep`), never sent, also once a final prompt moved the
   fence past their ``reply_to``. ``gateway.adopt (reply_to P, seq F)`` says
   the reply answers the final prompt ``F``: if neither an interrupt nor a
   newer final prompt came after ``F`` (the fence is still ``F``) and no
   interrupt came after ``P``, what is kept is released at once
   (:meth:`ReplyFence.adopt`) and later batches of ``P`` pass as they come;
   from then on the reply is fenced, de-duplicated and reported (its
   ``first_token_sent``) as the reply to ``F`` (:meth:`ReplyFence.answers`).
   Otherwise it is dropped. An interrupt drops every held reply older than
   it (and one that comes later still); a reply that starts being sent
   drops the held replies older than the prompt it answers; at most
   ``MAX_HELD_REPLIES`` are kept (the oldest go) and ``MAX_HELD_BATCHES``
   batches each (a reply past that is dropped whole: released with a gap,
   the caller would hear it garbled). So no batch of a speculation that was
   not adopted ever reaches the caller; the session's end drops them all.
   Generations (rule 3) apply to held batches as to others: what is kept is
   what ``actors.llm.resume`` folds, so a resumed speculation continues it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["MAX_HELD_BATCHES", "MAX_HELD_REPLIES", "Admission", "HeldBatch", "ReplyFence"]

MAX_HELD_REPLIES = 4  # speculations are at most 3 per utterance, one at a time
MAX_HELD_BATCHES = 1024  # a minute of speech at 50 ms per batch


class Admission(StrEnum):
    """What happens to one token batch (the values are ``outbound_dropped`` reasons)."""

    SEND = "send"
    HOLD = "hold"
    FENCED = "fenced"
    DUPLICATE = "duplicate"
    AFTER_LAST = "after_last"
    STALE_GENERATION = "stale_generation"
    OPENED = "opened"  # a newer generation's opening entry: nothing to send, nothing lost


@dataclass(frozen=True, slots=True)
class HeldBatch:
    """A token batch of a held reply, kept until the reply is adopted or dropped."""

    index: int
    text: str
    last: bool
    turn: int  # the envelope's turn, for the facts once sent


@dataclass(eq=False, slots=True)
class ReplyFence:
    """The fencing state of one relay session."""

    session_id: str = ""
    fence: int = 0  # seq of the latest final prompt or interrupt
    _last_index: dict[int, int] = field(default_factory=dict)  # reply_to -> index forwarded
    _finished: set[int] = field(default_factory=set)  # replies whose last batch was forwarded
    _generation: dict[int, int] = field(default_factory=dict)  # reply_to -> newest generation
    _held: dict[int, list[HeldBatch]] = field(default_factory=dict)  # reply_to -> kept batches
    _adopted: dict[int, int] = field(default_factory=dict)  # held reply_to -> final prompt seq
    _voided: int = 0  # seq of the latest interrupt: older held replies never play
    _spoiled: set[int] = field(default_factory=set)  # held replies dropped for their size

    def caller_event(self, seq: int, *, cuts_reply: bool, interrupt: bool = False) -> None:
        """The caller event stamped ``seq`` arrived; ``cuts_reply`` for a final
        prompt or an interrupt, which fence every older reply at once;
        ``interrupt`` also drops every held reply (they answer older words)."""
        if interrupt:
            self._voided = seq
            self._held.clear()
            self._spoiled.clear()
        if not cuts_reply:
            return
        self.fence = seq
        for reply_to in [r for r in self._last_index if self.answers(r) < seq]:
            del self._last_index[reply_to]
        self._finished = {r for r in self._finished if self.answers(r) >= seq}
        for reply_to in [
            r for r in self._generation if self.answers(r) < seq and r not in self._held
        ]:
            del self._generation[reply_to]

    def withdraw(self, seq: int) -> None:
        """The apology for the final prompt ``seq`` went out: its reply, and any
        older one, never plays (``fenced``, at admission and at the socket)."""
        self.fence = max(self.fence, seq + 1)

    def answers(self, reply_to: int) -> int:
        """The caller event the reply to ``reply_to`` answers: the final prompt
        that adopted it for a held reply, else ``reply_to`` itself."""
        return self._adopted.get(reply_to, reply_to)

    def admits_session(self, session: str, *, strict: bool) -> bool:
        """Whether a frame naming ``session`` is for this one. ``strict`` frames
        (tokens, after_speech frames) must name it; others may name none."""
        if strict or session:
            return session == self.session_id
        return True

    def admit(
        self, reply_to: int, index: int, generation: int = 0, *, held: bool = False
    ) -> Admission:
        """Whether token batch ``index`` of the reply to ``reply_to``, written by
        attempt ``generation``, may be sent now. The first entry of a newer
        generation (its opening, ``index`` < 0) makes it the reply's newest.
        ``held``: of a speculative reply (``HOLD`` until it is adopted)."""
        if index < 0:
            # An opening carries no text: it only makes its generation the
            # reply's newest (also for a reply kept or fenced: the resuming
            # attempt writes it without knowing either).
            if generation < self._generation.get(reply_to, 0):
                return Admission.STALE_GENERATION
            self._generation[reply_to] = generation
            return Admission.OPENED
        holding = held and reply_to not in self._adopted
        if holding:
            if reply_to < self._voided or reply_to in self._spoiled:
                return Admission.FENCED
        elif self.answers(reply_to) < self.fence:
            return Admission.FENCED
        newest = self._generation.get(reply_to, 0)
        if generation < newest:
            return Admission.STALE_GENERATION
        if generation > newest:
            self._generation[reply_to] = generation
        if holding:
            return self._admit_held(reply_to, index)
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
        ``last``: it was the reply's final batch. Held replies older than the
        prompt it answers will never be adopted now: they are dropped."""
        self._last_index[reply_to] = index
        if last:
            self._finished.add(reply_to)
        answered = self.answers(reply_to)
        for stale in [r for r in self._held if r < answered]:
            del self._held[stale]
        self._spoiled = {r for r in self._spoiled if r >= answered}

    def still_current(self, reply_to: int) -> bool:
        """At write time: the reply to ``reply_to`` has not been fenced since it was queued."""
        return self.answers(reply_to) >= self.fence

    def _admit_held(self, reply_to: int, index: int) -> Admission:
        kept = self._held.get(reply_to)
        if kept is not None and index <= kept[-1].index:
            return Admission.DUPLICATE
        if kept is not None and kept[-1].last:
            return Admission.AFTER_LAST
        return Admission.HOLD

    def keep(self, reply_to: int, batch: HeldBatch) -> bool:
        """Keep a batch admitted as ``HOLD``; False when the reply had to be
        dropped instead (too many batches: it could never be released whole)."""
        kept = self._held.get(reply_to)
        if kept is None:
            while len(self._held) >= MAX_HELD_REPLIES:
                del self._held[min(self._held)]
            kept = self._held[reply_to] = []
        if len(kept) >= MAX_HELD_BATCHES:
            del self._held[reply_to]
            self._spoiled.add(reply_to)
            return False
        kept.append(batch)
        return True

    def adopt(self, reply_to: int, seq: int) -> list[HeldBatch] | None:
        """The held reply to ``reply_to`` answers the final prompt ``seq``: the
        batches to send now, in order (then admit and forward each as usual);
        None when it must not play (the caller spoke or barged in since)."""
        kept = self._held.pop(reply_to, [])
        if seq < self.fence or reply_to < self._voided or reply_to in self._spoiled:
            return None
        self._adopted[reply_to] = seq
        # Kept once fenced too, so its late batches are fenced, not held; the
        # oldest go (they lie far below the fence).
        while len(self._adopted) > MAX_HELD_REPLIES:
            del self._adopted[next(iter(self._adopted))]
        return kept
