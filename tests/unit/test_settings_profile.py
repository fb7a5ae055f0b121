"""SWITCHBOARD_PROFILE: a TOML agent profile mapped onto every role's config."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.twiml import LanguageOption
from switchboard.settings import Settings, SettingsError

PROFILE = """
[agent]
system_prompt = "You are the front desk of Ada's Bistro."
greeting = "Hi, Ada's Bistro, how can I help?"
resume_greeting = "Sorry, we got cut off. Where were we?"
model = "claude-sonnet-4-5"
max_tokens = 400

[voice]
language = "en-US"
tts_provider = "Amazon"
voice = "Joanna-Neural"
dtmf_detection = true
debug = "speaker-events tokens-played"

[[voice.languages]]
code = "es-ES"
tts_provider = "Google"
voice = "es-ES-Neural2-A"

[tools]
enabled = ["end_call", "transfer", "switch_language"]
transfer_number = "+15551234567"

[timers]
silence_reprompt_s = 8.0
silence_max_reprompts = 3
dtmf_idle_s = 2.5

[dtmf.menu]
"1" = "I want to check an order."
"""


def write(tmp_path: Path, text: str = PROFILE) -> str:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return str(path)


def test_profile_maps_onto_conversation_llm_and_gateway_configs(tmp_path: Path) -> None:
    settings = Settings.from_env({"SWITCHBOARD_PROFILE": write(tmp_path)})
    conversation = settings.conversation_config()
    assert conversation.system_prompt == "You are the front desk of Ada's Bistro."
    assert conversation.welcome_greeting == "Hi, Ada's Bistro, how can I help?"
    assert conversation.resume_greeting == "Sorry, we got cut off. Where were we?"
    assert (conversation.silence_reprompt_s, conversation.silence_max_reprompts) == (8.0, 3)
    assert conversation.dtmf_idle_s == 2.5
    assert conversation.dtmf_menu == {"1": "I want to check an order."}
    llm = settings.llm_config()
    assert (llm.model, llm.max_tokens) == ("claude-sonnet-4-5", 400)
    assert llm.tools == ("end_call", "transfer", "switch_language")
    assert llm.transfer_number == "+15551234567"
    assert llm.languages == ("en-US", "es-ES")
    gateway = settings.gateway_config()
    assert gateway.resume_greeting == "Sorry, we got cut off. Where were we?"
    relay = gateway.relay
    assert relay.welcome_greeting == "Hi, Ada's Bistro, how can I help?"
    assert (relay.tts_provider, relay.voice, relay.dtmf_detection) == (
        "Amazon", "Joanna-Neural", True,
    )  # fmt: skip
    assert relay.debug == "speaker-events tokens-played"
    assert relay.languages == (
        LanguageOption(code="es-ES", tts_provider="Google", voice="es-ES-Neural2-A"),
    )


def test_environment_overrides_the_profile(tmp_path: Path) -> None:
    env = {
        "SWITCHBOARD_PROFILE": write(tmp_path),
        "SWITCHBOARD_MODEL": "claude-haiku-4-5",
        "SWITCHBOARD_SILENCE_REPROMPT_S": "0",
        "SWITCHBOARD_VOICE": "Matthew-Neural",
        "SWITCHBOARD_GOODBYE_TEXT": "Bye now.",
        "SWITCHBOARD_SYSTEM_PROMPT": "",  # empty: not set, the profile's stays
    }
    settings = Settings.from_env(env)
    assert settings.model == "claude-haiku-4-5"
    assert settings.conversation_config().silence_reprompt_s == 0.0
    assert settings.conversation_config().goodbye_text == "Bye now."
    assert settings.relay.voice == "Matthew-Neural"
    assert settings.system_prompt == "You are the front desk of Ada's Bistro."


def test_defaults_without_a_profile() -> None:
    conversation = Settings.from_env({}).conversation_config()
    assert conversation.silence_reprompt_s == 10.0 and conversation.silence_max_reprompts == 2
    assert conversation.dtmf_idle_s == 3.0 and conversation.dtmf_menu == {}
    assert conversation.resume_greeting == "Sorry about that, we got cut off. Where were we?"


def test_a_bad_profile_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[timers]\nsilence_reprompt_s = "soon"\n')
    with pytest.raises(SettingsError, match=r"SWITCHBOARD_PROFILE: .*timers\.silence_reprompt_s"):
        Settings.from_env({"SWITCHBOARD_PROFILE": path})
    with pytest.raises(SettingsError, match=r"SWITCHBOARD_PROFILE: .*cannot read"):
        Settings.from_env({"SWITCHBOARD_PROFILE": str(tmp_path / "missing.toml")})


def test_bad_timer_variables_are_named() -> None:
    with pytest.raises(SettingsError, match="SWITCHBOARD_DTMF_IDLE_S"):
        Settings.from_env({"SWITCHBOARD_DTMF_IDLE_S": "0"})
    with pytest.raises(SettingsError, match="SWITCHBOARD_SILENCE_MAX_REPROMPTS"):
        Settings.from_env({"SWITCHBOARD_SILENCE_MAX_REPROMPTS": "-1"})


def test_a_profile_turns_partial_prompts_and_preemptive_replies_on_and_off(
    tmp_path: Path,
) -> None:
    partials = write(tmp_path, "[voice]\npartial_prompts = true\n")
    settings = Settings.from_env({"SWITCHBOARD_PROFILE": partials})
    # Partial prompts in the TwiML, and replies that start on them, by default.
    assert settings.relay.partial_prompts is True
    assert settings.conversation_config().preemptive is True
    assert settings.gateway_config().interim_prompts is True
    opted_out = write(tmp_path, "[agent]\npreemptive = false\n[voice]\npartial_prompts = true\n")
    settings = Settings.from_env({"SWITCHBOARD_PROFILE": opted_out})
    assert settings.relay.partial_prompts is True
    assert settings.conversation_config().preemptive is False
    assert settings.gateway_config().interim_prompts is False
    # The environment overrides the profile, as for every other setting.
    env = {"SWITCHBOARD_PROFILE": opted_out, "SWITCHBOARD_PREEMPTIVE": "on"}
    assert Settings.from_env(env).conversation_config().preemptive is True
