"""The turn rules: ``apply(state, message, ...) -> Applied``, pure.

One entry of the call's partition stream (a caller event, an LLM result, a
timer that fired) is applied to the call's state, which it changes in
place, and yields the messages to publish (``effects``). No bus, no clock, no
context variable: the time comes in as ``now`` (timer clock, ms) and
``wall_ms`` (facts), so the rules run the same in a test, in a replay and on
the next owner of the partition. The shell (``actor``) publishes the effects,
then persists the state.

Where each rule lives: ``turns`` (opening a turn, the request, the result,
superseding), ``bargein`` (interrupt, ``tokensPlayed``), ``keypad`` (DTMF),
``silence`` (re-prompts and goodbye); this module: setup and resume, prompts,
the socket closing, timers.

Trust: caller speech only ever becomes a ``user`` message. The system prompt
comes from the configuration alone, never from anything a caller said.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from actors.config import ConversationConfig
from actors.conversation.bargein import apply_info, apply_interrupt
from actors.conversation.effects import Effect, Step
from actors.conversation.keypad import apply_dtmf, entry_timed_out, take_buffered
from actors.conversation.silence import arm_silence, caller_spoke, on_silence
from actors.conversation.state import DTMF, REQUEST, SILENCE, CallState, Speaking
from actors.conversation.turns import apply_result, end_open_turns, request, start_turn
from bus.envelope import Envelope, Kind

log = structlog.get_logger()

# A timer that fired (conversation -> its own partition stream).
TIMER_KIND = "conversation.timer"


@dataclass(slots=True)
class Applied:
    """What applying one message did: the state to persist (None: nothing
    changed, nothing to persist) and the messages to publish first."""

    state: CallState | None
    effects: list[Effect] = field(default_factory=list)


def apply(
    state: CallState | None,
    env: Envelope,
    *,
    config: ConversationConfig,
    now: float,
    wall_ms: float,
) -> Applied:
    """Apply ``env`` to ``state`` (None: the call has no state yet).

    ``now``: the timer clock in ms; ``wall_ms``: wall-clock ms for facts.
    """
    step = Step(config=config, now=now, wall_ms=wall_ms)
    new = _dispatch(step, state, env)
    return Applied(new, step.effects)


def _dispatch(step: Step, state: CallState | None, env: Envelope) -> CallState | None:
    kind = env.kind
    if kind == Kind.CALL_SETUP:
        return apply_setup(step, state, env)
    if kind in _ANSWERS:
        if state is None:
            _without_call(kind)
            return None
        if kind == Kind.LLM_RESULT:
            apply_result(step, state, env)
        elif kind == Kind.CALL_CLOSED:
            apply_closed(step, state, env)
        else:
            apply_timer(step, state, env)
        return state
    if kind == Kind.CALL_PROMPT and env.body.get("last", True) is not True:
        return None  # interim prompt: nothing changes, nothing to persist
    if kind not in _CALLER_EVENTS:
        log.warning("unexpected_kind", kind=kind)
        return None
    state = state or new_state(env)
    if kind == Kind.CALL_PROMPT:
        apply_prompt(step, state, env)
    elif kind == Kind.CALL_INTERRUPT:
        apply_interrupt(step, state, env)
    elif kind == Kind.CALL_INFO:
        apply_info(state, env)
    elif kind == Kind.CALL_DTMF:
        apply_dtmf(step, state, env)
    else:
        log.warning("caller_error", seq=env.seq, description=env.body.get("description"))
    return state


def _without_call(kind: str) -> None:
    """A result, close or timer for a call with no state (expired, or never set up)."""
    if kind == Kind.LLM_RESULT:
        log.warning("llm_result_without_call")
    elif kind == Kind.CALL_CLOSED:
        log.info("call_closed_without_state")
    else:
        log.info("timer_without_call")


# Entries about a call that must already have a state.
_ANSWERS = frozenset({Kind.LLM_RESULT, Kind.CALL_CLOSED, TIMER_KIND})
_CALLER_EVENTS = frozenset(
    {Kind.CALL_PROMPT, Kind.CALL_INTERRUPT, Kind.CALL_INFO, Kind.CALL_DTMF, Kind.CALL_ERROR}
)


def new_state(env: Envelope) -> CallState:
    return CallState(call=env.call, session=env.session, gateway=env.gateway)


def apply_setup(step: Step, state: CallState | None, env: Envelope) -> CallState:
    """A session starts: a new call, or a known call resumed on a new socket."""
    resumed = state is not None
    if state is None:
        state = new_state(env)
    else:
        # A new session of a known call (after a failed session, or a
        # handoff back to the agent): same history, new socket, maybe a
        # different gateway. Replies still running for the old socket
        # will never be heard.
        end_open_turns(step, state, "hangup")
        state.session = env.session
        state.gateway = env.gateway
        state.closed = False
        state.ending = False
    state.dtmf_digits = ""
    state.timers.pop(DTMF, None)
    state.reprompts = 0
    if not state.history:
        greeting = step.config.welcome_greeting or ""
    else:
        greeting = step.config.resume_greeting
    if greeting:
        state.history.append({"role": "assistant", "content": greeting})
        state.speaking = Speaking(start=len(state.history) - 1, count=1, text=greeting)
    arm_silence(step, state, greeting)
    log.info(
        "call_setup",
        session=env.session,
        gateway=env.gateway,
        resumed=resumed,
        messages=len(state.history),
        greeting=bool(greeting),
    )
    return state


def apply_prompt(step: Step, state: CallState, env: Envelope) -> None:
    """The caller's final words: a new turn."""
    text = str(env.body.get("voicePrompt", "")).strip()
    caller_spoke(state)
    # Keys pressed just before speaking belong to what the caller says.
    text = f"{take_buffered(step, state)} {text}".strip()
    # The prompt's envelope names the live session and its gateway.
    state.session = env.session or state.session
    state.gateway = env.gateway or state.gateway
    if not text:
        log.info("prompt_empty", seq=env.seq)
        return  # recorded as applied, nothing to answer
    start_turn(step, state, text, env.seq)


def apply_closed(step: Step, state: CallState, env: Envelope) -> None:
    """The session's socket closed."""
    state.closed = True
    state.timers.clear()
    state.dtmf_digits = ""
    end_open_turns(step, state, "hangup")
    log.info(
        "call_closed",
        code=env.body.get("code"),
        reason=env.body.get("reason", ""),
        turns=state.turn,
    )


def apply_timer(step: Step, state: CallState, env: Envelope) -> None:
    """A deadline fired; it acts only if the state still holds that deadline."""
    name = str(env.body.get("timer", ""))
    deadline = env.body.get("deadline_ms")
    if state.timers.get(name) != deadline:
        # Later input moved or cleared it (or it fired already).
        log.debug("timer_stale", timer=name, deadline_ms=deadline)
        return
    del state.timers[name]
    if state.closed:
        return
    if name == DTMF:
        entry_timed_out(step, state)
    elif name == SILENCE:
        on_silence(step, state)
    elif name == REQUEST:
        current = state.current()
        if current is not None and not current.requested:
            log.warning("request_wait_timed_out", reply_to=current.reply_to)
            request(step, state, current)
