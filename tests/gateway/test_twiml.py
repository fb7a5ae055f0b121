"""TwiML answers: every RelayAttributes field under Twilio's camelCase name."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from gateway.config import GatewayConfig
from gateway.twiml import connect_twiml
from relay.twiml import LanguageOption, RelayAttributes, hangup_twiml


def _relay(xml: str) -> tuple[ET.Element, ET.Element]:
    root = ET.fromstring(xml)
    assert root.tag == "Response"
    connect = root.find("Connect")
    assert connect is not None
    relay = connect.find("ConversationRelay")
    assert relay is not None
    return connect, relay


def test_defaults_render_url_action_and_language_only() -> None:
    config = GatewayConfig("gw", public_url="https://agent.example.com/")
    connect, relay = _relay(connect_twiml(config))
    assert connect.attrib == {"action": "https://agent.example.com/action"}
    assert relay.attrib == {"url": "wss://agent.example.com/relay", "language": "en-US"}
    assert list(relay) == []


def test_every_attribute_and_child() -> None:
    attrs = RelayAttributes(
        welcome_greeting='Hello <caller> & "friends"',
        welcome_greeting_interruptible="speech",
        language="multi",
        tts_language="en-GB",
        transcription_language="en-US",
        tts_provider="Amazon",
        voice="Joanna-Neural",
        transcription_provider="Deepgram",
        speech_model="nova-3-general",
        interruptible="any",
        interrupt_sensitivity="high",
        dtmf_detection=True,
        report_input_during_agent_speech="none",
        preemptible=False,
        partial_prompts=True,
        hints="Switchboard,Twilio",
        debug="speaker-events tokens-played",
        intelligence_service="GA00000000000000000000000000000000",
        languages=(
            LanguageOption(
                "fr-FR",
                tts_provider="Google",
                voice="fr-FR-Neural2-A",
                transcription_provider="Google",
                speech_model="telephony",
            ),
            LanguageOption("de-DE"),
        ),
        parameters=(("tenant", "acme"), ("note", "a<b&c")),
    )
    config = GatewayConfig("gw", public_url="http://localhost:8080", relay=attrs)
    connect, relay = _relay(connect_twiml(config))
    assert connect.get("action") == "http://localhost:8080/action"
    assert relay.attrib == {
        "url": "ws://localhost:8080/relay",
        "welcomeGreeting": 'Hello <caller> & "friends"',
        "welcomeGreetingInterruptible": "speech",
        "language": "multi",
        "ttsLanguage": "en-GB",
        "transcriptionLanguage": "en-US",
        "ttsProvider": "Amazon",
        "voice": "Joanna-Neural",
        "transcriptionProvider": "Deepgram",
        "speechModel": "nova-3-general",
        "interruptible": "any",
        "interruptSensitivity": "high",
        "dtmfDetection": "true",
        "reportInputDuringAgentSpeech": "none",
        "preemptible": "false",
        "partialPrompts": "true",
        "hints": "Switchboard,Twilio",
        "debug": "speaker-events tokens-played",
        "intelligenceService": "GA00000000000000000000000000000000",
    }
    languages = relay.findall("Language")
    assert [lang.attrib for lang in languages] == [
        {
            "code": "fr-FR",
            "ttsProvider": "Google",
            "voice": "fr-FR-Neural2-A",
            "transcriptionProvider": "Google",
            "speechModel": "telephony",
        },
        {"code": "de-DE"},
    ]
    params = relay.findall("Parameter")
    assert [p.attrib for p in params] == [
        {"name": "tenant", "value": "acme"},
        {"name": "note", "value": "a<b&c"},
    ]


def test_none_attributes_are_left_out() -> None:
    config = GatewayConfig("gw", relay=RelayAttributes(language=None, dtmf_detection=False))
    _, relay = _relay(connect_twiml(config))
    assert relay.attrib == {"url": "ws://127.0.0.1:8080/relay", "dtmfDetection": "false"}


def test_hangup() -> None:
    root = ET.fromstring(hangup_twiml())
    assert root.tag == "Response"
    assert [child.tag for child in root] == ["Hangup"]
