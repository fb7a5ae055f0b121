"""The turn rules: ``apply(state, message, ...) -> Applied``, pure.

One entry of the call's partition stream (a caller event, an LLM result, a
timer that fired), as its typed message (``Incoming``), is applied to the
call's state, which it changes in place, and yields the typed messages to
publish (``effects``). No bus, no clock, no
context variable: the time comes in as ``now`` (timer clock, ms) and
``wall_ms`` (facts), so the rules run the same in a test, in a replay and on
the next owner of the partition. The shell (``actor``) publishes the effects,
then persists the state.

Where each rule lives: ``turns`` (opening a turn, the request, the result,
superseding), ``bargein`` (interrupt, ``tokensPlayed``), ``keypad`` (DTMF),
``silence`` (re-prompts and goodbye), ``speculation`` (preemptive replies on
interim prompts: held, then adopted or discarded); this module: setup and
resume, prompts, the socket closing, timers.

Trust: caller speech only ever becomes a ``user`` message. The system prompt
comes from the configuration alone, never from anything a caller said.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from actors.config import ConversationConfig
from actors.conversation.bargein import apply_info, apply_interrupt, apply_withdrawn
from actors.conversation.cutoff import answer_again, cut_off_question, note_close
from actors.conversation.effects import Effect, Incoming, Step
from actors.conversation.keypad import apply_dtmf, entry_timed_out, take_buffered
from actors.conversation.limits import enforce
from actors.conversation.silence import arm_silence, caller_spoke, on_silence
from actors.conversation.speculation import (
    forget_utterance,
    on_final,
    on_partial,
    on_result,
    on_settle,
)
from actors.conversation.state import DTMF, REQUEST, SETTLE, SILENCE, CallState, Speaking
from actors.conversation.turns import apply_result, end_open_turns, request, start_turn
from bus.messages import (
    CallClosed,
    CallDtmf,
    CallError,
    CallInfo,
    CallInterrupt,
    CallPrompt,
    CallSetup,
    ConversationTimer,
    LlmResult,
)

log = structlog.get_logger()


@dataclass(slots=True)
class Applied:
    """What applying one message did: the state to persist (None: nothing
    changed, nothing to persist) and the messages to publish first."""

    state: CallState | None
    effects: list[Effect] = field(default_factory=list)


def apply(
    state: CallState | None,
    incoming: Incoming,
    *,
    config: ConversationConfig,
    now: float,
    wall_ms: float,
) -> Applied:
    """Apply ``incoming`` to ``state`` (None: the call has no state yet).

    ``now``: the timer clock in ms; ``wall_ms``: wall-clock ms for facts.
    """
    step = Step(config=config, now=now, wall_ms=wall_ms)
    new = _dispatch(step, state, incoming)
    if new is not None:
        # Bounded work per call: whatever the entry added, the state stays
        # under the caps (the oldest dropped and counted).
        enforce(step, new, seq=incoming.seq)
    return Applied(new, step.effects)


def _dispatch(step: Step, state: CallState | None, incoming: Incoming) -> CallState | None:
    message, seq = incoming.message, incoming.seq
    if isinstance(message, CallSetup):
        return apply_setup(step, state, incoming)
    if isinstance(message, LlmResult | CallClosed | ConversationTimer):
        if state is None:
            _without_call(message)
        elif isinstance(message, LlmResult):
            if not on_result(step, state, message, session=incoming.session):
                apply_result(step, state, message, turn_no=incoming.turn)
        elif isinstance(message, CallClosed):
            apply_closed(step, state, message)
        else:
            apply_timer(step, state, message)
        return state
    if isinstance(message, CallPrompt) and not message.last:
        # An interim prompt: recorded only for preemptive replies, and only
        # when its words changed; otherwise nothing to persist.
        changed = state is not None and on_partial(step, state, message, seq=seq, ts=incoming.ts)
        return state if changed else None
    if not isinstance(message, CallPrompt | CallInterrupt | CallInfo | CallDtmf | CallError):
        log.warning("unexpected_kind", kind=message.KIND)
        return None
    state = state or new_state(incoming)
    if isinstance(message, CallPrompt):
        apply_prompt(step, state, message, incoming)
    elif isinstance(message, CallInterrupt) and message.withdrawn:
        apply_withdrawn(step, state, message.withdrawn, seq=seq)  # the gateway's, not the caller's
    elif isinstance(message, CallInterrupt):
        forget_utterance(step, state, "interrupt")
        apply_interrupt(step, state, message, seq=seq)
    elif isinstance(message, CallInfo):
        apply_info(state, message, seq=seq)
    elif isinstance(message, CallDtmf):
        _follow_session(state, incoming)
        forget_utterance(step, state, "keypad")
        apply_dtmf(step, state, message, seq=seq)
    else:
        log.warning("caller_error", seq=seq, description=message.description)
    return state


def _without_call(message: LlmResult | CallClosed | ConversationTimer) -> None:
    """A result, close or timer for a call with no state (expired, or never set up)."""
    if isinstance(message, LlmResult):
        log.warning("llm_result_without_call")
    elif isinstance(message, CallClosed):
        log.info("call_closed_without_state")
    else:
        log.info("timer_without_call")


def _follow_session(state: CallState, incoming: Incoming) -> None:
    """The caller's own events name the live session and its gateway."""
    state.session = incoming.session or state.session
    state.gateway = incoming.gateway or state.gateway


