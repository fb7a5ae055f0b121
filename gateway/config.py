"""The gateway's configuration: built once by the composition root, passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from bus.keys import Keys
from gateway.reply_deadline import DEFAULT_REPLY_DEADLINE_S
from relay.speech import CHARS_PER_SECOND
from relay.twiml import RelayAttributes

DEFAULT_RESUME_GREETING = "Sorry about that, we got cut off. Where were we?"
DEFAULT_RESUME_APOLOGY = "Sorry, we're having technical trouble and can't continue this call."
DEFAULT_MAX_RESUMES = 2
DEFAULT_REPLY_APOLOGY = "Sorry, I'm having trouble right now. Could you say that again?"
DEFAULT_DRAIN_DEADLINE_S = 30.0


DEFAULT_SETUP_TIMEOUT_S: Final = 5.0
DEFAULT_MAX_SOCKETS: Final = 1024
DEFAULT_MAX_CONNECTIONS: Final = 1536
DEFAULT_HTTP_TIMEOUT_S: Final = 10.0


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
    # Every text frame we send stays under this (a longer token is split at
    # sentence or word boundaries, gateway/spoken.py). Twilio publishes no
    # limit; small frames also suit its chunked speech synthesis.
    max_text_frame_bytes: int = 4096
    max_body_bytes: int = 64 * 1024
    # Spoken as welcomeGreeting of the fresh session that /action answers
    # after a failed one (the same callSid continues its history).
    resume_greeting: str = DEFAULT_RESUME_GREETING
    # The dashboard and operator API (gateway.dashboard): the token they need,
    # and whether they are open without one (dev).
    dashboard_token: str | None = None
    dashboard_open: bool = False
    # Characters a second Twilio is assumed to speak (relay.speech): how long
    # an after_speech frame waits for a reply without speaker events.
    speech_chars_per_second: float = CHARS_PER_SECOND
    # A failed session is resumed at most this often per call, and only for
    # transient failures (gateway/resume.py); otherwise the caller hears
    # ``resume_apology`` and the call hangs up, or goes to the handoff
    # number or queue when one is set.
    max_resumes: int = DEFAULT_MAX_RESUMES
    resume_apology: str = DEFAULT_RESUME_APOLOGY
    handoff_number: str | None = None
    handoff_queue: str | None = None
    # The SharedKey secret of a Twilio Webhook Setting that signs our
    # webhooks with HMAC-SHA256 (X-Twilio-Webhooks-Signature-Settings).
    webhook_shared_key: str | None = None
    # Signs the per-call session tokens (gateway/calltoken.py). Every gateway
    # of a deployment needs the same one; without it the Twilio auth token
    # is used, and without that a random secret of this process (one gateway).
    session_secret: str | None = None
    # ``setup`` must arrive this soon after the upgrade, or the socket is closed.
    setup_timeout_s: float = DEFAULT_SETUP_TIMEOUT_S
    # Relay sockets open at once (set up or not); one more upgrade gets 503.
    max_sockets: int = DEFAULT_MAX_SOCKETS
    # Connections of any kind open at once (more get 503 and are closed):
    # above max_sockets, so health checks and webhooks still get through
    # when the sockets are full. Capped below the process's open-file limit.
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    # A request head and body must arrive within this, and an idle keep-alive
    # connection is closed after it.
    http_timeout_s: float = DEFAULT_HTTP_TIMEOUT_S
    # A final prompt whose reply has not started within this long gets
    # ``reply_apology`` (gateway.reply_deadline); 0 turns it off.
    reply_deadline_s: float = DEFAULT_REPLY_DEADLINE_S
    reply_apology: str = DEFAULT_REPLY_APOLOGY
    # On SIGTERM, live calls go on this long before they are handed over to
    # another gateway through /action (gateway.drain).
    drain_deadline_s: float = DEFAULT_DRAIN_DEADLINE_S
    # Whether interim prompts (``last: false``) are published at all: only
    # preemptive replies read them (gateway.interim, rule 1).
    interim_prompts: bool = True

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
