"""DTMF: keys are buffered in the call state until ``#`` or the idle timer.

A finished entry becomes the caller's words: the profile's ``dtmf_menu``
words for a one-key entry, else ``[keypad] 1 2 3``, and starts a turn
(``reply_to`` = the ``#``'s seq, or the last digit's when the timer ends it).
Keys pressed just before speaking are prefixed to what the caller says.
"""

from __future__ import annotations

import structlog

from actors.conversation.effects import Step
from actors.conversation.limits import DTMF_MAX
from actors.conversation.silence import caller_spoke
from actors.conversation.state import DTMF, CallState
from actors.conversation.turns import start_turn
from bus.messages import CallDtmf
from relay.dtmf import END_OF_ENTRY, ENTRY_KEYS

log = structlog.get_logger()


def apply_dtmf(step: Step, state: CallState, dtmf: CallDtmf, *, seq: int) -> None:
    """One key (caller event ``seq``): buffer it, or (``#``) finish the entry."""
    digit = dtmf.digit
    caller_spoke(state)
    if digit == END_OF_ENTRY:
        entry = state.dtmf_digits or (digit if digit in step.config.dtmf_menu else "")
        state.dtmf_digits = ""
        state.timers.pop(DTMF, None)
        log.info("caller_dtmf", seq=seq, digit=digit, entry=entry)
        if entry:
            start_turn(step, state, dtmf_words(step, entry), seq)
        return
    if len(digit) != 1 or digit not in ENTRY_KEYS:
        log.warning("caller_dtmf_unknown", seq=seq, digit=digit)
        return
    if len(state.dtmf_digits) < DTMF_MAX:
        state.dtmf_digits += digit
    else:
        drops = state.pending_drops
        drops["dtmf_digits"] = drops.get("dtmf_digits", 0) + 1
    state.dtmf_seq = seq
    state.timers[DTMF] = int(step.now + step.config.dtmf_idle_s * 1000)
    log.info("caller_dtmf", seq=seq, digit=digit, buffered=len(state.dtmf_digits))


def entry_timed_out(step: Step, state: CallState) -> None:
    """No key for ``dtmf_idle_s``: the buffered keys are the entry."""
    entry, state.dtmf_digits = state.dtmf_digits, ""
    log.info("dtmf_entry_timeout", entry=entry)
    if entry:
        start_turn(step, state, dtmf_words(step, entry), state.dtmf_seq)


def take_buffered(step: Step, state: CallState) -> str:
    """The buffered keys as words (empty when none), clearing the buffer."""
    if not state.dtmf_digits:
        return ""
    words = dtmf_words(step, state.dtmf_digits)
    state.dtmf_digits = ""
    state.timers.pop(DTMF, None)
    return words


def dtmf_words(step: Step, entry: str) -> str:
    """What a keypad entry says: the menu's words for one key, else the keys."""
    menu = step.config.dtmf_menu
    if len(entry) == 1 and entry in menu:
        return menu[entry]
    return "[keypad] " + " ".join(entry)
