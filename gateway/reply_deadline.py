"""The reply deadline: a caller who finished speaking hears something soon.

Pure (no I/O; the time is passed in). The gateway is the one part of a
deployment that certainly runs while a call is up, so it owns this timer:
when no conversation or LLM worker is alive, or the bus is backed up, the
caller would otherwise hear nothing at all.

1. A final prompt arms the deadline (``prompted``): the reply to it should
   start within ``deadline_s``.
2. Any text the agent sends the caller (a reply token, the filler line, a
   re-prompt) disarms it (``spoke``): the caller is hearing the agent.
3. Once the deadline passes while armed (``due``), the caller hears the
   apology once for that prompt (``apologised``), and the deadline is
   disarmed. The apology asks the caller to say it again, so the late reply
   to that prompt is withdrawn: never spoken (``ReplyFence.withdraw``), and
   the conversation is told (a ``call.interrupt`` marked ``withdrawn``) so
   that its history keeps none of it, as after a barge-in that heard
   nothing. The next final prompt arms the deadline again.

``deadline_s`` of 0 turns the rule off.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_REPLY_DEADLINE_S", "ReplyDeadline"]

DEFAULT_REPLY_DEADLINE_S = 4.0


@dataclass(eq=False, slots=True)
class ReplyDeadline:
    """The reply deadline of one relay session."""

    deadline_s: float = DEFAULT_REPLY_DEADLINE_S
    awaiting: int | None = None  # seq of the final prompt that waits for a reply
    due_at: float | None = None  # when the apology is due, None when disarmed

    def prompted(self, seq: int, now: float) -> None:
        """The caller's final prompt stamped ``seq`` arrived at ``now``."""
        if self.deadline_s <= 0:
            return
        self.awaiting = seq
        self.due_at = now + self.deadline_s

    def spoke(self) -> None:
        """The agent sent the caller text: nobody is waiting in silence."""
        self.awaiting = None
        self.due_at = None

    def due(self, now: float) -> bool:
        """Whether the apology is due at ``now``."""
        return self.due_at is not None and now >= self.due_at

    def apologised(self) -> int | None:
        """The apology went out; returns the seq of the prompt it answered."""
        seq = self.awaiting
        self.spoke()
        return seq