def new_state(incoming: Incoming) -> CallState:
    return CallState(call=incoming.call, session=incoming.session, gateway=incoming.gateway)


def apply_setup(step: Step, state: CallState | None, incoming: Incoming) -> CallState:
    """A session starts: a new call, or a known call resumed on a new socket."""
    resumed = state is not None
    cut: int | None = None
    if state is None:
        state = new_state(incoming)
    else:
        # A new session of a known call (after a failed session, or a
        # handoff back to the agent): same history, new socket, maybe a
        # different gateway. Replies still running for the old socket
        # will never be heard; the one cut off is answered again (cutoff).
        cut = cut_off_question(step, state)
        end_open_turns(step, state, "hangup")
        forget_utterance(step, state, "hangup")
        state.session = incoming.session
        state.gateway = incoming.gateway
        state.closed = False
        state.ending = False
    state.dtmf_digits = ""
    state.timers.pop(DTMF, None)
    state.reprompts = 0
    if not state.history:
        greeting = step.config.welcome_greeting or ""
    else:
        greeting = step.config.resume_greeting
    if cut is not None:
        answer_again(step, state, cut, incoming.seq)
    else:
        if greeting:
            state.history.append({"role": "assistant", "content": greeting})
            state.speaking = Speaking(start=len(state.history) - 1, count=1, text=greeting)
        arm_silence(step, state, greeting)
    log.info(
        "call_setup",
        session=incoming.session,
        gateway=incoming.gateway,
        resumed=resumed,
        messages=len(state.history),
        greeting=bool(greeting),
        answered_again=cut is not None,
    )
    return state


def apply_prompt(step: Step, state: CallState, prompt: CallPrompt, incoming: Incoming) -> None:
    """The caller's final words: a new turn."""
    text = prompt.voice_prompt.strip()
    caller_spoke(state)
    if prompt.lang and prompt.lang != state.lang:
        log.info("caller_language", lang=prompt.lang, was=state.lang or None)
        state.lang = prompt.lang
    # Keys pressed just before speaking belong to what the caller says.
    text = f"{take_buffered(step, state)} {text}".strip()
    _follow_session(state, incoming)
    if on_final(step, state, text, seq=incoming.seq, prompt_ms=incoming.ts):
        return  # the held reply started on these words is the turn's
    if not text:
        log.info("prompt_empty", seq=incoming.seq)
        if state.current() is None:
            # Nothing to answer and no reply on its way: keep the silence
            # timer running, or an empty final prompt leaves dead air.
            arm_silence(step, state, "")
        return  # recorded as applied, nothing to answer
    start_turn(step, state, text, incoming.seq, prompt_ms=incoming.ts)


def apply_closed(step: Step, state: CallState, closed: CallClosed) -> None:
    """The session's socket closed."""
    note_close(step, state, closed.code)
    state.closed = True
    state.timers.clear()
    state.dtmf_digits = ""
    end_open_turns(step, state, "hangup")
    forget_utterance(step, state, "hangup")
    log.info("call_closed", code=closed.code, reason=closed.reason, turns=state.turn)


def apply_timer(step: Step, state: CallState, timer: ConversationTimer) -> None:
    """A deadline fired; it acts only if the state still holds that deadline."""
    name, deadline = timer.timer, timer.deadline_ms
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
    elif name == SETTLE:
        on_settle(step, state, late_ms=step.now - deadline)
    elif name == REQUEST:
        current = state.current()
        if current is not None and not current.requested:
            log.warning("request_wait_timed_out", reply_to=current.reply_to)
            request(step, state, current)
