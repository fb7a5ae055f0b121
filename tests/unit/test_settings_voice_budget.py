"""Settings of the voice budget and of Claude's thinking reach the provider."""

from __future__ import annotations

import pytest

from actors.providers import AnthropicProvider, make_provider
from switchboard.settings import Settings, SettingsError


def test_defaults_are_voice_friendly() -> None:
    config = Settings.from_env({"ANTHROPIC_API_KEY": "k"}).llm_config()
    assert config.model == "claude-haiku-5-5"
    assert (config.first_token_deadline_s, config.fallback_model) == (2.5, None)
    assert (config.thinking, config.effort) == ("off", "low")
    provider = make_provider(config)
    assert isinstance(provider, AnthropicProvider)
    assert provider.first_token_deadline_s == 2.5
    assert provider.thinking is not None and provider.thinking.param() == {"type": "disabled"}
    assert provider.effort == "low"
    assert provider.prompt_cache is True and provider.keepalive_s == 300.0


def test_the_environment_sets_them() -> None:
    config = Settings.from_env(
        {
            "ANTHROPIC_API_KEY": "k",
            "SWITCHBOARD_FIRST_TOKEN_DEADLINE_S": "4",
            "SWITCHBOARD_FALLBACK_MODEL": "claude-sonnet-5-5",
            "SWITCHBOARD_THINKING": "budget:2048",
            "SWITCHBOARD_EFFORT": "medium",
            "SWITCHBOARD_MAX_TOKENS": "4096",
            "SWITCHBOARD_PROMPT_CACHE": "false",
            "SWITCHBOARD_ANTHROPIC_KEEPALIVE_S": "60",
        }
    ).llm_config()
    provider = make_provider(config)
    assert isinstance(provider, AnthropicProvider)
    assert provider.first_token_deadline_s == 4.0
    assert provider.fallback_model == "claude-sonnet-5-5"
    assert provider.thinking is not None and provider.thinking.budget_tokens == 2048
    assert provider.effort == "medium"
    assert provider.prompt_cache is False and provider.keepalive_s == 60.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SWITCHBOARD_FIRST_TOKEN_DEADLINE_S": "0"}, "FIRST_TOKEN_DEADLINE_S must be > 0"),
        ({"SWITCHBOARD_THINKING": "lots"}, "thinking must be 'off', 'adaptive'"),
        ({"SWITCHBOARD_EFFORT": "fast"}, "effort must be one of"),
        ({"SWITCHBOARD_THINKING": "budget:2048"}, "must be below SWITCHBOARD_MAX_TOKENS"),
        ({"SWITCHBOARD_ANTHROPIC_KEEPALIVE_S": "0"}, "ANTHROPIC_KEEPALIVE_S must be > 0"),
        ({"SWITCHBOARD_PROMPT_CACHE": "maybe"}, "PROMPT_CACHE must be true or false"),
    ],
)
def test_bad_values_say_which_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
