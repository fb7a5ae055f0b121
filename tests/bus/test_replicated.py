"""``WaitPolicy``: the settings for confirming caller events by a replica."""

from __future__ import annotations

import re

import pytest

from bus.replicated import DEFAULT_WAIT_TIMEOUT_MS, WaitPolicy
from switchboard.settings import Settings, SettingsError


def test_on_by_default_with_one_replica() -> None:
    assert Settings.from_env({}).redis_wait == WaitPolicy(1, DEFAULT_WAIT_TIMEOUT_MS)


def test_read_from_the_environment() -> None:
    env = {"SWITCHBOARD_REDIS_WAIT_REPLICAS": "0", "SWITCHBOARD_REDIS_WAIT_TIMEOUT_MS": "250"}
    assert Settings.from_env(env).redis_wait == WaitPolicy(replicas=0, timeout_ms=250)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SWITCHBOARD_REDIS_WAIT_REPLICAS", "one", "SWITCHBOARD_REDIS_WAIT_REPLICAS must be an"),
        ("SWITCHBOARD_REDIS_WAIT_REPLICAS", "-1", "SWITCHBOARD_REDIS_WAIT_REPLICAS must be >= 0"),
        (
            "SWITCHBOARD_REDIS_WAIT_TIMEOUT_MS",
            "0",
            "SWITCHBOARD_REDIS_WAIT_TIMEOUT_MS must be >= 1",
        ),
        ("SWITCHBOARD_REDIS_WAIT_TIMEOUT_MS", "1.5", "TIMEOUT_MS must be an integer"),
    ],
)
def test_a_bad_value_names_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(says)):
        Settings.from_env({name: value})


def test_the_policy_itself_refuses_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="replicas"):
        WaitPolicy(replicas=-1)
    with pytest.raises(ValueError, match="timeout_ms"):
        WaitPolicy(timeout_ms=0)
