"""Agent profiles: one TOML file that says who the agent is and how it sounds.

A profile holds what a product owner tunes (prompt, greeting, voice, language,
tools, model, timers); environment variables keep what an operator tunes
(ports, Redis, secrets) and override a profile's values where both exist.
The file is validated once at start-up: an unknown section or key, or a value
of the wrong type, stops the process with an error that names the key, e.g.
``profile.toml: voice.dtmf_detection must be a boolean, got "yes"``.

Example::

    [agent]
    system_prompt = "You are the front desk of Ada's Bistro..."
    greeting = "Hi, Ada's Bistro, how can I help?"
    resume_greeting = "Sorry, we got cut off. Where were we?"
    model = "claude-haiku-4-5"
    max_tokens = 400
    preemptive = true   # replies start on interim prompts (needs partial_prompts)

    [voice]
    language = "en-US"
    tts_provider = "Amazon"
    voice = "Joanna-Neural"
    dtmf_detection = true

    [[voice.languages]]
    code = "es-ES"
    tts_provider = "Google"
    voice = "es-ES-Neural2-A"

    [tools]
    enabled = ["end_call", "transfer", "send_digits", "switch_language"]
    transfer_number = "+15551234567"

    [timers]
    silence_reprompt_s = 8.0
    silence_max_reprompts = 2
    dtmf_idle_s = 3.0

    [dtmf.menu]
    "1" = "I want to check an order."
    "0" = "I want to talk to a person."
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay import dtmf
from relay.twiml import LANGUAGE_FIELDS, LanguageOption


class ProfileError(ValueError):
    """The profile cannot be used; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Profile:
    """A validated agent profile; ``None`` means "not set in the profile"."""

    system_prompt: str | None = None
    greeting: str | None = None
    resume_greeting: str | None = None
    model: str | None = None
    max_tokens: int | None = None
    preemptive: bool | None = None
    voice: Mapping[str, Any] = field(default_factory=dict)
    languages: tuple[LanguageOption, ...] = ()
    tools: tuple[str, ...] | None = None
    transfer_number: str | None = None
    transfer_queue: str | None = None
    silence_reprompt_s: float | None = None
    silence_max_reprompts: int | None = None
    dtmf_idle_s: float | None = None
    dtmf_menu: Mapping[str, str] = field(default_factory=dict)


