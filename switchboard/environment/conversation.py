"""The conversation actor's settings: greetings, timers, DTMF, history bounds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

from actors.config import (
    DEFAULT_GOODBYE_TEXT,
    DEFAULT_MAX_SPECULATIONS,
    DEFAULT_REPROMPT_TEXT,
    DEFAULT_RESUME_GREETING,
    DEFAULT_SETTLE_MS,
    DEFAULT_SPECULATION_MAX_CHARS,
    DEFAULT_SPECULATION_MAX_LAG_MS,
)
from relay.speech import CHARS_PER_SECOND
from switchboard.environment.parse import SettingsError, flag, integer, number, positive, text
from switchboard.profile import Profile


class ConversationSettings(TypedDict):
    resume_greeting: str
    silence_reprompt_s: float
    state_cache_calls: int
    max_played_chars: int
    max_history_messages: int
    max_history_chars: int
    handler_deadline_s: float
    conversation_max_deliveries: int
    silence_max_reprompts: int
    reprompt_text: str
    goodbye_text: str
    goodbye_interruptible: bool
    dtmf_idle_s: float
    dtmf_menu: Mapping[str, str]
    speech_chars_per_second: float
    # None: preemptive replies follow partial prompts (on when they are on).
    preemptive: bool | None
    settle_ms: float
    max_speculations: int
    speculation_max_chars: int
    speculation_max_lag_ms: float


def _speech_rate(env: Mapping[str, str]) -> float:
    rate = number(env, "SWITCHBOARD_SPEECH_CHARS_PER_S", CHARS_PER_SECOND)
    if not 0 < rate < float("inf"):
        raise SettingsError(
            f"SWITCHBOARD_SPEECH_CHARS_PER_S must be a positive number of characters "
            f"a second, got {rate}"
        )
    return rate


def _max_lag(env: Mapping[str, str]) -> float:
    lag = number(env, "SWITCHBOARD_SPECULATION_MAX_LAG_MS", DEFAULT_SPECULATION_MAX_LAG_MS)
    if not 0 <= lag < float("inf"):
        raise SettingsError(
            f"SWITCHBOARD_SPECULATION_MAX_LAG_MS must be 0 (never shed) or a positive "
            f"number of milliseconds, got {lag}"
        )
    return lag


def read_conversation(env: Mapping[str, str], profile: Profile) -> ConversationSettings:
    return ConversationSettings(
        resume_greeting=text(env, "SWITCHBOARD_RESUME_GREETING", DEFAULT_RESUME_GREETING)
        or DEFAULT_RESUME_GREETING,
        silence_reprompt_s=number(env, "SWITCHBOARD_SILENCE_REPROMPT_S", 10.0),
        state_cache_calls=integer(env, "SWITCHBOARD_CONVERSATION_STATE_CACHE", 4096),
        max_played_chars=integer(env, "SWITCHBOARD_MAX_PLAYED_CHARS", 16_384, minimum=1),
        max_history_messages=integer(env, "SWITCHBOARD_MAX_HISTORY_MESSAGES", 400, minimum=1),
        max_history_chars=integer(env, "SWITCHBOARD_MAX_HISTORY_CHARS", 400_000, minimum=1),
        handler_deadline_s=positive(env, "SWITCHBOARD_HANDLER_DEADLINE_S", 10.0),
        conversation_max_deliveries=integer(
            env, "SWITCHBOARD_CONVERSATION_MAX_DELIVERIES", 5, minimum=1
        ),
        silence_max_reprompts=integer(env, "SWITCHBOARD_SILENCE_MAX_REPROMPTS", 2),
        reprompt_text=env.get("SWITCHBOARD_REPROMPT_TEXT") or DEFAULT_REPROMPT_TEXT,
        goodbye_text=env.get("SWITCHBOARD_GOODBYE_TEXT") or DEFAULT_GOODBYE_TEXT,
        goodbye_interruptible=bool(flag(env, "SWITCHBOARD_GOODBYE_INTERRUPTIBLE", False)),
        dtmf_idle_s=positive(env, "SWITCHBOARD_DTMF_IDLE_S", 3.0),
        dtmf_menu=dict(profile.dtmf_menu),
        speech_chars_per_second=_speech_rate(env),
        preemptive=flag(env, "SWITCHBOARD_PREEMPTIVE", None),
        settle_ms=number(env, "SWITCHBOARD_SETTLE_MS", DEFAULT_SETTLE_MS),
        max_speculations=integer(env, "SWITCHBOARD_MAX_SPECULATIONS", DEFAULT_MAX_SPECULATIONS),
        speculation_max_chars=integer(
            env, "SWITCHBOARD_SPECULATION_MAX_CHARS", DEFAULT_SPECULATION_MAX_CHARS, minimum=1
        ),
        speculation_max_lag_ms=_max_lag(env),
    )
