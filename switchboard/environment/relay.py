"""The <ConversationRelay> attributes the webhook answers with, and the call's languages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from relay.twiml import NEWER_RELAY_ATTRIBUTES, RelayAttributes
from switchboard.environment.parse import SettingsError, flag, number, text
from switchboard.profile import RELAY_CHOICES, Profile, choice_problem

DEFAULT_GREETING = "Hello! This is the Switchboard demo agent. How can I help you today?"
# Subscribed by default: Twilio then reports when the agent stops speaking
# (so a goodbye's ``end`` waits for it) and what the caller actually heard.
DEFAULT_EVENTS = "speaker-events tokens-played"


def _relay_choice(env: Mapping[str, str], key: str) -> str | None:
    """A TwiML attribute with a fixed set of values, checked as the profile checks it."""
    name = f"SWITCHBOARD_{key.upper()}"
    value = text(env, name, None)
    if value is not None and value not in RELAY_CHOICES[key]:
        raise SettingsError(f"{name} {choice_problem(value, RELAY_CHOICES[key])}")
    return value


def _newer_relay_attributes(env: Mapping[str, str]) -> dict[str, Any]:
    """The newer <ConversationRelay> attributes, from SWITCHBOARD_<ATTRIBUTE>.

    Typed by their RelayAttributes field (bool, number or text); their
    values are checked with the rest by ``RelayAttributes.problems``.
    """
    types = {f.name: str(f.type) for f in fields(RelayAttributes)}
    out: dict[str, Any] = {}
    for key in NEWER_RELAY_ATTRIBUTES:
        name = f"SWITCHBOARD_{key.upper()}"
        kind = types[key]
        if kind.startswith("bool"):
            out[key] = flag(env, name, None)
        elif kind.startswith("float"):
            raw = env.get(name)
            out[key] = None if not raw else number(env, name, 0.0)
        else:
            out[key] = text(env, name, DEFAULT_EVENTS if key == "events" else None)
    return out


def read_relay(env: Mapping[str, str], profile: Profile) -> RelayAttributes:
    """The relay's attributes, each checked; the profile's languages as they are."""
    relay = RelayAttributes(
        welcome_greeting=text(env, "SWITCHBOARD_WELCOME_GREETING", DEFAULT_GREETING),
        welcome_greeting_interruptible=_relay_choice(env, "welcome_greeting_interruptible"),
        language=text(env, "SWITCHBOARD_LANGUAGE", "en-US"),
        tts_language=text(env, "SWITCHBOARD_TTS_LANGUAGE", None),
        transcription_language=text(env, "SWITCHBOARD_TRANSCRIPTION_LANGUAGE", None),
        tts_provider=_relay_choice(env, "tts_provider"),
        voice=text(env, "SWITCHBOARD_VOICE", None),
        transcription_provider=_relay_choice(env, "transcription_provider"),
        speech_model=text(env, "SWITCHBOARD_SPEECH_MODEL", None),
        interruptible=_relay_choice(env, "interruptible"),
        interrupt_sensitivity=_relay_choice(env, "interrupt_sensitivity"),
        dtmf_detection=flag(env, "SWITCHBOARD_DTMF_DETECTION", True),
        report_input_during_agent_speech=_relay_choice(env, "report_input_during_agent_speech"),
        partial_prompts=flag(env, "SWITCHBOARD_PARTIAL_PROMPTS", None),
        preemptible=flag(env, "SWITCHBOARD_PREEMPTIBLE", None),
        hints=text(env, "SWITCHBOARD_HINTS", None),
        debug=text(env, "SWITCHBOARD_DEBUG", None),
        intelligence_service=text(env, "SWITCHBOARD_INTELLIGENCE_SERVICE", None),
        languages=profile.languages,
        **_newer_relay_attributes(env),
    )
    for key, problem in relay.problems():
        where = "voice.languages" if key == "languages" else f"SWITCHBOARD_{key.upper()}"
        raise SettingsError(f"{where}: {problem}" if key == "languages" else f"{where} {problem}")
    return relay


def read_languages(env: Mapping[str, str], relay: RelayAttributes) -> tuple[str, ...]:
    """The languages switch_language may pick: the relay's, the profile's
    [[voice.languages]], then SWITCHBOARD_LANGUAGES (comma-separated), de-duplicated."""
    codes = [
        relay.language or "",
        *(lang.code for lang in relay.languages),
        *(env.get("SWITCHBOARD_LANGUAGES") or "").split(","),
    ]
    return tuple(dict.fromkeys(c.strip() for c in codes if c.strip()))
