"""Every <ConversationRelay> and <Language> attribute of twilio-python is settable and checked."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from twilio.twiml.voice_response import Connect, ConversationRelay

from gateway.twiml import connect_twiml
from relay.twiml import LANGUAGE_FIELDS, RelayAttributes, relay_attributes
from switchboard.settings import Settings, SettingsError


def _keywords(method: object, *, skip: set[str]) -> set[str]:
    params = inspect.signature(method).parameters  # type: ignore[arg-type]
    return {p for p in params if p not in skip and params[p].kind is not params[p].VAR_KEYWORD}


def test_every_attribute_of_twilio_python_has_a_field() -> None:
    # When twilio-python adds an attribute this fails until it is settable.
    everything = RelayAttributes(
        **{
            name: (0.5 if name == "eager_eot_threshold" else "x")
            for name in RelayAttributes.__dataclass_fields__
            if name not in ("languages", "parameters")
        }
    )
    assert set(relay_attributes(everything)) == _keywords(
        Connect.conversation_relay, skip={"self", "url"}
    )
    assert set(LANGUAGE_FIELDS) == _keywords(ConversationRelay.language, skip={"self", "code"})


def test_speaker_events_and_tokens_played_are_subscribed_by_default() -> None:
    settings = Settings.from_env({})
    assert settings.relay.events == "speaker-events tokens-played"
    assert settings.relay.subscribed("speaker-events")
    assert 'events="speaker-events tokens-played"' in connect_twiml(settings.gateway_config())


ENV = {
    "SWITCHBOARD_EVENTS": "speaker-events",
    "SWITCHBOARD_IGNORE_BACKCHANNEL": "true",
    "SWITCHBOARD_SPEECH_TIMEOUT": "800",
    "SWITCHBOARD_EAGER_EOT_THRESHOLD": "0.4",
    "SWITCHBOARD_BACKGROUND_NOISE_REDUCTION": "true",
    "SWITCHBOARD_DEEPGRAM_SMART_FORMAT": "false",
    "SWITCHBOARD_APPLICATION_RECONNECT": "false",
    "SWITCHBOARD_ECHO_PROMPT_FILTERING": "true",
    "SWITCHBOARD_TURN_DETECTION": "true",
    "SWITCHBOARD_PROFANITY_FILTER": "true",
    "SWITCHBOARD_PARTIAL_PROMPT_ON_HANGUP": "true",
    "SWITCHBOARD_INCLUDE_IN_PROMPT": "turn-state",
    "SWITCHBOARD_TTS_TEXT_NORMALIZATION": "auto",
    "SWITCHBOARD_CUSTOMER_NAME": "Ada",
}


def test_the_environment_sets_the_newer_attributes_in_the_twiml() -> None:
    xml = connect_twiml(Settings.from_env(ENV).gateway_config())
    for attribute in (
        'events="speaker-events"',
        'ignoreBackchannel="true"',
        'speechTimeout="800"',
        'eagerEotThreshold="0.4"',
        'backgroundNoiseReduction="true"',
        'deepgramSmartFormat="false"',
        'applicationReconnect="false"',
        'echoPromptFiltering="true"',
        'turnDetection="true"',
        'profanityFilter="true"',
        'partialPromptOnHangup="true"',
        'includeInPrompt="turn-state"',
        'ttsTextNormalization="auto"',
        'customerName="Ada"',
    ):
        assert attribute in xml


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SWITCHBOARD_EVENTS": "speaker-event"}, "SWITCHBOARD_EVENTS must be one of"),
        ({"SWITCHBOARD_DEBUG": "tokens"}, "SWITCHBOARD_DEBUG must be one of"),
        ({"SWITCHBOARD_EAGER_EOT_THRESHOLD": "1.5"}, "from 0.3 to 0.9"),
        ({"SWITCHBOARD_SPEECH_TIMEOUT": "fast"}, "'auto' or milliseconds"),
        ({"SWITCHBOARD_IGNORE_BACKCHANNEL": "maybe"}, "SWITCHBOARD_IGNORE_BACKCHANNEL"),
        ({"SWITCHBOARD_TTS_TEXT_NORMALIZATION": "yes"}, "SWITCHBOARD_TTS_TEXT_NORMALIZATION"),
        ({"SWITCHBOARD_INCLUDE_IN_PROMPT": "everything"}, "SWITCHBOARD_INCLUDE_IN_PROMPT"),
    ],
)
def test_a_bad_value_names_its_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_the_profile_sets_them_and_the_language_ones(tmp_path: Path) -> None:
    profile = tmp_path / "agent.toml"
    profile.write_text(
        """
[voice]
ignore_backchannel = true
eager_eot_threshold = 0.5
events = "speaker-events tokens-played"

[[voice.languages]]
code = "es-ES"
hints = "paella,tapas"
asr_smart_format = true
tts_text_normalization = "on"
"""
    )
    xml = connect_twiml(Settings.from_env({"SWITCHBOARD_PROFILE": str(profile)}).gateway_config())
    assert 'ignoreBackchannel="true"' in xml and 'eagerEotThreshold="0.5"' in xml
    assert '<Language asrSmartFormat="true" code="es-ES" hints="paella,tapas"' in xml
    assert 'ttsTextNormalization="on"' in xml
    bad = tmp_path / "bad.toml"
    bad.write_text('[[voice.languages]]\ncode = "es-ES"\ntts_text_normalization = "loud"\n')
    with pytest.raises(SettingsError, match="tts_text_normalization must be one of"):
        Settings.from_env({"SWITCHBOARD_PROFILE": str(bad)})
