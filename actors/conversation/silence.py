"""Silence: re-prompt a caller who says nothing, then say goodbye and end.

After a reply is applied (or a greeting is spoken) the call gets a deadline
of ``silence_reprompt_s`` plus the reply's estimated speaking time; any caller
input clears it, and an interrupt with no reply on its way or an empty final
prompt (input that asks nothing) starts it again. When it fires the agent re-prompts (recorded as an
assistant message), and after ``silence_max_reprompts`` it says goodbye and
sends ``end`` once that has been spoken (handoffData ``{"reason": "silence"}``).
"""

from __future__ import annotations

import structlog

from actors.conversation.effects import Step
from actors.conversation.state import SILENCE, CallState, Speaking
from bus.messages import GatewaySend
from relay import Handoff, OutboundMessage, Text, to_wire

log = structlog.get_logger()


def caller_spoke(state: CallState) -> None:
    """Any caller input: the silence count starts over."""
    state.reprompts = 0
    state.timers.pop(SILENCE, None)


def arm_silence(step: Step, state: CallState, spoken: str) -> None:
    """Re-prompt if the caller says nothing once ``spoken`` has played."""
    seconds = step.config.silence_reprompt_s
    if seconds <= 0 or state.closed or state.ending:
        state.timers.pop(SILENCE, None)
        return
    speaking_s = len(spoken) / max(step.config.speech_chars_per_second, 1.0)
    state.timers[SILENCE] = int(step.now + (seconds + speaking_s) * 1000)


def on_silence(step: Step, state: CallState) -> None:
    """The silence deadline passed: re-prompt, or say goodbye and end the call."""
    if state.current() is not None or state.ending:
        return  # a reply is on its way, or the call is ending anyway
    state.reprompts += 1
    if state.reprompts <= step.config.silence_max_reprompts:
        text = step.config.reprompt_text
        say(step, state, text)
        arm_silence(step, state, text)
        log.info("silence_reprompt", reprompts=state.reprompts)
        return
    # The last words of the call: a caller's noise must not cut them off
    # (unless the profile wants it), since end follows once they were heard.
    say(step, state, step.config.goodbye_text, interruptible=step.config.goodbye_interruptible)
    gateway_send(step, state, Handoff.silence().end(), after_speech=True)
    state.ending = True
    log.info("silence_hangup", reprompts=state.reprompts - 1)


def say(step: Step, state: CallState, text: str, *, interruptible: bool | None = None) -> None:
    """Speak ``text`` as one reply and record it as the agent's words.

    ``interruptible``: the ``text`` message's own override (None: the TwiML's).
    """
    if not text:
        return
    gateway_send(step, state, Text(token=text, last=True, interruptible=interruptible))
    state.history.append({"role": "assistant", "content": text})
    state.speaking = Speaking(start=len(state.history) - 1, count=1, text=text)


def gateway_send(
    step: Step, state: CallState, frame: OutboundMessage, *, after_speech: bool = False
) -> None:
    """Send the app-to-Twilio message ``frame`` to the call's gateway.

    ``to_wire`` checks it as Twilio would (a ``LocalProtocolError`` here is
    our bug, caught where the frame is built rather than at the gateway).
    """
    wire = to_wire(frame)
    message = GatewaySend(frame=wire, after_speech=after_speech, origin="conversation")
    step.send(
        message,
        state.call,
        session=state.session,
        gateway=state.gateway,
        turn=state.turn,
    )