# Section -> key -> expected type (a Python type, or a tuple of them).
_STR = str
_SCHEMA: dict[str, dict[str, Any]] = {
    "agent": {
        "system_prompt": _STR,
        "greeting": _STR,
        "resume_greeting": _STR,
        "model": _STR,
        "max_tokens": int,
        "preemptive": bool,
    },
    "voice": {
        "welcome_greeting_interruptible": _STR,
        "language": _STR,
        "tts_language": _STR,
        "transcription_language": _STR,
        "tts_provider": _STR,
        "voice": _STR,
        "transcription_provider": _STR,
        "speech_model": _STR,
        "interruptible": _STR,
        "interrupt_sensitivity": _STR,
        "dtmf_detection": bool,
        "report_input_during_agent_speech": _STR,
        "preemptible": bool,
        "partial_prompts": bool,
        "hints": _STR,
        "debug": _STR,
        "intelligence_service": _STR,
        "languages": list,
        # The newer <ConversationRelay> attributes (twilio-python 9.13).
        "events": _STR,
        "profanity_filter": bool,
        "elevenlabs_text_normalization": _STR,
        "background_noise_reduction": bool,
        "speech_timeout": _STR,
        "deepgram_smart_format": bool,
        "ignore_backchannel": bool,
        "partial_prompt_on_hangup": bool,
        "eager_eot_threshold": (int, float),
        "asr_smart_format": bool,
        "tts_text_normalization": _STR,
        "tts_language_text_normalization": bool,
        "elevenlabs_language_text_normalization": bool,
        "include_in_prompt": _STR,
        "customer_name": _STR,
        "application_reconnect": bool,
        "echo_prompt_filtering": bool,
        "turn_detection": bool,
    },
    "tools": {"enabled": list, "transfer_number": _STR, "transfer_queue": _STR},
    "timers": {
        "silence_reprompt_s": (int, float),
        "silence_max_reprompts": int,
        "dtmf_idle_s": (int, float),
    },
    "dtmf": {"menu": dict},
}
_LANGUAGE_KEYS = {"code", *LANGUAGE_FIELDS}
_LANGUAGE_BOOLS = {"asr_smart_format", "tts_language_text_normalization"}
# The TwiML attributes with a fixed set of values (Twilio's <ConversationRelay>
# reference), by [voice] key. The environment variable of the same setting
# (SWITCHBOARD_<KEY>) is checked against the same set (switchboard.settings).
# Twilio still takes true (any) and false (none) for the two interruptible
# attributes, for backward compatibility.
RELAY_CHOICES: dict[str, frozenset[str]] = {
    "interruptible": frozenset({"none", "dtmf", "speech", "any", "true", "false"}),
    "welcome_greeting_interruptible": frozenset({"none", "dtmf", "speech", "any", "true", "false"}),
    "report_input_during_agent_speech": frozenset({"none", "dtmf", "speech", "any"}),
    "interrupt_sensitivity": frozenset({"low", "medium", "high"}),
    "tts_provider": frozenset({"ElevenLabs", "Google", "Amazon"}),
    "transcription_provider": frozenset({"Deepgram", "Google"}),
}
_CHOICES = {("voice", key): values for key, values in RELAY_CHOICES.items()}
BUILTIN_TOOLS = ("end_call", "transfer", "send_digits", "switch_language")
_REFERENCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def choice_problem(value: object, choices: frozenset[str]) -> str:
    """``must be one of [...], got 'x'``, with the right spelling of a near miss."""
    text = f"must be one of {', '.join(sorted(choices))}; got {value!r}"
    if isinstance(value, str):
        for choice in choices:
            if choice.lower() == value.strip().lower():
                return f"{text} (did you mean {choice!r}?)"
    return text


def _type_name(expected: Any) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "a table"}
    if isinstance(expected, tuple):
        return "a number"
    return names.get(expected, str(expected))


def _check_type(where: str, value: Any, expected: Any) -> None:
    # bool is an int in Python; a profile's `max_tokens = true` is still wrong.
    types = expected if isinstance(expected, tuple) else (expected,)
    wrong_bool = isinstance(value, bool) and bool not in types
    if wrong_bool or not isinstance(value, types):
        raise ProfileError(f"{where} must be {_type_name(expected)}, got {value!r}")


def _check_schema(data: dict[str, Any], source: str) -> None:
    """Every section and key known, every value of its type and among its choices."""
    for section, table in data.items():
        if section not in _SCHEMA:
            raise ProfileError(
                f"{source}: unknown section [{section}] (known: {', '.join(sorted(_SCHEMA))})"
            )
        if not isinstance(table, dict):
            raise ProfileError(f"{source}: {section} must be a table")
        for key, value in table.items():
            where = f"{source}: {section}.{key}"
            if key not in _SCHEMA[section]:
                raise ProfileError(
                    f"{where} is not a known key "
                    f"(known in [{section}]: {', '.join(sorted(_SCHEMA[section]))})"
                )
            _check_type(where, value, _SCHEMA[section][key])
            choices = _CHOICES.get((section, key))
            if choices and value not in choices:
                raise ProfileError(f"{where} {choice_problem(value, choices)}")


def _languages(tables: list[Any], source: str) -> tuple[LanguageOption, ...]:
    """[[voice.languages]]: each a table with a code and only known keys."""
    languages: list[LanguageOption] = []
    for i, lang in enumerate(tables):
        where = f"{source}: voice.languages[{i}]"
        if not isinstance(lang, dict):
            raise ProfileError(f"{where} must be a table")
        unknown = set(lang) - _LANGUAGE_KEYS
        if unknown:
            raise ProfileError(f"{where}.{sorted(unknown)[0]} is not a known key")
        if not isinstance(lang.get("code"), str) or not lang["code"]:
            raise ProfileError(f"{where}.code is required and must be a string")
        for key, value in lang.items():
            _check_type(f"{where}.{key}", value, bool if key in _LANGUAGE_BOOLS else str)
        languages.append(LanguageOption(**lang))
    return tuple(languages)


