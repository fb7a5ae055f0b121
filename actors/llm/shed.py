"""Load shedding of held requests: a speculation taken too late is not run.

A held request (``held: true``, a speculation the conversation started on an
interim prompt: ``actors.conversation.speculation``) is worth running only
while it can finish before the caller does. When the LLM stream is so far
behind that a worker takes one more than ``speculation_max_lag_ms`` after it
was written (its envelope's ``ts``), the workers are the bottleneck, and
running it would only delay the final prompts' own requests queued behind
it. So it is dropped unrun (:func:`shed_lag` decides; the rule is pure):

- never one already adopted (``control.adopt`` seen: the caller's turn now
  waits for it), nor one delivered before (a worker died holding it: the
  failover must go on), nor one that already streamed something;
- what is written instead (:func:`shed_items`): an ``llm.result`` marked
  ``shed``, so the conversation forgets the speculation and answers the
  final prompt as usual (or, had it adopted it meanwhile, asks again
  unheld), and a ``speculation_shed`` fact (``reason: "queue_lag"``,
  ``lag_ms``). Nothing goes to the gateway: it holds nothing of the reply.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.llm.stream import ReplyOut
from bus.base import Fields
from bus.envelope import Envelope
from bus.facts import fact_item
from bus.messages import LlmResult


@dataclass(frozen=True, slots=True)
class Taken:
    """What the rule needs to know of a request as a worker takes it."""

    held: bool
    written_ms: float  # the envelope's ts (0: not known)
    now_ms: float
    adopted: bool
    deliveries: int = 1
    streamed: bool = False  # some of its reply was sent already


def shed_lag(taken: Taken, *, limit_ms: float) -> float | None:
    """How late ``taken`` is (ms) when it is to be shed; None: run it."""
    if (
        limit_ms <= 0
        or not taken.held
        or taken.adopted
        or taken.deliveries > 1
        or taken.streamed
        or not taken.written_ms
    ):
        return None
    lag = taken.now_ms - taken.written_ms
    return lag if lag > limit_ms else None


def shed_items(out: ReplyOut, env: Envelope, lag_ms: float) -> list[tuple[str, Fields]]:
    """The entries that stand for a shed request: its result and its fact."""
    result = LlmResult(text="", reply_to=out.reply_to, cancelled=True, shed=True)
    fact = fact_item(
        out.keys,
        "speculation_shed",
        call=env.call,
        session=env.session,
        turn=env.turn,
        gateway=env.gateway,
        seq=env.seq,
        reply_to=out.reply_to,
        reason="queue_lag",
        lag_ms=round(lag_ms),
    )
    return [(out.keys.calls_for(env.call), out.envelope(result).encode()), fact]
