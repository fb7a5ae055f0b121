"""Configuration of the built-in actors: built once by the composition root."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from bus.keys import Keys
from relay.speech import CHARS_PER_SECOND

DEFAULT_MODEL = "claude-haiku-5-5"
DEFAULT_FILLER_TEXT = "One moment."
DEFAULT_REFUSAL_LINE = "I'm sorry, I can't help with that. Is there anything else I can do for you?"
DEFAULT_RESUME_GREETING = "Sorry about that, we got cut off. Where were we?"
DEFAULT_REPROMPT_TEXT = "Are you still there?"
# Said when a reply cannot be given (a provider error, an entry given up on).
DEFAULT_APOLOGY_TEXT = "Sorry, I'm having trouble right now. Please try again in a moment."
DEFAULT_GOODBYE_TEXT = "I haven't heard from you, so I'll end the call now. Goodbye!"

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly, concise voice assistant on a phone call. Your words are "
    "spoken aloud by a text-to-speech engine, so answer in short, plain sentences: "
    "no lists, no markdown, no emoji. Spell out numbers and symbols as words."
)


# Preemptive replies: how long an interim prompt must stay unchanged before
# a reply is started on it (150 ms, as issue 11 specifies; 0 starts it at
# once, which measured ~120 ms sooner for the caller because below Twilio's
# 250 ms cadence every interim prompt settles anyway: docs/ARCHITECTURE.md,
# "The settle time"), how many may start per utterance, and the
# longest utterance (characters) worth one: about 10 s of speech at 14
# characters a second, past which the words change more and a discarded
# reply costs more (LiveKit Agents' defaults are 3 attempts per turn and
# 10 s; docs/ARCHITECTURE.md, "Preemptive replies").
DEFAULT_SETTLE_MS: Final = 150.0
DEFAULT_MAX_SPECULATIONS: Final = 3
DEFAULT_SPECULATION_MAX_CHARS: Final = 140
# Load shedding: an interim prompt (or its settle timer) applied, or a held
# request taken by an LLM worker, this long after it was written starts no
# speculation. The bus is then behind, and a speculation would only add to
# the backlog the final prompt waits in; the final is answered as usual.
# Twilio's interim prompts come about every 250 ms: a worker more than half
# of that behind cannot keep up with them (docs/ARCHITECTURE.md, "Load
# shedding"). 0: never shed.
DEFAULT_SPECULATION_MAX_LAG_MS: Final = 120.0


@dataclass(frozen=True, slots=True)
class ConversationConfig:
    keys: Keys = field(default_factory=Keys)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # The greeting Twilio speaks (the TwiML welcomeGreeting); recorded as the
    # first assistant message so the model knows what the caller heard.
    welcome_greeting: str | None = None
    # How long a call's state outlives its last event.
    state_ttl_ms: int = 24 * 3600 * 1000
    # Said (and recorded) when a call comes back on a new session after the
    # old one failed; the gateway's resume TwiML speaks the same words.
    resume_greeting: str = DEFAULT_RESUME_GREETING
    # Silence: after this long without caller input (counted from when the
    # agent's last words should have finished playing) the agent re-prompts;
    # after ``silence_max_reprompts`` re-prompts it says goodbye and ends the
    # call. ``silence_reprompt_s = 0`` turns the silence timer off.
    silence_reprompt_s: float = 10.0
    silence_max_reprompts: int = 2
    reprompt_text: str = DEFAULT_REPROMPT_TEXT
    goodbye_text: str = DEFAULT_GOODBYE_TEXT
    # Whether the caller can barge in on the goodbye (the text message's
    # interruptible); the call ends once it was heard.
    goodbye_interruptible: bool = False
    # DTMF: digits are buffered until '#' or until this long after the last one.
    dtmf_idle_s: float = 3.0
    # A single-key entry found here is delivered as these words of the caller.
    dtmf_menu: Mapping[str, str] = field(default_factory=dict)
    # Speaking rate (characters a second) behind the estimates of when a
    # reply has finished playing and of how much of it an interrupt's
    # duration covers (SWITCHBOARD_SPEECH_CHARS_PER_S).
    speech_chars_per_second: float = CHARS_PER_SECOND
    # Calls whose last written state the partition owner keeps in memory
    # (LRU), so an entry costs no state read; 0 turns the cache off.
    state_cache_calls: int = 4096
    # Caps on one call's state (actors/conversation/limits.py): the
    # tokensPlayed text kept per reply, and the history (the oldest go first).
    max_played_chars: int = 16_384
    max_history_messages: int = 400
    max_history_chars: int = 400_000
    # Bounded work per entry: a handler still running after this long is
    # cancelled (the attempt fails; after the runtime's attempts the entry is
    # dead-lettered). Keep it above the lease TTL: a bus stall then loses the
    # lease first, which costs the entry no attempt.
    handler_deadline_s: float = 10.0
    # An entry delivered more often than this (its workers died, stalled or
    # lost their lease while handling it) is dead-lettered, and the caller of
    # its call hears ``apology_text``; the partition's other calls go on.
    max_deliveries: int = 5
    apology_text: str = DEFAULT_APOLOGY_TEXT
    # Preemptive replies (actors/conversation/speculation.py): with partial
    # prompts on, a reply is started on an interim prompt unchanged for
    # ``settle_ms``, held until the final prompt says it was the right one.
    # At most ``max_speculations`` per utterance, none for an utterance
    # longer than ``speculation_max_chars``.
    preemptive: bool = False
    settle_ms: float = DEFAULT_SETTLE_MS
    max_speculations: int = DEFAULT_MAX_SPECULATIONS
    speculation_max_chars: int = DEFAULT_SPECULATION_MAX_CHARS
    speculation_max_lag_ms: float = DEFAULT_SPECULATION_MAX_LAG_MS


DEFAULT_FIRST_TOKEN_DEADLINE_S: Final = 2.5
DEFAULT_THINKING: Final = "off"
DEFAULT_EFFORT: Final = "low"
DEFAULT_PROMPT_CACHE: Final = True
DEFAULT_FILLER_AFTER_S: Final = 1.2
DEFAULT_KEEPALIVE_S: Final = 300.0


@dataclass(frozen=True, slots=True)
class LLMConfig:
    keys: Keys = field(default_factory=Keys)
    provider: str = "scripted"  # "anthropic" | "scripted"
    # Claude Haiku 5.5: built for latency-sensitive work (docs/PROTOCOL-REFERENCE.md).
    model: str = DEFAULT_MODEL
    max_tokens: int = 1024
    # A turn's first text token is due within this long, retries included
    # (actors/providers/anthropic.py); then the caller hears the apology.
    first_token_deadline_s: float = DEFAULT_FIRST_TOKEN_DEADLINE_S
    # Answers for the rest of that budget when ``model`` is rate limited
    # or overloaded (429, 529); None: no fallback.
    fallback_model: str | None = None
    # Claude's thinking: "off", "adaptive" or "budget:N" (tokens); thinking
    # adds to the time to first token and is never spoken. And the API's
    # output_config.effort: "low" ... "max".
    thinking: str = DEFAULT_THINKING
    effort: str = DEFAULT_EFFORT
    # cache_control on the stable prefix (actors/providers/claude_cache.py),
    # and how long an idle connection to the API is kept between turns.
    prompt_cache: bool = DEFAULT_PROMPT_CACHE
    keepalive_s: float = DEFAULT_KEEPALIVE_S
    # When a reply's first token is this late the caller hears ``filler_text``
    # (not kept in history, never on two turns in a row); 0: never.
    filler_after_s: float = DEFAULT_FILLER_AFTER_S
    filler_text: str = DEFAULT_FILLER_TEXT
    # Said instead when the model refuses (stop_reason "refusal"); the
    # refused exchange then leaves history (Anthropic: or refusals continue).
    refusal_line: str = DEFAULT_REFUSAL_LINE
    # Scripted provider pacing: time to first token and gap between words.
    scripted_first_token_ms: float = 0.0
    scripted_token_gap_ms: float = 0.0
    # Requests one LLM worker streams at once.
    concurrency: int = 1024
    # A request pending this long on a worker that neither finished nor
    # touched it is taken over by another worker (its worker is presumed
    # dead). Live workers touch their requests every third of this.
    claim_idle_ms: int = 5000
    # How often each worker looks for such requests.
    claim_interval_s: float = 1.0
    # A request delivered more often than this is dead-lettered (and the
    # caller hears the apology) instead of being tried again.
    max_deliveries: int = 5
    # Tools the model may call (actors/tools/): built-in names
    # (end_call, transfer, send_digits, switch_language) and user tools from
    # the ``switchboard.tools`` entry points. Empty: no tools. The
    # composition root maps them from the profile's [tools] enabled.
    tools: tuple[str, ...] = ()
    # Where ``transfer`` sends the caller (profile tools.transfer_number /
    # tools.transfer_queue); the number wins unless the model asks for the queue.
    transfer_number: str | None = None
    transfer_queue: str | None = None
    # Language codes ``switch_language`` may switch to (the profile's
    # voice.language and every [[voice.languages]] code).
    languages: tuple[str, ...] = ()
    # Completion rounds per reply (each round after the first answers tool
    # results): bounds a model that keeps calling tools.
    max_tool_rounds: int = 4
    # A cancelled (call, session, reply_to) seen on the control stream is
    # remembered this long, so a request that arrives after its cancel is
    # not generated at all.
    cancel_memory_s: float = 120.0
    # A held (speculative) request taken this long after it was written, and
    # not adopted yet, is dropped unrun (ConversationConfig's, the same setting).
    speculation_max_lag_ms: float = DEFAULT_SPECULATION_MAX_LAG_MS
    # Token pacing: after a reply's first delta (sent alone, at once), token
    # entries go out at most once per this many ms, each carrying everything
    # produced since the previous one; the closing entry goes as soon as the
    # provider finishes. TTS synthesizes by clause, so 50 ms is not heard,
    # while entries, gateway routings and WebSocket frames drop 2-3x at a
    # word every 20 ms. 0: an entry takes what piled up during the previous
    # append (one entry a word on a fast bus).
    token_coalesce_ms: float = 50.0
    # Requests carry only the history new since the call's previous request
    # (actors/llm/history.py): the calls whose last history a worker keeps
    # in memory (LRU; a call not there costs one read of its state), and how
    # long a state older than its request is waited for before the request
    # is dropped as stale.
    history_cache_calls: int = 1024
    history_wait_s: float = 2.0
