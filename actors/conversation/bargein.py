"""Barge-in: the caller spoke over the agent (``call.interrupt``, ``tokensPlayed``).

Three cases:

- the turn's result has not arrived: the interrupt (fragment, duration, the
  ``tokensPlayed`` so far) is remembered on the open turn and a
  ``control.cancel`` (reason ``interrupt``) goes out; the result, when it
  comes (cancelled or complete), is cut to what was heard (``turns``);
- the result was applied (the reply may still be playing), or it is the
  greeting or a re-prompt: the last reply in history is cut at once;
- without a reply on its way, the silence timer starts again from the
  interrupt (a prompt that follows clears it; the cancelled reply's result
  re-arms it otherwise);
- what was heard comes from ``actors.heard.locate_heard``: the reply's
  ``tokensPlayed`` when subscribed, else the interrupt's fragment, else its
  duration at the configured speaking rate.

A ``call.interrupt`` marked ``withdrawn`` is the gateway's: it apologised
for that prompt (asked the caller to say it again) and fences its late
reply. The reply answering exactly that prompt is stopped, or cut, to
nothing, as after a barge-in that heard none of it (``apply_withdrawn``);
the caller's words in progress (a speculation) are left alone.
"""

from __future__ import annotations

import structlog

from actors.conversation.delta import history_changed
from actors.conversation.effects import Step
from actors.conversation.silence import arm_silence, caller_spoke
from actors.conversation.state import CallState
from actors.conversation.turns import cancel
from actors.heard import locate_heard
from actors.history import truncate_reply
from bus.messages import CallInfo, CallInterrupt

log = structlog.get_logger()


def apply_interrupt(step: Step, state: CallState, interrupt: CallInterrupt, *, seq: int) -> None:
    """The caller barged in (caller event ``seq``): stop the reply, or cut the one in history."""
    fragment = interrupt.utterance_until_interrupt
    duration = interrupt.duration_until_interrupt_ms
    caller_spoke(state)
    current = state.current()
    if current is not None:
        # The reply is still being generated: remember what was heard and
        # stop it; its result is cut when it arrives.
        current.interrupted = True
        current.fragment = fragment
        current.duration_ms = duration
        cancel(step, state, current, "interrupt")
        log.info(
            "caller_interrupt",
            seq=seq,
            fragment=fragment,
            duration_ms=duration,
            pending_turn=current.turn,
            played=len(current.played),
        )
        return
    # The caller's words should follow as a prompt; if none does (a cough,
    # words the recogniser dropped) the silence timer must still run, or
    # the agent waits silently for ever. A prompt clears it again.
    arm_silence(step, state, "")
    spoken = state.speaking
    if spoken is None:
        log.info("caller_interrupt_nothing_playing", seq=seq, fragment=fragment)
        return
    heard = locate_heard(
        spoken.text,
        played=spoken.played,
        fragment=fragment,
        duration_ms=duration,
        chars_per_second=step.config.speech_chars_per_second,
    )
    old = state.history[spoken.start : spoken.start + spoken.count]
    new = truncate_reply(old, spoken.text, heard.text)
    state.history[spoken.start : spoken.start + spoken.count] = new
    state.shift(spoken.start + len(old), len(new) - len(old))
    spoken.count = len(new)
    spoken.text = heard.text
    log.info(
        "caller_interrupt",
        seq=seq,
        fragment=fragment,
        duration_ms=duration,
        heard=heard.method,
        kept_chars=len(heard.text),
    )


def apply_withdrawn(step: Step, state: CallState, reply_to: int, *, seq: int) -> None:
    """The gateway withdrew the reply to prompt ``reply_to``: none of it is heard."""
    current = state.current()
    if current is not None and current.answers(reply_to):
        current.interrupted = True  # no fragment, no duration: nothing heard
        current.fragment, current.duration_ms = "", 0.0
        cancel(step, state, current, "withdrawn")
        log.info("reply_withdrawn", seq=seq, reply_to=reply_to, pending_turn=current.turn)
        return
    spoken = state.speaking
    if current is None and spoken is not None and spoken.answers(reply_to):
        old = state.history[spoken.start : spoken.start + spoken.count]
        new = truncate_reply(old, spoken.text, "")
        history_changed(state, spoken.start)
        state.history[spoken.start : spoken.start + spoken.count] = new
        state.shift(spoken.start + len(old), len(new) - len(old))
        log.info("reply_withdrawn", seq=seq, reply_to=reply_to, cut_chars=len(spoken.text))
        spoken.count, spoken.text = len(new), ""
        return
    # Superseded by a newer prompt (cut to its tokensPlayed then), or not
    # the conversation's latest reply: nothing here to cut.
    log.info("reply_withdrawn_not_found", seq=seq, reply_to=reply_to)


def apply_info(state: CallState, info: CallInfo, *, seq: int) -> None:
    """``tokensPlayed``: a chunk of the current reply finished playing."""
    name, value = info.name, info.value
    if name != "tokensPlayed":
        log.debug("caller_info", seq=seq, name=name, value=value)
        spoken = state.speaking
        if name == "agentSpeaking" and value == "off" and spoken and state.current() is None:
            spoken.finished = True  # after the reply's result (all its text sent): heard
        return
    current = state.current()
    if current is not None:
        current.played.append(value)
    elif state.speaking is not None:
        state.speaking.played.append(value)
