"""The speaking rate is one setting, and it reaches every estimate of speech."""

from __future__ import annotations

import pytest

from actors.config import ConversationConfig
from actors.heard import locate_heard
from relay.speech import CHARS_PER_SECOND
from switchboard.settings import Settings, SettingsError

REPLY = "We open at nine in the morning, and we close at ten at night."


def test_one_default_everywhere() -> None:
    settings = Settings.from_env({})
    assert settings.speech_chars_per_second == CHARS_PER_SECOND
    assert settings.conversation_config().speech_chars_per_second == CHARS_PER_SECOND
    assert ConversationConfig().speech_chars_per_second == CHARS_PER_SECOND


def test_the_setting_reaches_the_conversation() -> None:
    settings = Settings.from_env({"SWITCHBOARD_SPEECH_CHARS_PER_S": "20"})
    assert settings.conversation_config().speech_chars_per_second == 20.0


def test_an_interrupts_duration_is_read_at_the_given_rate() -> None:
    # 1.5 s of a reply at 10 and at 20 characters a second, cut at a word.
    slow = locate_heard(REPLY, duration_ms=1500, chars_per_second=10)
    fast = locate_heard(REPLY, duration_ms=1500, chars_per_second=20)
    assert (slow.text, fast.text) == ("We open at nine", "We open at nine in the")


@pytest.mark.parametrize("value", ["0", "-3", "fast", "nan", "inf"])
def test_a_bad_rate_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="SWITCHBOARD_SPEECH_CHARS_PER_S"):
        Settings.from_env({"SWITCHBOARD_SPEECH_CHARS_PER_S": value})
