"""The speaking rate setting reaches the gateway and ``switchboard call`` too.

(tests/conversation/test_speaking_rate.py covers the conversation's side.)
"""

from __future__ import annotations

from gateway.config import GatewayConfig
from relay.speech import CHARS_PER_SECOND
from switchboard.cli import _speech_rate
from switchboard.settings import Settings


def test_gateway_and_phone_default_to_the_one_rate() -> None:
    settings = Settings.from_env({})
    assert GatewayConfig(gateway_id="gw").speech_chars_per_second == CHARS_PER_SECOND
    assert settings.gateway_config().speech_chars_per_second == CHARS_PER_SECOND
    assert _speech_rate(None, settings) == CHARS_PER_SECOND


def test_the_setting_reaches_the_gateway_and_the_phone() -> None:
    settings = Settings.from_env({"SWITCHBOARD_SPEECH_CHARS_PER_S": "20"})
    assert settings.gateway_config().speech_chars_per_second == 20.0
    assert _speech_rate(None, settings) == 20.0
    assert _speech_rate(40.0, settings) == 40.0  # switchboard call --speech-rate 40
    assert _speech_rate(0.0, settings) is None  # --speech-rate 0: no speech timing
