"""SWITCHBOARD_INTERIM_PROMPTS: whether the gateway publishes interim prompts."""

from __future__ import annotations

import pytest

from switchboard.settings import Settings, SettingsError


def test_interim_prompts_are_published_unless_turned_off() -> None:
    assert Settings.from_env({}).gateway_config().interim_prompts is True
    off = Settings.from_env({"SWITCHBOARD_INTERIM_PROMPTS": "off"})
    assert off.gateway_config().interim_prompts is False


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="SWITCHBOARD_INTERIM_PROMPTS"):
        Settings.from_env({"SWITCHBOARD_INTERIM_PROMPTS": "sometimes"})
