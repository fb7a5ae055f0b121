"""TwiML for ConversationRelay: building what the app answers, parsing what Twilio reads.

Building (the app's side): :class:`RelayAttributes` is the
``<ConversationRelay>`` noun's attributes; :func:`connect_twiml` renders
``<Response><Connect action><ConversationRelay .../></Connect></Response>``,
and :func:`hangup_twiml`, :func:`dial_twiml`, :func:`enqueue_twiml` the
answers that end a call or hand it on. Rendered with twilio-python's
``VoiceResponse``, which writes the camelCase attribute names Twilio
documents, booleans as ``"true"``/``"false"`` and escapes attribute values
through ``xml.etree``.

Parsing (Twilio's side, for the simulator): :func:`parse_twiml` reads a
``<Response>`` into its verbs and the relay it starts (:class:`RelayTwiml`),
and :func:`check_relay_url` holds Twilio's rule that the socket is
``wss://``. A document that cannot start a session is a :class:`TwimlError`
(Twilio would fail the call with 64102).
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from twilio.twiml.voice_response import Connect, VoiceResponse

__all__ = [
    "ATTRIBUTE_CHOICES",
    "ATTRIBUTE_FIELDS",
    "LANGUAGE_FIELDS",
    "NEWER_RELAY_ATTRIBUTES",
    "LanguageOption",
    "RelayAttributes",
    "RelayTwiml",
    "TwimlError",
    "TwimlResponse",
    "check_relay_url",
    "connect_twiml",
    "dial_twiml",
    "enqueue_twiml",
    "hangup_twiml",
    "parse_twiml",
    "relay_attributes",
]


class TwimlError(ValueError):
    """The TwiML cannot start a relay session (no relay, bad url, bad XML)."""


# --------------------------------------------------------------------------- building


@dataclass(frozen=True, slots=True)
class LanguageOption:
    """A ``<Language>`` child of ``<ConversationRelay>`` (twilio-python 9.13's keywords)."""

    code: str
    tts_provider: str | None = None
    voice: str | None = None
    transcription_provider: str | None = None
    speech_model: str | None = None
    hints: str | None = None
    asr_smart_format: bool | None = None
    tts_text_normalization: str | None = None
    tts_language_text_normalization: bool | None = None


# LanguageOption fields rendered as <Language> attributes (besides ``code``).
LANGUAGE_FIELDS: tuple[str, ...] = (
    "tts_provider",
    "voice",
    "transcription_provider",
    "speech_model",
    "hints",
    "asr_smart_format",
    "tts_text_normalization",
    "tts_language_text_normalization",
)


@dataclass(frozen=True, slots=True)
class RelayAttributes:
    """Attributes of the ``<ConversationRelay>`` noun we answer in TwiML.

    ``None`` means "leave it out and take Twilio's default".
    """

    welcome_greeting: str | None = None
    welcome_greeting_interruptible: str | None = None
    language: str | None = "en-US"
    tts_language: str | None = None
    transcription_language: str | None = None
    tts_provider: str | None = None
    voice: str | None = None
    transcription_provider: str | None = None
    speech_model: str | None = None
    interruptible: str | None = None
    interrupt_sensitivity: str | None = None
    dtmf_detection: bool | None = None
    report_input_during_agent_speech: str | None = None
    preemptible: bool | None = None
    partial_prompts: bool | None = None
    hints: str | None = None
    debug: str | None = None
    intelligence_service: str | None = None
    # The newer attributes (twilio-python 9.13; docs/PROTOCOL-REFERENCE.md).
    events: str | None = None
    profanity_filter: bool | None = None
    elevenlabs_text_normalization: str | None = None
    background_noise_reduction: bool | None = None
    speech_timeout: str | None = None
    deepgram_smart_format: bool | None = None
    ignore_backchannel: bool | None = None
    partial_prompt_on_hangup: bool | None = None
    eager_eot_threshold: float | None = None
    asr_smart_format: bool | None = None
    tts_text_normalization: str | None = None
    tts_language_text_normalization: bool | None = None
    elevenlabs_language_text_normalization: bool | None = None
    include_in_prompt: str | None = None
    customer_name: str | None = None
    application_reconnect: bool | None = None
    echo_prompt_filtering: bool | None = None
    turn_detection: bool | None = None
    languages: tuple[LanguageOption, ...] = ()
    parameters: tuple[tuple[str, str], ...] = ()

    def subscribed(self, event: str) -> bool:
        """Whether ``debug`` or ``events`` subscribes to ``event`` (e.g. speaker-events)."""
        return event in f"{self.debug or ''} {self.events or ''}".split()

    def problems(self) -> list[tuple[str, str]]:
        """``(field, what is wrong)`` for every value Twilio would refuse."""
        found: list[tuple[str, str]] = []
        for name, allowed in ATTRIBUTE_CHOICES.items():
            value = getattr(self, name)
            if value is None:
                continue
            words = str(value).split() if name in _WORD_LISTS else [str(value)]
            bad = [w for w in words if w not in allowed]
            if bad or not words:
                found.append((name, f"must be one of {', '.join(allowed)}, got {value!r}"))
        timeout = self.speech_timeout
        if timeout is not None and timeout != "auto" and not timeout.isdigit():
            found.append(("speech_timeout", f"must be 'auto' or milliseconds, got {timeout!r}"))
        threshold = self.eager_eot_threshold
        if threshold is not None and not 0.3 <= threshold <= 0.9:
            found.append(("eager_eot_threshold", f"must be from 0.3 to 0.9, got {threshold}"))
        for option in self.languages:
            norm = option.tts_text_normalization
            if norm is not None and norm not in _NORMALIZATION:
                found.append(
                    (
                        "languages",
                        f"{option.code}: tts_text_normalization must be one of "
                        f"{', '.join(_NORMALIZATION)}, got {norm!r}",
                    )
                )
        return found


_INTERRUPTIBLE = ("none", "dtmf", "speech", "any", "true", "false")
_NORMALIZATION = ("on", "auto", "off")
# Values Twilio documents (NOUN) or twilio-python describes (TPY).
ATTRIBUTE_CHOICES: dict[str, tuple[str, ...]] = {
    "welcome_greeting_interruptible": _INTERRUPTIBLE,
    "interruptible": _INTERRUPTIBLE,
    "report_input_during_agent_speech": ("none", "dtmf", "speech", "any"),
    "interrupt_sensitivity": ("low", "medium", "high"),
    "tts_provider": ("ElevenLabs", "Google", "Amazon"),
    "transcription_provider": ("Deepgram", "Google"),
    "debug": ("debugging", "speaker-events", "tokens-played"),
    "events": ("speaker-events", "tokens-played", "config-updated"),
    "elevenlabs_text_normalization": _NORMALIZATION,
    "tts_text_normalization": _NORMALIZATION,
    "include_in_prompt": ("turn-state", "prompt-segments"),
}
# Attributes whose value is a space-separated list of the choices.
_WORD_LISTS = frozenset({"debug", "events", "include_in_prompt"})

# RelayAttributes field -> keyword of twilio-python's conversation_relay(). It
# turns snake_case into the camelCase attribute (welcome_greeting ->
# welcomeGreeting); a few newer keywords are camelCase already.
_ATTRIBUTES: tuple[tuple[str, str], ...] = (
    *(
        (name, name)
        for name in (
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
            "profanity_filter",
            "elevenlabs_text_normalization",
            "partial_prompt_on_hangup",
            "eager_eot_threshold",
            "asr_smart_format",
            "tts_text_normalization",
            "tts_language_text_normalization",
            "elevenlabs_language_text_normalization",
            "include_in_prompt",
            "customer_name",
            "application_reconnect",
            "echo_prompt_filtering",
            "turn_detection",
        )
    ),
    ("events", "events"),
    ("background_noise_reduction", "backgroundNoiseReduction"),
    ("speech_timeout", "speechTimeout"),
    ("deepgram_smart_format", "deepgramSmartFormat"),
    ("ignore_backchannel", "ignoreBackchannel"),
)
# Every settable attribute: the RelayAttributes fields above.
ATTRIBUTE_FIELDS: tuple[str, ...] = tuple(name for name, _ in _ATTRIBUTES)
# Those twilio-python added in 2025-2026 (the rest predate them).
NEWER_RELAY_ATTRIBUTES: tuple[str, ...] = (
    "events",
    "profanity_filter",
    "elevenlabs_text_normalization",
    "background_noise_reduction",
    "speech_timeout",
    "deepgram_smart_format",
    "ignore_backchannel",
    "partial_prompt_on_hangup",
    "eager_eot_threshold",
    "asr_smart_format",
    "tts_text_normalization",
    "tts_language_text_normalization",
    "elevenlabs_language_text_normalization",
    "include_in_prompt",
    "customer_name",
    "application_reconnect",
    "echo_prompt_filtering",
    "turn_detection",
)


def relay_attributes(relay: RelayAttributes) -> dict[str, Any]:
    """The non-``None`` attributes of ``relay`` as conversation_relay() keywords."""
    found: dict[str, Any] = {}
    for name, keyword in _ATTRIBUTES:
        value = getattr(relay, name)
        if value is not None:
            found[keyword] = value
    return found


def connect_twiml(attributes: RelayAttributes, *, url: str, action: str) -> str:
    """TwiML connecting the call to the relay socket at ``url``.

    ``action`` is the ``<Connect action>`` URL, where Twilio reports how the
    session ended (and asks what to do next).
    """
    response = VoiceResponse()
    connect = Connect(action=action)
    relay = connect.conversation_relay(url=url, **relay_attributes(attributes))
    for option in attributes.languages:
        extra = {name: getattr(option, name) for name in LANGUAGE_FIELDS}
        relay.language(code=option.code, **{k: v for k, v in extra.items() if v is not None})
    for name, value in attributes.parameters:
        relay.parameter(name=name, value=value)
    response.append(connect)
    return str(response.to_xml())


def hangup_twiml() -> str:
    """TwiML that ends the call."""
    response = VoiceResponse()
    response.hangup()
    return str(response.to_xml())


def dial_twiml(number: str) -> str:
    """TwiML that transfers the call to ``number`` (E.164)."""
    response = VoiceResponse()
    response.dial(number)
    return str(response.to_xml())


def enqueue_twiml(queue: str) -> str:
    """TwiML that puts the caller into the TaskRouter/queue ``queue``."""
    response = VoiceResponse()
    response.enqueue(queue)
    return str(response.to_xml())


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class RelayTwiml:
    """``<Connect><ConversationRelay>`` as the app wrote it."""

    url: str
    attributes: Mapping[str, str]
    languages: tuple[Mapping[str, str], ...] = ()
    parameters: Mapping[str, str] = field(default_factory=dict, hash=False)
    action: str | None = None
    action_method: str = "POST"

    def flag(self, name: str) -> bool:
        """A boolean attribute (TwiML writes ``"true"``/``"false"``)."""
        return self.attributes.get(name, "").strip().lower() == "true"

    @property
    def welcome_greeting(self) -> str | None:
        return self.attributes.get("welcomeGreeting")

    @property
    def dtmf_detection(self) -> bool:
        return self.flag("dtmfDetection")

    @property
    def partial_prompts(self) -> bool:
        return self.flag("partialPrompts")


@dataclass(frozen=True, slots=True)
class TwimlResponse:
    """A TwiML document: its top-level verbs in order, and the relay if it starts one."""

    xml: str
    verbs: tuple[str, ...]
    relay: RelayTwiml | None


def parse_twiml(xml: str) -> TwimlResponse:
    """Parse a ``<Response>``. Raises :class:`TwimlError` for bad XML or a bad relay."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise TwimlError(f"TwiML is not XML: {exc}") from None
    if root.tag != "Response":
        raise TwimlError(f"TwiML root is <{root.tag}>, not <Response>")
    relay: RelayTwiml | None = None
    for connect in root.iter("Connect"):
        element = connect.find("ConversationRelay")
        if element is None:
            continue
        url = element.get("url")
        if not url:
            raise TwimlError("<ConversationRelay> has no url")
        relay = RelayTwiml(
            url=url,
            attributes=MappingProxyType(dict(element.attrib)),
            languages=tuple(
                MappingProxyType(dict(lang.attrib)) for lang in element.findall("Language")
            ),
            parameters=MappingProxyType(
                {p.get("name", ""): p.get("value", "") for p in element.findall("Parameter")}
            ),
            action=connect.get("action"),
            action_method=(connect.get("method") or "POST").upper(),
        )
        break
    return TwimlResponse(xml=xml, verbs=tuple(child.tag for child in root), relay=relay)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_relay_url(url: str) -> None:
    """Twilio only connects to ``wss://``; ``ws://`` passes for loopback development."""
    parts = urlsplit(url)
    if parts.scheme == "wss" and parts.hostname:
        return
    if parts.scheme == "ws" and parts.hostname and _is_loopback(parts.hostname):
        return
    raise TwimlError(f"relay url must be wss:// (ws:// only on loopback): {url!r}")
