"""SWITCHBOARD_INTERIM_PROMPTS: whether the gateway publishes interim prompts."""

from __future__ import annotations

import pytest

from switchboard.settings import Settings, SettingsError


def test_interim_prompts_are_published_when_preemptive_replies_read_them() -> None:
    partials = {"SWITCHBOARD_PARTIAL_PROMPTS": "true"}
    assert Settings.from_env(partials).gateway_config().interim_prompts is True
    # Nothing reads them without preemptive replies.
    assert Settings.from_env({}).gateway_config().interim_prompts is False
    no_preempt = {**partials, "SWITCHBOARD_PREEMPTIVE": "off"}
    assert Settings.from_env(no_preempt).gateway_config().interim_prompts is False
    # Set, it wins either way.
    off = Settings.from_env({**partials, "SWITCHBOARD_INTERIM_PROMPTS": "off"})
    assert off.gateway_config().interim_prompts is False
    on = Settings.from_env({"SWITCHBOARD_INTERIM_PROMPTS": "on"})
    assert on.gateway_config().interim_prompts is True


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="SWITCHBOARD_INTERIM_PROMPTS"):
        Settings.from_env({"SWITCHBOARD_INTERIM_PROMPTS": "sometimes"})
