from __future__ import annotations

import pytest

from switchboard.settings import Settings, SettingsError


def test_defaults_run_offline_and_unsigned() -> None:
    s = Settings.from_env({})
    assert s.provider == "scripted"
    assert s.twilio_auth_token is None
    assert s.port == 8080
    assert s.gateway_config().relay_url == "ws://127.0.0.1:8080/relay"


def test_api_key_selects_anthropic() -> None:
    s = Settings.from_env({"ANTHROPIC_API_KEY": "sk-test"})
    assert s.provider == "anthropic"
    assert s.llm_config().provider == "anthropic"


def test_token_coalescing_floor_reaches_the_llm_config() -> None:
    assert Settings.from_env({}).llm_config().token_coalesce_ms == 50
    s = Settings.from_env({"SWITCHBOARD_TOKEN_COALESCE_MS": "0"})
    assert s.llm_config().token_coalesce_ms == 0


def test_public_url_drives_relay_url_and_signed_urls() -> None:
    s = Settings.from_env(
        {"SWITCHBOARD_PUBLIC_URL": "https://agent.example.com/", "TWILIO_AUTH_TOKEN": "t"}
    )
    gw = s.gateway_config()
    assert gw.relay_url == "wss://agent.example.com/relay"
    assert gw.public("/twiml") == "https://agent.example.com/twiml"
    assert gw.auth_token == "t"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SWITCHBOARD_PORT", "eighty"),
        ("SWITCHBOARD_PARTITIONS", "0"),
        ("SWITCHBOARD_DTMF_DETECTION", "maybe"),
        ("SWITCHBOARD_LLM_PROVIDER", "gpt"),
        ("SWITCHBOARD_PUBLIC_URL", "agent.example.com"),
        ("SWITCHBOARD_TOKEN_COALESCE_MS", "-5"),
        ("SWITCHBOARD_TOKEN_COALESCE_MS", "fast"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_relay_attributes_from_env() -> None:
    s = Settings.from_env(
        {
            "SWITCHBOARD_VOICE": "Joanna-Neural",
            "SWITCHBOARD_TTS_PROVIDER": "Amazon",
            "SWITCHBOARD_DTMF_DETECTION": "false",
            "SWITCHBOARD_WELCOME_GREETING": "Hi!",
        }
    )
    assert s.relay.voice == "Joanna-Neural"
    assert s.relay.tts_provider == "Amazon"
    assert s.relay.dtmf_detection is False
    assert s.conversation_config().welcome_greeting == "Hi!"
