"""Any call, any order of events: every request rebuilds to the conversation's history.

Hypothesis drives the turn rules through random calls (prompts, barge-ins,
what was played, replies that finish, are cancelled or refused, key
presses, the timers, sessions that drop and resume) under small history
caps, so messages are dropped
from the front, prompts are superseded and refused exchanges leave. Each
request is rebuilt as an LLM worker would: from its copy of the call's
previous request, else from the state persisted with the request. It must
come out as exactly the history the conversation held when it asked, and
a worker that saw every request must never need the state except where a
refused prompt was taken out of what an earlier request carried.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.config import ConversationConfig
from actors.conversation import CallState, Incoming, Outbound, apply
from actors.llm.history import HistoryCache, covered
from bus.messages import (
    CallClosed,
    CallDtmf,
    CallInfo,
    CallInterrupt,
    CallPrompt,
    CallSetup,
    ConversationTimer,
    LlmRequest,
    LlmResult,
)

CALL = "CA00000000000000000000000000000099"
SESSION = "VX00000000000000000000000000000099"

KINDS = ["say"] * 4 + ["result"] * 4
KINDS += ["partial", "played", "interrupt", "dtmf", "timer", "resume"]
EVENTS = st.tuples(st.sampled_from(KINDS), st.integers(min_value=0, max_value=4))
ARGS = {
    "say": ["yes", "a table for two", "at eight", "no thanks", "what time is it"],
    "partial": ["a table", "a table for", "at", "no", "what"],
    "played": ["reply to turn", "which goes on", "for a while.", "Hello.", "x"],
    "interrupt": ["reply to", "which goes", "Hello", "zzz", ""],
    "result": ["done", "done", "cancelled", "refusal", "tool"],
    "dtmf": ["1", "2", "#", "3", "#"],
    "timer": ["request", "dtmf", "request", "dtmf", "request"],
    "resume": ["closed", "closed", "open", "closed", "open"],
}


def _event(kind: str, arg: str, state: CallState, now: float) -> tuple[Any, int] | None:
    """The message for one random event and the turn it is stamped with."""
    if kind == "say":
        return CallPrompt(arg, "en-US", True), 0
    if kind == "partial":
        return CallPrompt(arg, "en-US", False), 0
    if kind == "played":
        return CallInfo(name="tokensPlayed", value=arg), 0
    if kind == "interrupt":
        return CallInterrupt(arg, 400.0), 0
    if kind == "dtmf":
        return CallDtmf(arg), 0
    if kind == "timer":
        deadline = state.timers.get(arg)
        return None if deadline is None else (ConversationTimer(arg, deadline), 0)
    # The oldest turn whose request went out: the one a worker answers first.
    turn = next((t for t in state.open_turns if t.requested), None)
    if turn is None:
        return None
    reply = f"reply to turn {turn.turn}, which goes on for a while."
    messages: list[Any] | None = None
    if arg == "tool":
        use = {"type": "tool_use", "id": f"t{turn.turn}", "name": "lookup", "input": {}}
        done = {"type": "tool_result", "tool_use_id": f"t{turn.turn}", "content": "ok"}
        messages = [
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": [done]},
            {"role": "assistant", "content": reply},
        ]
    result = LlmResult(
        text=reply,
        reply_to=turn.reply_to,
        cancelled=arg == "cancelled",
        stop_reason="refusal" if arg == "refusal" else "end_turn",
        messages=messages,
    )
    return result, turn.turn


@settings(max_examples=200, deadline=None)
@given(st.lists(EVENTS, min_size=10, max_size=80), st.integers(min_value=3, max_value=12))
def test_every_request_rebuilds_to_the_history_the_conversation_held(
    events: list[tuple[str, int]], max_messages: int
) -> None:
    config = ConversationConfig(
        system_prompt="Test.",
        welcome_greeting="Hello.",
        silence_reprompt_s=0,
        max_history_messages=max_messages,
        max_history_chars=400,
    )
    worker = HistoryCache(max_calls=1)
    now, seq, state = 1_000_000.0, 0, None
    misses = refused = sessions = 0
    session = SESSION
    for kind, pick in [("setup", 0), *events]:
        arg = ARGS.get(kind, [""] * 5)[pick]
        if kind == "resume":
            # A new session of the call (its socket dropped), its old one
            # closed first or not (a killed gateway sends no call.closed).
            if arg == "closed":
                seq += 1
                closed = Incoming(CallClosed(code=1006), CALL, session, "gw1", seq=seq)
                state = apply(state, closed, config=config, now=now, wall_ms=now).state or state
            sessions += 1
            session = f"VX{sessions:032d}"
            kind = "setup"
        if kind == "setup":
            event: tuple[Any, int] | None = (CallSetup(session_id=session, call_sid=CALL), 0)
        else:
            assert state is not None
            event = _event(kind, arg, state, now)
        if event is None:
            continue
        message, turn = event
        if isinstance(message, ConversationTimer):
            now = max(now, float(message.deadline_ms))
        now += 100.0
        seq += 1
        incoming = Incoming(message, CALL, session, "gw1", seq=seq, turn=turn)
        applied = apply(state, incoming, config=config, now=now, wall_ms=now)
        state = applied.state or state
        assert state is not None
        refused += isinstance(message, LlmResult) and message.stop_reason == "refusal"
        # The state as persisted with the entry (persist, then publish).
        persisted = CallState.from_json(state.to_json())
        for out in applied.effects:
            if not (isinstance(out, Outbound) and isinstance(out.message, LlmRequest)):
                continue
            request = out.message
            ref = request.history
            assert ref is not None and ref.n == persisted.requests
            whole = worker.rebuild(CALL, request)
            if whole is None:
                misses += 1
                part = covered(persisted.history_base, persisted.history, ref)
                assert part is not None, "the persisted state holds what the request refers to"
                whole = part + list(request.messages)
            assert whole == persisted.history
            worker.remember(CALL, ref.start, whole)
    assert misses == 0
