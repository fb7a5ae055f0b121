"""Settings are validated once, the same way, from the environment and the profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.cli import read_env
from switchboard.settings import Settings, SettingsError

INTERRUPTIBLE = "any, dtmf, false, none, speech, true"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SWITCHBOARD_INTERRUPTIBLE", "sometimes", INTERRUPTIBLE),
        ("SWITCHBOARD_WELCOME_GREETING_INTERRUPTIBLE", "yes", INTERRUPTIBLE),
        ("SWITCHBOARD_REPORT_INPUT_DURING_AGENT_SPEECH", "all", "any, dtmf, none, speech"),
        ("SWITCHBOARD_INTERRUPT_SENSITIVITY", "extreme", "high, low, medium"),
        ("SWITCHBOARD_TTS_PROVIDER", "amazon", "did you mean 'Amazon'?"),
        ("SWITCHBOARD_TRANSCRIPTION_PROVIDER", "Whisper", "Deepgram, Google"),
        ("SWITCHBOARD_LOG_LEVEL", "verbose", "critical, debug, error, info, warning"),
        ("SWITCHBOARD_PORT", "99999", "<= 65535"),
        ("SWITCHBOARD_PORT", "-1", ">= 0"),
        ("SWITCHBOARD_METRICS_PORT", "70000", "<= 65535"),
        ("SWITCHBOARD_PUBLIC_URL", "https://agent.example.com:99999", "bad port"),
        ("SWITCHBOARD_PUBLIC_URL", "https://:443", "no host"),
        ("SWITCHBOARD_REDIS_URL", "127.0.0.1:6379", "redis:// or rediss:// or unix://"),
        ("SWITCHBOARD_REDIS_URL", "redis://localhost:port/0", "bad port"),
    ],
)
def test_a_bad_value_is_refused_with_the_variable_and_what_it_may_be(
    name: str, value: str, says: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    message = str(caught.value)
    assert message.startswith(name) and says in message and value in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("key", "value", "variable"),
    [
        ("interruptible", "sometimes", "SWITCHBOARD_INTERRUPTIBLE"),
        ("tts_provider", "amazon", "SWITCHBOARD_TTS_PROVIDER"),
        ("interrupt_sensitivity", "extreme", "SWITCHBOARD_INTERRUPT_SENSITIVITY"),
    ],
)
def test_the_profile_and_the_environment_refuse_the_same_values(
    tmp_path: Path, key: str, value: str, variable: str
) -> None:
    profile = tmp_path / "agent.toml"
    profile.write_text(f'[voice]\n{key} = "{value}"\n')
    with pytest.raises(SettingsError) as from_profile:
        Settings.from_env({"SWITCHBOARD_PROFILE": str(profile)})
    with pytest.raises(SettingsError) as from_env:
        Settings.from_env({variable: value})
    # Same rule, same words; each names where the value came from.
    assert f"voice.{key} must be one of" in str(from_profile.value)
    rule = str(from_env.value).removeprefix(variable)
    assert str(from_profile.value).endswith(rule)


def test_good_values_pass_and_log_level_takes_any_case() -> None:
    s = Settings.from_env(
        {
            "SWITCHBOARD_INTERRUPTIBLE": "speech",
            "SWITCHBOARD_TTS_PROVIDER": "Amazon",
            "SWITCHBOARD_LOG_LEVEL": "WARNING",
            "SWITCHBOARD_PORT": "0",
            "SWITCHBOARD_REDIS_URL": "rediss://user:secret@redis.example.com:6380/2",
        }
    )
    assert s.relay.interruptible == "speech" and s.relay.tts_provider == "Amazon"
    assert s.log_level == "warning" and s.port == 0
    assert s.redis_url == "rediss://user:secret@redis.example.com:6380/2"


def test_dotenv_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# the agent's secrets\n"
        "TWILIO_AUTH_TOKEN=from-file\n"
        "SWITCHBOARD_PORT=9000\n"
        'SWITCHBOARD_WELCOME_GREETING="Hi, from the file"\n'
    )
    env = read_env(dotenv, {"SWITCHBOARD_PORT": "9100"})
    settings = Settings.from_env(env)
    assert settings.twilio_auth_token == "from-file"
    assert settings.port == 9100  # the environment wins
    assert settings.relay.welcome_greeting == "Hi, from the file"
    # A variable set to an empty string in the environment still wins.
    assert read_env(dotenv, {"TWILIO_AUTH_TOKEN": ""})["TWILIO_AUTH_TOKEN"] == ""
    assert read_env(tmp_path / "missing.env", {"A": "1"}) == {"A": "1"}


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SWITCHBOARD_SETUP_TIMEOUT_S": "0"}, "SWITCHBOARD_SETUP_TIMEOUT_S must be > 0"),
        ({"SWITCHBOARD_HTTP_TIMEOUT_S": "0"}, "SWITCHBOARD_HTTP_TIMEOUT_S must be > 0"),
        (
            {"SWITCHBOARD_MAX_SOCKETS": "2000", "SWITCHBOARD_MAX_CONNECTIONS": "2000"},
            "SWITCHBOARD_MAX_SOCKETS (2000) must be below SWITCHBOARD_MAX_CONNECTIONS (2000)",
        ),
    ],
)
def test_gateway_limits_are_checked(env: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert str(caught.value).startswith(says)


def test_gateway_limits_reach_the_gateway() -> None:
    config = Settings.from_env(
        {
            "SWITCHBOARD_SETUP_TIMEOUT_S": "2.5",
            "SWITCHBOARD_HTTP_TIMEOUT_S": "4",
            "SWITCHBOARD_MAX_SOCKETS": "10",
            "SWITCHBOARD_MAX_CONNECTIONS": "20",
            "SWITCHBOARD_SESSION_SECRET": "s3cret",
        }
    ).gateway_config()
    assert (config.setup_timeout_s, config.http_timeout_s) == (2.5, 4.0)
    assert (config.max_sockets, config.max_connections) == (10, 20)
    assert config.session_secret == "s3cret"
