"""The facts of one request, written with its result (no extra round trip).

``request_taken``, ``provider_first_token``, ``provider_error``,
``tool_called`` (one per tool use), ``generation_cancelled`` (stamped when
the cancel was read) and ``completion_done``; see ``bus/facts.py``.
"""

from __future__ import annotations

from typing import Any

from actors.llm.result import Outcome
from bus.base import Fields
from bus.envelope import Envelope
from bus.facts import fact_item
from bus.keys import Keys


def request_facts(
    keys: Keys, env: Envelope, reply_to: int, outcome: Outcome
) -> list[tuple[str, Fields]]:
    """The facts of the request ``env`` as ``append_many`` items."""

    def item(name: str, **fields: Any) -> tuple[str, Fields]:
        return fact_item(
            keys,
            name,
            call=env.call,
            session=env.session,
            turn=env.turn,
            gateway=env.gateway,
            seq=env.seq,
            reply_to=reply_to,
            **fields,
        )

    facts = [item("request_taken", t_ms=outcome.taken_ms)]
    if outcome.first_token_ms is not None:
        facts.append(item("provider_first_token", t_ms=outcome.first_token_ms))
    if outcome.error is not None:
        facts.append(item("provider_error", error=outcome.error))
    for tool_outcome in outcome.messages().outcomes:
        # The tool's name is the fact's ``name`` field (through ``extra``:
        # ``fact_item``'s own ``name`` parameter is the fact's name).
        extra = {"name": tool_outcome.name}
        facts.append(item("tool_called", is_error=tool_outcome.is_error, extra=extra))
    if outcome.cancelled is not None:
        facts.append(
            item("generation_cancelled", t_ms=outcome.cancelled_ms, reason=outcome.cancelled)
        )
    facts.append(
        item(
            "completion_done",
            usage=outcome.bus_usage().to_body(),
            stop_reason=outcome.stop_reason,
            error=outcome.error,
            cancelled=outcome.cancelled is not None,
            # A speculation's (actors.conversation.speculation): only when held.
            **({"held": True} if outcome.held else {}),
        )
    )
    return facts