def _enabled_tools(
    tools_table: dict[str, Any], tools: tuple[str, ...], source: str
) -> tuple[str, ...] | None:
    """[tools] enabled: known tools (or ``module:function``), transfer with a target."""
    if "enabled" not in tools_table:
        return None
    known = set(BUILTIN_TOOLS) | set(tools)
    for i, name in enumerate(tools_table["enabled"]):
        # module:function names a tool in code; settings imports it to check.
        if isinstance(name, str) and _REFERENCE.fullmatch(name):
            continue
        if not isinstance(name, str) or name not in known:
            raise ProfileError(
                f"{source}: tools.enabled[{i}] {name!r} is not a known tool "
                f"(known: {', '.join(sorted(known))})"
            )
    enabled = tuple(tools_table["enabled"])
    if "transfer" in enabled and not (
        tools_table.get("transfer_number") or tools_table.get("transfer_queue")
    ):
        raise ProfileError(
            f"{source}: tools.enabled has 'transfer' but neither tools.transfer_number "
            "nor tools.transfer_queue is set"
        )
    return enabled


def _check_ranges(
    agent: dict[str, Any], timers: dict[str, Any], menu: dict[str, Any], source: str
) -> None:
    """The DTMF menu's keys, the timers and the token budget in range."""
    for key, value in menu.items():
        if not dtmf.is_key(key) or not isinstance(value, str):
            raise ProfileError(f"{source}: dtmf.menu.{key} must map one key 0-9 * # to a string")
    for key in ("silence_reprompt_s", "dtmf_idle_s"):
        if key in timers and timers[key] <= 0:
            raise ProfileError(f"{source}: timers.{key} must be > 0, got {timers[key]!r}")
    if timers.get("silence_max_reprompts", 0) < 0:
        raise ProfileError(f"{source}: timers.silence_max_reprompts must be >= 0")
    if agent.get("max_tokens", 1) < 1:
        raise ProfileError(f"{source}: agent.max_tokens must be >= 1")


def parse_profile(text: str, *, source: str = "profile", tools: tuple[str, ...] = ()) -> Profile:
    """Validate a profile's TOML text. ``tools`` are extra tool names known to exist."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{source}: not valid TOML: {exc}") from None
    _check_schema(data, source)
    agent = data.get("agent", {})
    voice = dict(data.get("voice", {}))
    tools_table = data.get("tools", {})
    timers = data.get("timers", {})
    menu = data.get("dtmf", {}).get("menu", {})
    languages = _languages(voice.pop("languages", []), source)
    enabled = _enabled_tools(tools_table, tools, source)
    _check_ranges(agent, timers, menu, source)
    return Profile(
        system_prompt=agent.get("system_prompt"),
        greeting=agent.get("greeting"),
        resume_greeting=agent.get("resume_greeting"),
        model=agent.get("model"),
        max_tokens=agent.get("max_tokens"),
        preemptive=agent.get("preemptive"),
        voice=voice,
        languages=languages,
        tools=enabled,
        transfer_number=tools_table.get("transfer_number"),
        transfer_queue=tools_table.get("transfer_queue"),
        silence_reprompt_s=(
            float(timers["silence_reprompt_s"]) if "silence_reprompt_s" in timers else None
        ),
        silence_max_reprompts=timers.get("silence_max_reprompts"),
        dtmf_idle_s=float(timers["dtmf_idle_s"]) if "dtmf_idle_s" in timers else None,
        dtmf_menu=dict(menu),
    )


def load_profile(path: str | Path, *, tools: tuple[str, ...] = ()) -> Profile:
    """Read and validate a profile file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{p}: cannot read the profile: {exc.strerror}") from None
    return parse_profile(text, source=str(p), tools=tools)
