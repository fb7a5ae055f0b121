"""Turns: opening one for the caller's words, asking for its reply, applying it.

A final prompt (or a finished DTMF entry) appends a user message, opens a
turn (``OpenTurn``: where its reply goes in history, what of it was heard)
and asks for a completion (``llm.request``). A turn opened while an older
one is outstanding *supersedes* it: the older one is cancelled
(``control.cancel``, reason ``superseded``) and the new request waits for its
result, at most ``REQUEST_WAIT_MS``, so the model sees what the caller heard.

The turn's ``llm.result`` brings the reply's history messages; they go in
right after the turn's user message, cut to what the caller heard when the
turn was interrupted or superseded (``actors.heard``, ``actors.history``).
A refused reply (``stop_reason: refusal``) takes its user message out of
history, so the model never sees the refused exchange again.

A turn may also be opened by adopting a speculation
(``actors.conversation.speculation``): its ``reply_to`` is then the
interim prompt's seq (``OpenTurn.speculative``), no request goes out (the
held one answers), and its result is applied here like any other.
"""

from __future__ import annotations

from typing import cast

import structlog

from actors.conversation.delta import history_changed, request_history
from actors.conversation.effects import FactOut, Step
from actors.conversation.limits import enforce
from actors.conversation.silence import arm_silence
from actors.conversation.state import (
    REQUEST,
    REQUEST_WAIT_MS,
    SILENCE,
    CallState,
    OpenTurn,
    Speaking,
)
from actors.heard import Heard, locate_heard
from actors.history import Message, truncate_reply
from bus.messages import ControlCancel, LlmRequest, LlmResult

log = structlog.get_logger()

# Tools after whose reply the LLM actor ends the call itself.
_ENDING_TOOLS = frozenset({"end_call", "transfer"})


def start_turn(
    step: Step, state: CallState, text: str, reply_to: int, *, prompt_ms: int = 0
) -> None:
    """Open a turn for the caller's ``text`` and ask for its reply.

    While an older turn's result is outstanding (it was just cancelled),
    the request waits for it, at most ``REQUEST_WAIT_MS``: the model then
    sees what the caller heard of that turn.
    """
    for t in state.open_turns:
        if not t.superseded:
            t.superseded = True
            cancel(step, state, t, "superseded")
    waiting = bool(state.open_turns)
    state.history.append({"role": "user", "content": text})
    state.turn += 1
    state.reply_to = reply_to
    turn = OpenTurn(
        turn=state.turn, reply_to=reply_to, index=len(state.history), prompt_ms=prompt_ms
    )
    state.open_turns.append(turn)
    state.speaking = None
    state.timers.pop(SILENCE, None)
    if waiting:
        turn.requested = False
        state.timers[REQUEST] = int(step.now + REQUEST_WAIT_MS)
        log.info("request_waits_for_cancelled_turn", reply_to=reply_to)
        return
    request(step, state, turn)


def request(step: Step, state: CallState, turn: OpenTurn) -> None:
    """Ask for ``turn``'s reply (and record the turn's facts).

    The request carries the history messages new since the call's last
    request and a reference to the rest (``delta``).
    """
    turn.requested = True
    state.timers.pop(REQUEST, None)
    reply_to = turn.reply_to
    enforce(step, state, seq=reply_to)  # the request carries only what the caps keep
    ref, new = request_history(state)
    message = LlmRequest(
        system=step.config.system_prompt,
        messages=new,
        reply_to=reply_to,
        prompt_ms=turn.prompt_ms or None,
        history=ref,
    )
    session, gateway, turn_no = state.session, state.gateway, state.turn
    step.send(message, state.call, session=session, gateway=gateway, seq=reply_to, turn=turn_no)
    # The turn's facts ride in the request's round trip (bus.facts).
    for name, t_ms in (("prompt_applied", step.wall_ms), ("llm_requested", None)):
        fact = FactOut(
            name,
            state.call,
            {"reply_to": reply_to},
            session=session,
            gateway=gateway,
            seq=reply_to,
            turn=turn_no,
            t_ms=t_ms,
        )
        step.effects.append(fact)
    log.info(
        "prompt_applied",
        turn=state.turn,
        seq=reply_to,
        messages=ref.count + len(new),
        new_messages=len(new),
        open_turns=len(state.open_turns),
    )


