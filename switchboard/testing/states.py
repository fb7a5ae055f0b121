"""Waiting for the conversation's persisted call states to settle.

A caller hears a reply's last token before the LLM worker's result has
been applied by the conversation, so a test that reads call states right
after its calls ended can see a history one answer short. These helpers
wait for the event (the answer in the state), not for a length of time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import trio

from bus.base import Bus
from bus.keys import Keys

__all__ = ["settled_states"]

POLL_S = 0.05


async def settled_states(
    bus: Bus, keys: Keys, calls: Sequence[str], *, messages: int, patience_s: float
) -> dict[str, str | None]:
    """Each call's persisted state once its history holds ``messages`` messages
    or more; after ``patience_s`` (a hang guard), the states as they are, for
    the caller's asserts to report."""
    states: dict[str, str | None] = {}
    with trio.move_on_after(patience_s):
        while True:
            states = {sid: await bus.get(keys.state(sid)) for sid in calls}
            if all(raw and len(json.loads(raw)["history"]) >= messages for raw in states.values()):
                return states
            await trio.sleep(POLL_S)
    return states
