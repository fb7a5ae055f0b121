"""Configuration of the built-in actors: built once by the composition root."""

from __future__ import annotations

from dataclasses import dataclass, field

from bus.keys import Keys

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly, concise voice assistant on a phone call. Your words are "
    "spoken aloud by a text-to-speech engine, so answer in short, plain sentences: "
    "no lists, no markdown, no emoji. Spell out numbers and symbols as words."
)


@dataclass(frozen=True, slots=True)
class ConversationConfig:
    keys: Keys = field(default_factory=Keys)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # The greeting Twilio speaks (the TwiML welcomeGreeting); recorded as the
    # first assistant message so the model knows what the caller heard.
    welcome_greeting: str | None = None
    # How long a call's state outlives its last event.
    state_ttl_ms: int = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class LLMConfig:
    keys: Keys = field(default_factory=Keys)
    provider: str = "scripted"  # "anthropic" | "scripted"
    model: str = "claude-haiku-4-5"
    max_tokens: int = 1024
    # Scripted provider pacing: time to first token and gap between words.
    scripted_first_token_ms: float = 0.0
    scripted_token_gap_ms: float = 0.0
    # Requests one LLM worker streams at once.
    concurrency: int = 256
    # A request pending this long on a worker that neither finished nor
    # touched it is taken over by another worker (its worker is presumed
    # dead). Live workers touch their requests every third of this.
    claim_idle_ms: int = 5000
    # How often each worker looks for such requests.
    claim_interval_s: float = 1.0
    # A request delivered more often than this is dead-lettered (and the
    # caller hears the apology) instead of being tried again.
    max_deliveries: int = 5