def apply_result(step: Step, state: CallState, result: LlmResult, *, turn_no: int) -> None:
    """Put turn ``turn_no``'s reply into history, cut to what the caller heard of it."""
    turn = next((t for t in state.open_turns if t.turn == turn_no), None)
    if turn is None:
        log.info(
            "llm_result_stale",
            result_turn=turn_no,
            current_turn=state.turn,
            answered_turn=state.answered_turn,
        )
        return
    text = result.text
    messages: list[Message]
    if result.messages is not None:
        messages = cast(list[Message], list(result.messages))
    else:
        # A result without "messages": its text is the whole reply.
        messages = [{"role": "assistant", "content": text}] if text else []
    if result.stop_reason == "refusal":
        _forget_refused_prompt(state, turn)
    heard = _heard(step, turn, text)
    kept = truncate_reply(messages, text, heard.text if heard is not None else None)
    history_changed(state, turn.index)
    state.history[turn.index : turn.index] = kept
    state.open_turns.remove(turn)
    state.shift(turn.index, len(kept))
    state.answered_turn = max(state.answered_turn, turn.turn)
    spoken = heard.text if heard is not None else text
    if not turn.superseded:
        state.speaking = Speaking(
            start=turn.index,
            count=len(kept),
            text=spoken,
            played=turn.played,
            reply_to=turn.reply_to,
            applied_ms=step.wall_ms,
            prompt_seq=turn.prompt_seq,
        )
        tools = {c.name for c in result.tool_calls}
        if tools & _ENDING_TOOLS and not result.cancelled:
            state.ending = True  # the LLM actor ends the call after the goodbye
        arm_silence(step, state, "" if turn.interrupted else text)
    current = state.current()
    if current is not None and not current.requested and len(state.open_turns) == 1:
        # The older turns are settled: ask for the waiting turn's reply.
        request(step, state, current)
    log.info(
        "llm_result_applied",
        chars=len(text),
        kept_chars=len(spoken),
        heard=heard.method if heard is not None else "complete",
        superseded=turn.superseded,
        messages=len(kept),
        cancelled=result.cancelled,
        stop_reason=result.stop_reason,
        error=result.error,
        timings=result.timings.to_body(),
        usage=result.usage.to_body(),
    )


def _forget_refused_prompt(state: CallState, turn: OpenTurn) -> None:
    """Drop the user message a refused reply answered.

    Anthropic: after ``stop_reason: refusal`` the refused exchange must not
    be sent again, or the refusals continue. The LLM actor's result for it
    carries only the fallback line it spoke instead; the words that drew
    the refusal leave history here.
    """
    at = turn.index - 1
    if at >= 0 and state.history[at].get("role") == "user":
        history_changed(state, at)
        del state.history[at]
        state.shift(at, -1)
        log.info("refused_prompt_forgotten", turn=turn.turn)


def _heard(step: Step, turn: OpenTurn, text: str) -> Heard | None:
    """What the caller heard of ``turn``'s reply ``text``; None: all of it."""
    if turn.interrupted:
        return locate_heard(
            text,
            played=turn.played,
            fragment=turn.fragment,
            duration_ms=turn.duration_ms,
            chars_per_second=step.config.speech_chars_per_second,
        )
    if turn.superseded:
        # No interrupt: only tokensPlayed says the caller heard any of it.
        return locate_heard(text, played=turn.played)
    return None


def end_open_turns(step: Step, state: CallState, reason: str) -> None:
    """The socket is gone: nobody hears the replies still running."""
    for t in state.open_turns:
        t.superseded = True
        cancel(step, state, t, reason)


def cancel(step: Step, state: CallState, turn: OpenTurn, reason: str) -> None:
    """Ask the LLM workers to stop ``turn``'s generation (once per turn)."""
    if turn.cancelled:
        return
    turn.cancelled = True
    step.send(
        ControlCancel(reply_to=turn.reply_to, reason=reason),
        state.call,
        session=state.session,
        gateway=state.gateway,
        seq=turn.reply_to,
        turn=turn.turn,
    )
    log.info(
        "generation_cancel_requested",
        reply_to=turn.reply_to,
        cancel_turn=turn.turn,
        reason=reason,
    )
