"""Caps on what one call's state may hold: bounded work per entry and per call.

A caller controls how much goes into its call's state: every ``tokensPlayed``
chunk, every prompt and every key press is stored. Without a bound one caller
can grow its state until applying a single entry (matching what was heard at
a barge-in, serialising the state) blocks the worker that owns the partition,
and with it every other call on that partition. So after each entry the
state is brought back under the caps of ``ConversationConfig``:

- ``max_played_chars``: the ``tokensPlayed`` text kept per reply (the open
  turns' and the reply still playing); the oldest chunks go first. A reply
  is at most ``max_tokens`` long, so a real call never reaches it.
- ``max_history_messages`` and ``max_history_chars``: the history; the oldest
  messages go first, never a message a turn still points at, and never half
  of a ``tool_use``/``tool_result`` pair.
- the DTMF buffer: ``keypad`` keeps at most ``DTMF_MAX`` keys of one entry.

What is dropped is counted in ``CallState.dropped`` (kept with the state) and
reported as a ``state_capped`` fact per entry that dropped anything, so an
operator sees a call being cut down.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import structlog

from actors.conversation.effects import FactOut, Step
from actors.conversation.state import CallState
from actors.history import Message

log = structlog.get_logger()

# Keys of one DTMF entry kept; more is a stuck key or a flood.
DTMF_MAX = 64


def enforce(step: Step, state: CallState, *, seq: int = 0) -> None:
    """Bring ``state`` under the configured caps; count and report what went."""
    dropped: Counter[str] = Counter()
    limit = step.config.max_played_chars
    for turn in state.open_turns:
        dropped["played_chunks"] += cap_played(turn.played, limit)
    if state.speaking is not None:
        dropped["played_chunks"] += cap_played(state.speaking.played, limit)
    dropped["history_messages"] += _cap_history(step, state)
    dropped.update(state.pending_drops)
    state.pending_drops = {}
    dropped = +dropped  # keep the positive counts only
    if not dropped:
        return
    for what, n in dropped.items():
        state.dropped[what] = state.dropped.get(what, 0) + n
    log.warning("state_capped", seq=seq, **dict(dropped))
    step.effects.append(
        FactOut(
            "state_capped",
            state.call,
            {**dict(dropped), "total": dict(state.dropped)},
            session=state.session,
            gateway=state.gateway,
            seq=seq,
            turn=state.turn,
        )
    )


def cap_played(played: list[str], limit: int) -> int:
    """Drop the oldest chunks of ``played`` until it holds at most ``limit`` chars.

    The newest chunk is always kept (cut to its last ``limit`` chars): it is
    where the caller stopped hearing. Returns how many chunks went.
    """
    total = sum(len(p) for p in played)
    if total <= limit:
        return 0
    drop = 0
    while drop < len(played) - 1 and total > limit:
        total -= len(played[drop])
        drop += 1
    del played[:drop]
    if played and len(played[-1]) > limit:
        played[-1] = played[-1][-limit:] if limit > 0 else ""
    return drop


def _size(message: Message) -> int:
    content: Any = message.get("content")
    if isinstance(content, str):
        return len(content)
    return len(str(content))


def _has_tool_result(message: Message) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def _cap_history(step: Step, state: CallState) -> int:
    """Drop the oldest history messages over the caps; how many went."""
    history = state.history
    max_messages = step.config.max_history_messages
    max_chars = step.config.max_history_chars
    total = sum(_size(m) for m in history)
    if len(history) <= max_messages and total <= max_chars:
        return 0
    # Never drop a message a turn still points at: an open turn's user
    # message (just before its index) and the reply still playing.
    floor = len(history)
    for t in state.open_turns:
        floor = min(floor, t.index - 1)
    if state.speaking is not None:
        floor = min(floor, state.speaking.start)
    # Keep the newest message whatever its size: it is what the caller just said.
    floor = max(0, min(floor, len(history) - 1))
    drop = 0
    while drop < floor and (len(history) - drop > max_messages or total > max_chars):
        total -= _size(history[drop])
        drop += 1
    # A tool_result answers the tool_use just dropped: it goes with it.
    while drop < floor and _has_tool_result(history[drop]):
        drop += 1
    if drop == 0:
        return 0
    del history[:drop]
    state.history_base += drop  # requests number history messages from the call's first
    state.shift(0, -drop)
    return drop
