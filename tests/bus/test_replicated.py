"""``WaitPolicy``: the settings for confirming caller events by a replica."""

from __future__ import annotations

import re

import pytest

from bus.replicated import DEFAULT_WAIT_TIMEOUT_MS, WaitPolicy


def test_on_by_default_with_one_replica() -> None:
    assert WaitPolicy.from_env({}) == WaitPolicy(1, DEFAULT_WAIT_TIMEOUT_MS)


def test_read_from_the_environment() -> None:
    env = {"SWITCHBOARD_REDIS_WAIT_REPLICAS": "0", "SWITCHBOARD_REDIS_WAIT_TIMEOUT_MS": " 250 "}
    assert WaitPolicy.from_env(env) == WaitPolicy(replicas=0, timeout_ms=250)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        (
            "SWITCHBOARD_REDIS_WAIT_REPLICAS",
            "one",
            "SWITCHBOARD_REDIS_WAIT_REPLICAS must be a whole",
        ),
        ("SWITCHBOARD_REDIS_WAIT_REPLICAS", "-1", "must be 0 (off) or more"),
        ("SWITCHBOARD_REDIS_WAIT_TIMEOUT_MS", "0", "must be a positive number of ms"),
        ("SWITCHBOARD_REDIS_WAIT_TIMEOUT_MS", "1.5", "TIMEOUT_MS must be a whole number"),
    ],
)
def test_a_bad_value_names_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        WaitPolicy.from_env({name: value})
