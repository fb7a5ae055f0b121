"""Settings: parsed once from the environment into a frozen object, passed down.

Nothing below the composition root reads ``os.environ``; the gateway and the
actors get their own frozen config objects built here. Every variable is
documented in docs/OPERATIONS.md. Each group of settings is read by its own
module in ``switchboard.environment``; ``Settings.from_env`` composes them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from actors.config import (
    DEFAULT_EFFORT,
    DEFAULT_FILLER_AFTER_S,
    DEFAULT_FILLER_TEXT,
    DEFAULT_FIRST_TOKEN_DEADLINE_S,
    DEFAULT_GOODBYE_TEXT,
    DEFAULT_KEEPALIVE_S,
    DEFAULT_MAX_SPECULATIONS,
    DEFAULT_MODEL,
    DEFAULT_PROMPT_CACHE,
    DEFAULT_REFUSAL_LINE,
    DEFAULT_REPROMPT_TEXT,
    DEFAULT_RESUME_GREETING,
    DEFAULT_SETTLE_MS,
    DEFAULT_SPECULATION_MAX_CHARS,
    DEFAULT_SPECULATION_MAX_LAG_MS,
    DEFAULT_SYSTEM_PROMPT,
    DEFAULT_THINKING,
    ConversationConfig,
    LLMConfig,
)
from actors.telemetry import TelemetryConfig
from bus.keys import Keys
from bus.replicated import WaitPolicy
from bus.trim import TrimPolicy
from gateway.config import (
    DEFAULT_DRAIN_DEADLINE_S,
    DEFAULT_HTTP_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_RESUMES,
    DEFAULT_MAX_SOCKETS,
    DEFAULT_REPLY_APOLOGY,
    DEFAULT_RESUME_APOLOGY,
    DEFAULT_SETUP_TIMEOUT_S,
    GatewayConfig,
)
from gateway.reply_deadline import DEFAULT_REPLY_DEADLINE_S
from relay.speech import CHARS_PER_SECOND
from relay.twiml import RelayAttributes
from switchboard.environment.bus import process_id, read_bus
from switchboard.environment.conversation import read_conversation
from switchboard.environment.gateway import read_gateway
from switchboard.environment.llm import read_llm
from switchboard.environment.operations import read_operations
from switchboard.environment.parse import SettingsError
from switchboard.environment.profile import with_profile
from switchboard.environment.relay import read_languages, read_relay

__all__ = ["Settings", "SettingsError"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a Switchboard process needs, for every role."""

    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    redis_url: str = "redis://127.0.0.1:6379/0"
    namespace: str = "sb"
    partitions: int = 32
    # Request and fact streams each (bus.keys); readers read them all.
    stream_shards: int = 1
    retention_ms: int = 24 * 3600 * 1000
    # bus.trim: entries per stream, trim period, life of an unrefreshed gateway stream.
    trim: TrimPolicy = field(default_factory=TrimPolicy)
    # bus.replicated: replicas that confirm each caller event on a cluster.
    redis_wait: WaitPolicy = field(default_factory=WaitPolicy)
    gateway_id: str = field(default_factory=process_id)
    worker_id: str = field(default_factory=process_id)
    twilio_auth_token: str | None = None
    # GatewayConfig.webhook_shared_key / max_resumes / resume_apology.
    webhook_shared_key: str | None = None
    # GatewayConfig.session_secret / setup_timeout_s / max_sockets / max_connections.
    session_secret: str | None = None
    setup_timeout_s: float = DEFAULT_SETUP_TIMEOUT_S
    max_sockets: int = DEFAULT_MAX_SOCKETS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    http_timeout_s: float = DEFAULT_HTTP_TIMEOUT_S
    max_resumes: int = DEFAULT_MAX_RESUMES
    resume_apology: str = DEFAULT_RESUME_APOLOGY
    # GatewayConfig.reply_deadline_s / reply_apology / drain_deadline_s.
    reply_deadline_s: float = DEFAULT_REPLY_DEADLINE_S
    reply_apology: str = DEFAULT_REPLY_APOLOGY
    drain_deadline_s: float = DEFAULT_DRAIN_DEADLINE_S
    # GatewayConfig.interim_prompts; None: whenever something reads them
    # (preemptive replies are on).
    interim_prompts: bool | None = None
    anthropic_configured: bool = False
    provider: str = "scripted"
    model: str = DEFAULT_MODEL
    max_tokens: int = 1024
    # LLMConfig.first_token_deadline_s / fallback_model / thinking / effort.
    first_token_deadline_s: float = DEFAULT_FIRST_TOKEN_DEADLINE_S
    fallback_model: str | None = None
    thinking: str = DEFAULT_THINKING
    effort: str = DEFAULT_EFFORT
    # LLMConfig.prompt_cache / keepalive_s.
    prompt_cache: bool = DEFAULT_PROMPT_CACHE
    anthropic_keepalive_s: float = DEFAULT_KEEPALIVE_S
    # LLMConfig.filler_after_s / filler_text / refusal_line.
    filler_after_s: float = DEFAULT_FILLER_AFTER_S
    filler_text: str = DEFAULT_FILLER_TEXT
    refusal_line: str = DEFAULT_REFUSAL_LINE
    scripted_first_token_ms: float = 0.0
    scripted_token_gap_ms: float = 0.0
    llm_concurrency: int = 1024
    llm_claim_idle_ms: int = 5000
    # LLMConfig.token_coalesce_ms: minimum gap between a reply's token entries.
    token_coalesce_ms: int = 50
    lease_ttl_ms: int = 5000
    max_deliveries: int = 5
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # Tools the model may call (LLMConfig.tools) and their targets; a
    # profile's [tools] maps onto these (environment variables override it).
    tools: tuple[str, ...] = ()
    transfer_number: str | None = None
    transfer_queue: str | None = None
    # Languages switch_language may pick (LLMConfig.languages); empty: the
    # relay's language plus SWITCHBOARD_LANGUAGES.
    languages: tuple[str, ...] = ()
    relay: RelayAttributes = field(default_factory=RelayAttributes)
    # Conversation behaviour (ConversationConfig); a profile's [agent],
    # [timers] and [dtmf] map onto these.
    resume_greeting: str = DEFAULT_RESUME_GREETING
    silence_reprompt_s: float = 10.0
    state_cache_calls: int = 4096
    max_played_chars: int = 16_384
    max_history_messages: int = 400
    max_history_chars: int = 400_000
    handler_deadline_s: float = 10.0
    conversation_max_deliveries: int = 5
    silence_max_reprompts: int = 2
    reprompt_text: str = DEFAULT_REPROMPT_TEXT
    goodbye_text: str = DEFAULT_GOODBYE_TEXT
    goodbye_interruptible: bool = False
    dtmf_idle_s: float = 3.0
    dtmf_menu: Mapping[str, str] = field(default_factory=dict)
    # How fast replies are spoken (characters a second), wherever speech is
    # timed without Twilio saying so (relay.speech).
    speech_chars_per_second: float = CHARS_PER_SECOND
    # Preemptive replies (ConversationConfig.preemptive ...): None follows
    # partial prompts (relay.partial_prompts), on when they are on.
    preemptive: bool | None = None
    settle_ms: float = DEFAULT_SETTLE_MS
    max_speculations: int = DEFAULT_MAX_SPECULATIONS
    speculation_max_chars: int = DEFAULT_SPECULATION_MAX_CHARS
    speculation_max_lag_ms: float = DEFAULT_SPECULATION_MAX_LAG_MS
    # The agent profile these settings were built with (SWITCHBOARD_PROFILE).
    profile_path: str | None = None
    log_level: str = "info"
    log_format: str = "auto"
    # Actor processes serve /metrics and /healthz on this port; None: no server.
    metrics_port: int | None = None
    # SWITCHBOARD_DASHBOARD_TOKEN: what /dashboard and /api/* ask for (gateway.dashboard).
    dashboard_token: str | None = None
    # OTEL_EXPORTER_OTLP_ENDPOINT: where traces go (switchboard.otel); None: no tracing.
    otel_endpoint: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``).

        With ``SWITCHBOARD_PROFILE`` set, the agent profile it names is loaded
        and validated first (``switchboard.profile``); its values stand in for
        the environment variables of the same settings, and a variable that
        is set (non-empty) overrides the profile.
        """
        env, profile, profile_path = with_profile(os.environ if env is None else env)
        gateway = read_gateway(env)
        bus = read_bus(env)
        llm = read_llm(env)
        relay = read_relay(env, profile)
        conversation = read_conversation(env, profile)
        return cls(
            **gateway,
            **bus,
            **llm,
            **conversation,
            **read_operations(env),
            relay=relay,
            languages=read_languages(env, relay),
            profile_path=profile_path,
        )

    @property
    def keys(self) -> Keys:
        return Keys(namespace=self.namespace, partitions=self.partitions, shards=self.stream_shards)

    def gateway_config(self) -> GatewayConfig:
        return GatewayConfig(
            gateway_id=self.gateway_id,
            host=self.host,
            port=self.port,
            public_url=self.public_url,
            auth_token=self.twilio_auth_token,
            relay=self.relay,
            keys=self.keys,
            resume_greeting=self.resume_greeting,
            dashboard_token=self.dashboard_token,
            speech_chars_per_second=self.speech_chars_per_second,
            max_resumes=self.max_resumes,
            resume_apology=self.resume_apology,
            handoff_number=self.transfer_number,
            handoff_queue=self.transfer_queue,
            webhook_shared_key=self.webhook_shared_key,
            session_secret=self.session_secret,
            setup_timeout_s=self.setup_timeout_s,
            max_sockets=self.max_sockets,
            max_connections=self.max_connections,
            http_timeout_s=self.http_timeout_s,
            reply_deadline_s=self.reply_deadline_s,
            reply_apology=self.reply_apology,
            drain_deadline_s=self.drain_deadline_s,
            interim_prompts=(
                self.preemptive_replies if self.interim_prompts is None else self.interim_prompts
            ),
        )

    def conversation_config(self) -> ConversationConfig:
        return ConversationConfig(
            keys=self.keys,
            system_prompt=self.system_prompt,
            welcome_greeting=self.relay.welcome_greeting,
            state_ttl_ms=self.retention_ms,
            resume_greeting=self.resume_greeting,
            silence_reprompt_s=self.silence_reprompt_s,
            silence_max_reprompts=self.silence_max_reprompts,
            reprompt_text=self.reprompt_text,
            goodbye_text=self.goodbye_text,
            goodbye_interruptible=self.goodbye_interruptible,
            dtmf_idle_s=self.dtmf_idle_s,
            dtmf_menu=dict(self.dtmf_menu),
            speech_chars_per_second=self.speech_chars_per_second,
            state_cache_calls=self.state_cache_calls,
            max_played_chars=self.max_played_chars,
            max_history_messages=self.max_history_messages,
            max_history_chars=self.max_history_chars,
            handler_deadline_s=self.handler_deadline_s,
            max_deliveries=self.conversation_max_deliveries,
            preemptive=self.preemptive_replies,
            settle_ms=self.settle_ms,
            max_speculations=self.max_speculations,
            speculation_max_chars=self.speculation_max_chars,
            speculation_max_lag_ms=self.speculation_max_lag_ms,
        )

    @property
    def preemptive_replies(self) -> bool:
        """Whether replies start on interim prompts: SWITCHBOARD_PREEMPTIVE, else
        whenever partial prompts are on (there are no interim prompts otherwise)."""
        if self.preemptive is not None:
            return self.preemptive
        return bool(self.relay.partial_prompts)

    def telemetry_config(self) -> TelemetryConfig:
        return TelemetryConfig(keys=self.keys)

    def llm_config(self) -> LLMConfig:
        return LLMConfig(
            keys=self.keys,
            provider=self.provider,
            model=self.model,
            max_tokens=self.max_tokens,
            first_token_deadline_s=self.first_token_deadline_s,
            fallback_model=self.fallback_model,
            thinking=self.thinking,
            effort=self.effort,
            prompt_cache=self.prompt_cache,
            keepalive_s=self.anthropic_keepalive_s,
            filler_after_s=self.filler_after_s,
            filler_text=self.filler_text,
            refusal_line=self.refusal_line,
            scripted_first_token_ms=self.scripted_first_token_ms,
            scripted_token_gap_ms=self.scripted_token_gap_ms,
            concurrency=self.llm_concurrency,
            claim_idle_ms=self.llm_claim_idle_ms,
            token_coalesce_ms=self.token_coalesce_ms,
            max_deliveries=self.max_deliveries,
            speculation_max_lag_ms=self.speculation_max_lag_ms,
            tools=self.tools,
            transfer_number=self.transfer_number,
            transfer_queue=self.transfer_queue,
            languages=self.languages,
        )
