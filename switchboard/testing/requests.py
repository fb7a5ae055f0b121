"""The whole conversation an ``llm.request`` asks the model to complete.

A request carries only the history new since its call's previous request
and a reference to the rest (``actors/llm/history.py``). Tests that check
what the model was asked read it back here, the way an LLM worker would
rebuild it: from the call's earlier requests on the bus, else from the
call's state key.
"""

from __future__ import annotations

from actors.llm.history import Histories, resolve_in_order
from bus.base import Bus
from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.messages import HistoryMessage, LlmRequest


async def requested_messages(bus: Bus, keys: Keys, request: Envelope) -> list[HistoryMessage]:
    """The messages the model is sent for ``request`` (an ``llm.request`` envelope on ``bus``)."""
    if request.kind != Kind.LLM_REQUEST:
        raise ValueError(f"not an llm.request: {request.kind}")
    earlier: list[tuple[str, LlmRequest]] = []
    for entry in await bus.range(keys.llm_for(request.call)):
        env = Envelope.decode(entry.fields)
        if env.kind != Kind.LLM_REQUEST or env.call != request.call:
            continue
        earlier.append((env.call, LlmRequest.from_body(env.body)))
        if env == request:
            resolved = resolve_in_order(earlier)[-1]
            if resolved is not None:
                return resolved
            break
    # Not rebuilt from the stream (trimmed, or not on it): from the state.
    histories = Histories(keys, cache_calls=0, wait_s=0.0)
    return await histories.messages(bus, request.call, LlmRequest.from_body(request.body))
