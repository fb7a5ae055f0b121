"""A resumed call: answering again what the failed session cut off.

When a session fails (its gateway died, the socket dropped), Twilio reports
it to the ``<Connect action>`` URL and a fresh ``<Connect>`` opens a new
session of the same call (``gateway.resume``); Twilio says the resume
greeting. What the caller said last may have gone unanswered: its reply was
still being generated, or was on its way to a socket that no longer
existed. An operator expects the agent to pick the thread up, so after the
greeting the agent answers the caller's last words again, in full, on the
new session.

A reply counts as cut off when the session did not end normally (a
``call.closed`` other than 1000, judged when it arrives; or no
``call.closed`` at all, as from a killed gateway, judged at the new
``call.setup``) and at that moment:

- its turn was still open (the result not applied yet): it was being
  generated; or
- it was applied, no ``agentSpeaking off`` (speaker events) came after
  it, and less than its speaking time (at ``speech_chars_per_second``)
  plus ``RESUME_SLACK_MS`` had passed: the caller cannot have heard it to
  the end. The slack is what a resume takes (Twilio noticing the drop,
  the action callback, a new socket): a reply heard to its end just before
  the failure may be said again, the price of never leaving a question
  unanswered.

Whatever history holds after the caller's last words (the cut-off reply,
or the part of it ``tokensPlayed`` said was heard) leaves it, and a new
turn, answering the same user message, is asked for at once with
``reply_to`` the new session's setup ``seq``, so the new session's fence
admits it and the caller's next words cut it like any reply. The resume
greeting is then not put in history: the model sees its answer right after
the question it answers.
"""

from __future__ import annotations

from typing import Final

import structlog

from actors.conversation.effects import Step
from actors.conversation.state import CallState, OpenTurn
from actors.conversation.turns import request
from relay import CLOSE_NORMAL

log = structlog.get_logger()

# What a resume takes, from the failed socket to the new session's setup.
RESUME_SLACK_MS: Final = 3000


def note_close(step: Step, state: CallState, code: int | None) -> None:
    """The session's socket closed: remember whether that cut a reply off.

    Call before its open turns are ended (their results, applied before any
    new session starts, leave only what was heard in history)."""
    state.cut_off = code != CLOSE_NORMAL and _reply_cut(step, state)


def cut_off_question(step: Step, state: CallState) -> int | None:
    """Where in history the user message is whose reply the failed session cut off.

    Call at a new session's setup, before the old session's open turns are
    ended. A killed gateway sent no ``call.closed``: whether a reply was cut
    is judged now. What history holds after the question (a part of the
    reply the caller heard) is taken out: the answer is said again in full.
    """
    cut = state.cut_off if state.closed else _reply_cut(step, state)
    state.cut_off = False
    if not cut:
        return None
    users = [i for i, m in enumerate(state.history) if m.get("role") == "user"]
    if not users:
        return None
    at = users[-1]
    after = len(state.history) - (at + 1)
    if after:
        state.speaking = None
        del state.history[at + 1 :]
        state.shift(at + 1, -after)
    return at


def _reply_cut(step: Step, state: CallState) -> bool:
    """Whether the reply the caller was waiting for or hearing was cut off now."""
    if state.open_turns:
        return True  # still being generated (or its result not applied yet)
    spoken = state.speaking
    if spoken is None or not spoken.reply_to or spoken.finished:
        # Nothing; the greeting or a re-prompt; or heard to the end, as the
        # caller's speaker events said.
        return False
    speaking_ms = len(spoken.text) / max(step.config.speech_chars_per_second, 1.0) * 1000
    return step.wall_ms < spoken.applied_ms + speaking_ms + RESUME_SLACK_MS


def answer_again(step: Step, state: CallState, at: int, reply_to: int) -> None:
    """Ask for a new reply to the user message at ``at``, for the new session.

    Requested at once, even while the old turn's result is outstanding: the
    question is answered afresh, not continued.
    """
    state.turn += 1
    state.reply_to = reply_to
    # Right after the question: an old turn's late result, also placed
    # there, moves it on (``CallState.shift``).
    turn = OpenTurn(turn=state.turn, reply_to=reply_to, index=at + 1)
    state.open_turns.append(turn)
    log.info("cut_off_reply_answered_again", reply_to=reply_to, question_at=at)
    request(step, state, turn)
