"""The gateway's configuration: built once by the composition root, passed down."""

from __future__ import annotations

from dataclasses import dataclass, field

from bus.keys import Keys

DEFAULT_RESUME_GREETING = "Sorry about that, we got cut off. Where were we?"


@dataclass(frozen=True, slots=True)
class LanguageOption:
    """A ``<Language>`` child of ``<ConversationRelay>``."""

    code: str
    tts_provider: str | None = None
    voice: str | None = None
    transcription_provider: str | None = None
    speech_model: str | None = None


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
    languages: tuple[LanguageOption, ...] = ()
    parameters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything the gateway needs; the composition root builds it once."""

    gateway_id: str
    host: str = "127.0.0.1"
    port: int = 8080
    # The URL Twilio uses to reach us (scheme + host [+ path prefix]), e.g.
    # https://agent.example.com. Signatures are checked against it, and the
    # relay URL in TwiML is derived from it (https -> wss, http -> ws).
    public_url: str = "http://127.0.0.1:8080"
    auth_token: str | None = None
    relay: RelayAttributes = field(default_factory=RelayAttributes)
    keys: Keys = field(default_factory=Keys)
    max_frame_bytes: int = 64 * 1024
    max_body_bytes: int = 64 * 1024
    # Spoken as welcomeGreeting of the fresh session that /action answers
    # after a failed one (the same callSid continues its history).
    resume_greeting: str = DEFAULT_RESUME_GREETING

    @property
    def relay_url(self) -> str:
        base = self.public_url.rstrip("/")
        if base.startswith("https://"):
            base = "wss://" + base[len("https://") :]
        elif base.startswith("http://"):
            base = "ws://" + base[len("http://") :]
        return base + "/relay"

    def public(self, path: str) -> str:
        """The public http(s) URL of one of our paths (what Twilio signs)."""
        return self.public_url.rstrip("/") + path
