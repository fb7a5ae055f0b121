"""Envelopes the LLM actor tests hand to the actor: requests and cancels."""

from __future__ import annotations

from typing import Any

from bus.envelope import Envelope, Kind


def llm_request(
    call: str,
    messages: list[dict[str, Any]],
    *,
    seq: int = 5,
    session: str = "VX1",
    turn: int = 2,
) -> Envelope:
    """An ``llm.request`` of ``call`` answering caller event ``seq`` (gateway ``gw1``)."""
    return Envelope(
        kind=Kind.LLM_REQUEST,
        call=call,
        session=session,
        gateway="gw1",
        seq=seq,
        turn=turn,
        body={"system": "Be brief.", "reply_to": seq, "messages": messages},
    )


def control_cancel(
    call: str, reply_to: int, *, reason: str = "interrupt", session: str = "VX1", turn: int = 2
) -> Envelope:
    """A ``control.cancel`` of the reply to ``reply_to``."""
    return Envelope(
        kind=Kind.CONTROL_CANCEL,
        call=call,
        session=session,
        turn=turn,
        body={"reply_to": reply_to, "reason": reason},
    )
