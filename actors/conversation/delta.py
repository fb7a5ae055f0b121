"""What an ``llm.request`` carries of the history: what is new since the call's last one.

Carrying the whole history in every request made a call's request bytes grow
with the square of its turns (every turn re-sent everything before it). A
request now carries the history messages added since the call's previous
request, and a ``HistoryRef`` to the rest: where it starts (numbered from
the call's first message, so messages the caps drop from the front never
make a shifted prefix look like the old one), how many messages, and the
digest of exactly those messages. The LLM actor rebuilds the whole history
from what it saw of the call before, or from the call's state, which is
persisted before the request is published (``actors/llm/history.py``).

The reference covers what the previous request carried, as far as the
history still holds it unchanged: a rule that changes history inside that
range (a reply put in before prompts an earlier request already carried,
when the wait for it timed out; a refused prompt taken out) calls
``history_changed``, and the next request refers only to what comes before
the change. A change that did not say so would only change the digest, and
the LLM actor would read the state instead of using its own copy: the
digest, not the offsets, is what guarantees the model sees exactly the
conversation's history (``tests/conversation/test_request_history_property.py``
drives random calls and finds every request rebuilt from memory).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from actors.conversation.state import CallState
from actors.history import Message
from bus.messages import HistoryRef, history_digest


def request_history(
    state: CallState, extra: Sequence[Message] = ()
) -> tuple[HistoryRef, list[Message]]:
    """The reference and the new messages of the call's next request (counted in ``state``).

    ``extra``: messages the request ends with that are not in the history
    (a preemptive reply's interim words); the next request refers only to
    what the history holds.
    """
    count = min(max(state.sent_end - state.history_base, 0), len(state.history))
    state.requests += 1
    ref = HistoryRef(
        start=state.history_base,
        count=count,
        digest=history_digest(state.history[:count]),
        n=state.requests,
    )
    state.sent_end = state.history_base + len(state.history)
    # A copy: the state goes on changing after the request is built.
    return ref, copy.deepcopy([*state.history[count:], *extra])


def history_changed(state: CallState, index: int) -> None:
    """History changed from ``index`` on (a reply put in, cut or taken out):
    the call's next request refers only to what comes before it, so an LLM
    worker's copy of the last request still covers the reference."""
    state.sent_end = min(state.sent_end, state.history_base + index)
