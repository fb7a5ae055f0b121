"""TwiML answers: ``<Connect><ConversationRelay>`` for the voice webhook, hang-up.

Rendered with twilio-python's ``VoiceResponse``, which writes the camelCase
attribute names Twilio documents, booleans as ``"true"``/``"false"`` and
escapes attribute values through ``xml.etree``.
"""

from __future__ import annotations

from typing import Any

from twilio.twiml.voice_response import Connect, VoiceResponse

from gateway.config import GatewayConfig, RelayAttributes

# RelayAttributes field -> keyword of twilio-python's conversation_relay(), which
# turns snake_case into the camelCase attribute (welcome_greeting -> welcomeGreeting).
_ATTRIBUTES: tuple[str, ...] = (
    "welcome_greeting",
    "welcome_greeting_interruptible",
    "language",
    "tts_language",
    "transcription_language",
    "tts_provider",
    "voice",
    "transcription_provider",
    "speech_model",
    "interruptible",
    "interrupt_sensitivity",
    "dtmf_detection",
    "report_input_during_agent_speech",
    "preemptible",
    "partial_prompts",
    "hints",
    "debug",
    "intelligence_service",
)


def relay_attributes(relay: RelayAttributes) -> dict[str, Any]:
    """The non-``None`` attributes of ``relay`` as conversation_relay() keywords."""
    found: dict[str, Any] = {}
    for name in _ATTRIBUTES:
        value = getattr(relay, name)
        if value is not None:
            found[name] = value
    return found


def connect_twiml(config: GatewayConfig) -> str:
    """TwiML connecting the call to our relay socket, with ``<Connect action>``.

    ``action`` is our public ``/action`` URL, so Twilio reports how each
    session ended (and asks what to do next) there.
    """
    response = VoiceResponse()
    connect = Connect(action=config.public("/action"))
    relay = connect.conversation_relay(url=config.relay_url, **relay_attributes(config.relay))
    for option in config.relay.languages:
        extra = {
            "tts_provider": option.tts_provider,
            "voice": option.voice,
            "transcription_provider": option.transcription_provider,
            "speech_model": option.speech_model,
        }
        relay.language(code=option.code, **{k: v for k, v in extra.items() if v is not None})
    for name, value in config.relay.parameters:
        relay.parameter(name=name, value=value)
    response.append(connect)
    return str(response.to_xml())


def hangup_twiml() -> str:
    """TwiML that ends the call."""
    response = VoiceResponse()
    response.hangup()
    return str(response.to_xml())
