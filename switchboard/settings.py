"""Settings: parsed once from the environment into a frozen object, passed down.

Nothing below the composition root reads ``os.environ``; the gateway and the
actors get their own frozen config objects built here. Every variable is
documented in docs/OPERATIONS.md.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from actors.config import (
    DEFAULT_FILLER_TEXT,
    DEFAULT_GOODBYE_TEXT,
    DEFAULT_MODEL,
    DEFAULT_REFUSAL_LINE,
    DEFAULT_REPROMPT_TEXT,
    DEFAULT_RESUME_GREETING,
    DEFAULT_SYSTEM_PROMPT,
    ConversationConfig,
    LLMConfig,
)
from actors.providers.options import parse_effort, parse_thinking
from actors.telemetry import TelemetryConfig
from actors.tools import BUILTIN_TOOLS, entry_point_tool_names, is_reference, load_reference
from bus.keys import Keys
from bus.trim import (
    DEFAULT_KEEP_ALIVE_TTL_S,
    DEFAULT_STREAM_MAX_LEN,
    DEFAULT_TRIM_INTERVAL_S,
    TrimPolicy,
)
from gateway.config import DEFAULT_MAX_RESUMES, DEFAULT_RESUME_APOLOGY, GatewayConfig
from relay.speech import CHARS_PER_SECOND
from relay.twiml import NEWER_RELAY_ATTRIBUTES, RelayAttributes
from switchboard.profile import (
    RELAY_CHOICES,
    Profile,
    ProfileError,
    choice_problem,
    load_profile,
)

DEFAULT_GREETING = "Hello! This is the Switchboard demo agent. How can I help you today?"
LOG_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
MAX_PORT = 65535


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def _int(
    env: Mapping[str, str], name: str, default: int, *, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name} must be <= {maximum}, got {value}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    return _int(env, name, default, minimum=0, maximum=MAX_PORT)


def _url(name: str, value: str, schemes: frozenset[str]) -> str:
    """``value`` if it is a URL with one of ``schemes``, a host and a valid port."""
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        wanted = " or ".join(f"{s}://" for s in sorted(schemes))
        raise SettingsError(f"{name} must start with {wanted}, got {value!r}")
    try:
        port = parts.port  # ValueError for a port out of range or not a number
    except ValueError:
        raise SettingsError(f"{name} has a bad port (0-{MAX_PORT}): {value!r}") from None
    if parts.scheme != "unix" and not parts.hostname:
        raise SettingsError(f"{name} has no host: {value!r}")
    del port
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{name} must be >= 0, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool | None) -> bool | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _str(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    raw = env.get(name)
    return default if raw is None or raw == "" else raw


def _tools(env: Mapping[str, str]) -> tuple[str, ...]:
    """SWITCHBOARD_TOOLS: comma-separated tools, each known (built-in or entry point)
    or a ``module:function`` marked ``@tool`` (imported here, to check it once)."""
    names = tuple(n.strip() for n in (env.get("SWITCHBOARD_TOOLS") or "").split(",") if n.strip())
    known = set(BUILTIN_TOOLS) | set(entry_point_tool_names()) if names else set()
    for name in names:
        if is_reference(name):
            try:
                load_reference(name)
            except (LookupError, TypeError) as exc:
                raise SettingsError(f"SWITCHBOARD_TOOLS (or the profile's tools): {exc}") from None
        elif name not in known:
            raise SettingsError(
                f"SWITCHBOARD_TOOLS names an unknown tool {name!r} "
                f"(known: {', '.join(sorted(known))})"
            )
    if "transfer" in names and not (
        env.get("SWITCHBOARD_TRANSFER_NUMBER") or env.get("SWITCHBOARD_TRANSFER_QUEUE")
    ):
        raise SettingsError(
            "SWITCHBOARD_TOOLS enables 'transfer' but neither SWITCHBOARD_TRANSFER_NUMBER "
            "nor SWITCHBOARD_TRANSFER_QUEUE is set"
        )
    return names


def _languages(main: str | None, extra: str) -> tuple[str, ...]:
    """The relay's language, then SWITCHBOARD_LANGUAGES (comma-separated), de-duplicated."""
    codes = [main or "", *extra.split(",")]
    return tuple(dict.fromkeys(c.strip() for c in codes if c.strip()))


def _profile_env(profile: Profile) -> dict[str, str]:
    """A profile's values under the environment variables they stand in for.

    ``Settings.from_env`` lays the real environment over these, so an
    environment variable overrides the profile's value of the same setting.
    """
    out: dict[str, str] = {}

    def put(name: str, value: object) -> None:
        if value is None:
            return
        out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)

    put("SWITCHBOARD_SYSTEM_PROMPT", profile.system_prompt)
    put("SWITCHBOARD_WELCOME_GREETING", profile.greeting)
    put("SWITCHBOARD_RESUME_GREETING", profile.resume_greeting)
    put("SWITCHBOARD_MODEL", profile.model)
    put("SWITCHBOARD_MAX_TOKENS", profile.max_tokens)
    for key, value in profile.voice.items():
        # [voice] keys are the relay settings' names: voice.tts_provider is
        # SWITCHBOARD_TTS_PROVIDER, and so on.
        put(f"SWITCHBOARD_{key.upper()}", value)
    if profile.tools is not None:
        out["SWITCHBOARD_TOOLS"] = ",".join(profile.tools)
    put("SWITCHBOARD_TRANSFER_NUMBER", profile.transfer_number)
    put("SWITCHBOARD_TRANSFER_QUEUE", profile.transfer_queue)
    put("SWITCHBOARD_SILENCE_REPROMPT_S", profile.silence_reprompt_s)
    put("SWITCHBOARD_SILENCE_MAX_REPROMPTS", profile.silence_max_reprompts)
    put("SWITCHBOARD_DTMF_IDLE_S", profile.dtmf_idle_s)
    return out


def _choice(env: Mapping[str, str], name: str, default: str, choices: set[str]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise SettingsError(f"{name} {choice_problem(value, frozenset(choices))}")
    return value


def _log_level(env: Mapping[str, str]) -> str:
    """SWITCHBOARD_LOG_LEVEL, any case (``INFO`` is as common as ``info``)."""
    raw = env.get("SWITCHBOARD_LOG_LEVEL") or "info"
    if raw.lower() not in LOG_LEVELS:
        raise SettingsError(f"SWITCHBOARD_LOG_LEVEL {choice_problem(raw, LOG_LEVELS)}")
    return raw.lower()


def _relay_choice(env: Mapping[str, str], key: str) -> str | None:
    """A TwiML attribute with a fixed set of values, checked as the profile checks it."""
    name = f"SWITCHBOARD_{key.upper()}"
    value = _str(env, name, None)
    if value is not None and value not in RELAY_CHOICES[key]:
        raise SettingsError(f"{name} {choice_problem(value, RELAY_CHOICES[key])}")
    return value


# Subscribed by default: Twilio then reports when the agent stops speaking
# (so a goodbye's ``end`` waits for it) and what the caller actually heard.
DEFAULT_EVENTS = "speaker-events tokens-played"


def _newer_relay_attributes(env: Mapping[str, str]) -> dict[str, Any]:
    """The newer <ConversationRelay> attributes, from SWITCHBOARD_<ATTRIBUTE>.

    Typed by their RelayAttributes field (bool, number or text); their
    values are checked with the rest by ``RelayAttributes.problems``.
    """
    types = {f.name: str(f.type) for f in fields(RelayAttributes)}
    out: dict[str, Any] = {}
    for key in NEWER_RELAY_ATTRIBUTES:
        name = f"SWITCHBOARD_{key.upper()}"
        kind = types[key]
        if kind.startswith("bool"):
            out[key] = _bool(env, name, None)
        elif kind.startswith("float"):
            raw = env.get(name)
            out[key] = None if not raw else _float(env, name, 0.0)
        else:
            out[key] = _str(env, name, DEFAULT_EVENTS if key == "events" else None)
    return out


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
    gateway_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    twilio_auth_token: str | None = None
    # GatewayConfig.webhook_shared_key / max_resumes / resume_apology.
    webhook_shared_key: str | None = None
    # GatewayConfig.session_secret / setup_timeout_s / max_sockets / max_connections.
    session_secret: str | None = None
    setup_timeout_s: float = 5.0
    max_sockets: int = 1024
    max_connections: int = 1536
    http_timeout_s: float = 10.0
    max_resumes: int = DEFAULT_MAX_RESUMES
    resume_apology: str = DEFAULT_RESUME_APOLOGY
    anthropic_configured: bool = False
    provider: str = "scripted"
    model: str = DEFAULT_MODEL
    max_tokens: int = 1024
    # LLMConfig.first_token_deadline_s / fallback_model / thinking / effort.
    first_token_deadline_s: float = 2.5
    fallback_model: str | None = None
    thinking: str = "off"
    effort: str = "low"
    # LLMConfig.prompt_cache / keepalive_s.
    prompt_cache: bool = True
    anthropic_keepalive_s: float = 300.0
    # LLMConfig.filler_after_s / filler_text / refusal_line.
    filler_after_s: float = 1.2
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
        env = os.environ if env is None else env
        profile_path = env.get("SWITCHBOARD_PROFILE") or None
        profile = Profile()
        if profile_path is not None:
            try:
                profile = load_profile(profile_path, tools=tuple(entry_point_tool_names()))
            except ProfileError as exc:
                raise SettingsError(f"SWITCHBOARD_PROFILE: {exc}") from None
            env = {**_profile_env(profile), **{k: v for k, v in env.items() if v != ""}}
        port = _port(env, "SWITCHBOARD_PORT", 8080)
        host = env.get("SWITCHBOARD_HOST") or "127.0.0.1"
        public_url = (env.get("SWITCHBOARD_PUBLIC_URL") or f"http://{host}:{port}").rstrip("/")
        _url("SWITCHBOARD_PUBLIC_URL", public_url, frozenset({"http", "https"}))
        redis_url = _url(
            "SWITCHBOARD_REDIS_URL",
            env.get("SWITCHBOARD_REDIS_URL") or "redis://127.0.0.1:6379/0",
            REDIS_SCHEMES,
        )
        anthropic_key = bool(env.get("ANTHROPIC_API_KEY"))
        provider = _choice(
            env,
            "SWITCHBOARD_LLM_PROVIDER",
            "anthropic" if anthropic_key else "scripted",
            {"anthropic", "scripted"},
        )
        relay = RelayAttributes(
            welcome_greeting=_str(env, "SWITCHBOARD_WELCOME_GREETING", DEFAULT_GREETING),
            welcome_greeting_interruptible=_relay_choice(env, "welcome_greeting_interruptible"),
            language=_str(env, "SWITCHBOARD_LANGUAGE", "en-US"),
            tts_language=_str(env, "SWITCHBOARD_TTS_LANGUAGE", None),
            transcription_language=_str(env, "SWITCHBOARD_TRANSCRIPTION_LANGUAGE", None),
            tts_provider=_relay_choice(env, "tts_provider"),
            voice=_str(env, "SWITCHBOARD_VOICE", None),
            transcription_provider=_relay_choice(env, "transcription_provider"),
            speech_model=_str(env, "SWITCHBOARD_SPEECH_MODEL", None),
            interruptible=_relay_choice(env, "interruptible"),
            interrupt_sensitivity=_relay_choice(env, "interrupt_sensitivity"),
            dtmf_detection=_bool(env, "SWITCHBOARD_DTMF_DETECTION", True),
            report_input_during_agent_speech=_relay_choice(env, "report_input_during_agent_speech"),
            partial_prompts=_bool(env, "SWITCHBOARD_PARTIAL_PROMPTS", None),
            preemptible=_bool(env, "SWITCHBOARD_PREEMPTIBLE", None),
            hints=_str(env, "SWITCHBOARD_HINTS", None),
            debug=_str(env, "SWITCHBOARD_DEBUG", None),
            intelligence_service=_str(env, "SWITCHBOARD_INTELLIGENCE_SERVICE", None),
            languages=profile.languages,
            **_newer_relay_attributes(env),
        )
        for key, problem in relay.problems():
            where = "voice.languages" if key == "languages" else f"SWITCHBOARD_{key.upper()}"
            raise SettingsError(
                f"{where}: {problem}" if key == "languages" else f"{where} {problem}"
            )
        max_tokens = _int(env, "SWITCHBOARD_MAX_TOKENS", 1024, minimum=1)
        handler_deadline_s = _float(env, "SWITCHBOARD_HANDLER_DEADLINE_S", 10.0)
        if handler_deadline_s <= 0:
            raise SettingsError(
                f"SWITCHBOARD_HANDLER_DEADLINE_S must be > 0, got {handler_deadline_s}"
            )
        first_token_deadline_s = _float(env, "SWITCHBOARD_FIRST_TOKEN_DEADLINE_S", 2.5)
        if first_token_deadline_s <= 0:
            raise SettingsError(
                f"SWITCHBOARD_FIRST_TOKEN_DEADLINE_S must be > 0, got {first_token_deadline_s}"
            )
        try:
            thinking = env.get("SWITCHBOARD_THINKING") or "off"
            budget = parse_thinking(thinking).budget_tokens
            effort = parse_effort(env.get("SWITCHBOARD_EFFORT") or "low")
        except ValueError as exc:
            raise SettingsError(f"SWITCHBOARD_THINKING / SWITCHBOARD_EFFORT: {exc}") from None
        if budget >= max_tokens:
            raise SettingsError(
                f"SWITCHBOARD_THINKING budget {budget} must be below "
                f"SWITCHBOARD_MAX_TOKENS {max_tokens}"
            )
        anthropic_keepalive_s = _float(env, "SWITCHBOARD_ANTHROPIC_KEEPALIVE_S", 300.0)
        if anthropic_keepalive_s <= 0:
            raise SettingsError(
                f"SWITCHBOARD_ANTHROPIC_KEEPALIVE_S must be > 0, got {anthropic_keepalive_s}"
            )
        silence_reprompt_s = _float(env, "SWITCHBOARD_SILENCE_REPROMPT_S", 10.0)
        dtmf_idle_s = _float(env, "SWITCHBOARD_DTMF_IDLE_S", 3.0)
        if dtmf_idle_s <= 0:
            raise SettingsError(f"SWITCHBOARD_DTMF_IDLE_S must be > 0, got {dtmf_idle_s}")
        setup_timeout_s = _float(env, "SWITCHBOARD_SETUP_TIMEOUT_S", 5.0)
        if setup_timeout_s <= 0:
            raise SettingsError(f"SWITCHBOARD_SETUP_TIMEOUT_S must be > 0, got {setup_timeout_s}")
        http_timeout_s = _float(env, "SWITCHBOARD_HTTP_TIMEOUT_S", 10.0)
        if http_timeout_s <= 0:
            raise SettingsError(f"SWITCHBOARD_HTTP_TIMEOUT_S must be > 0, got {http_timeout_s}")
        max_sockets = _int(env, "SWITCHBOARD_MAX_SOCKETS", 1024, minimum=1)
        max_connections = _int(env, "SWITCHBOARD_MAX_CONNECTIONS", 1536, minimum=2)
        if max_sockets >= max_connections:
            raise SettingsError(
                f"SWITCHBOARD_MAX_SOCKETS ({max_sockets}) must be below "
                f"SWITCHBOARD_MAX_CONNECTIONS ({max_connections}), so health checks "
                "and webhooks get through when the sockets are full"
            )
        speech_rate = _float(env, "SWITCHBOARD_SPEECH_CHARS_PER_S", CHARS_PER_SECOND)
        if not 0 < speech_rate < float("inf"):
            raise SettingsError(
                f"SWITCHBOARD_SPEECH_CHARS_PER_S must be a positive number of characters "
                f"a second, got {speech_rate}"
            )
        # switch_language may pick the profile's [[voice.languages]] too.
        extra_languages = ",".join(
            [*(lang.code for lang in profile.languages), env.get("SWITCHBOARD_LANGUAGES") or ""]
        )
        return cls(
            host=host,
            port=port,
            public_url=public_url,
            redis_url=redis_url,
            namespace=env.get("SWITCHBOARD_NAMESPACE") or "sb",
            partitions=_int(env, "SWITCHBOARD_PARTITIONS", 32, minimum=1),
            stream_shards=_int(env, "SWITCHBOARD_STREAM_SHARDS", 1, minimum=1),
            retention_ms=int(_float(env, "SWITCHBOARD_RETENTION_HOURS", 24.0) * 3600 * 1000),
            trim=TrimPolicy(
                max_len=_int(env, "SWITCHBOARD_STREAM_MAX_LEN", DEFAULT_STREAM_MAX_LEN, minimum=1),
                interval_s=max(
                    0.1, _float(env, "SWITCHBOARD_TRIM_INTERVAL_S", DEFAULT_TRIM_INTERVAL_S)
                ),
                keep_alive_ttl_s=max(
                    1.0,
                    _float(env, "SWITCHBOARD_GATEWAY_STREAM_TTL_S", DEFAULT_KEEP_ALIVE_TTL_S),
                ),
            ),
            gateway_id=env.get("SWITCHBOARD_GATEWAY_ID") or f"{socket.gethostname()}-{os.getpid()}",
            worker_id=env.get("SWITCHBOARD_WORKER_ID") or f"{socket.gethostname()}-{os.getpid()}",
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
            webhook_shared_key=env.get("TWILIO_WEBHOOK_SHARED_KEY") or None,
            session_secret=env.get("SWITCHBOARD_SESSION_SECRET") or None,
            setup_timeout_s=setup_timeout_s,
            max_sockets=max_sockets,
            max_connections=max_connections,
            http_timeout_s=http_timeout_s,
            max_resumes=_int(env, "SWITCHBOARD_MAX_RESUMES", DEFAULT_MAX_RESUMES),
            resume_apology=env.get("SWITCHBOARD_RESUME_APOLOGY") or DEFAULT_RESUME_APOLOGY,
            anthropic_configured=anthropic_key,
            provider=provider,
            model=env.get("SWITCHBOARD_MODEL") or DEFAULT_MODEL,
            max_tokens=max_tokens,
            first_token_deadline_s=first_token_deadline_s,
            fallback_model=_str(env, "SWITCHBOARD_FALLBACK_MODEL", None),
            thinking=thinking,
            effort=effort,
            prompt_cache=bool(_bool(env, "SWITCHBOARD_PROMPT_CACHE", True)),
            anthropic_keepalive_s=anthropic_keepalive_s,
            filler_after_s=_float(env, "SWITCHBOARD_FILLER_AFTER_S", 1.2),
            filler_text=env.get("SWITCHBOARD_FILLER_TEXT") or DEFAULT_FILLER_TEXT,
            refusal_line=env.get("SWITCHBOARD_REFUSAL_LINE") or DEFAULT_REFUSAL_LINE,
            scripted_first_token_ms=_float(env, "SWITCHBOARD_SCRIPTED_FIRST_TOKEN_MS", 0.0),
            scripted_token_gap_ms=_float(env, "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS", 0.0),
            llm_concurrency=_int(env, "SWITCHBOARD_LLM_CONCURRENCY", 1024, minimum=1),
            llm_claim_idle_ms=_int(env, "SWITCHBOARD_LLM_CLAIM_IDLE_MS", 5000, minimum=100),
            token_coalesce_ms=_int(env, "SWITCHBOARD_TOKEN_COALESCE_MS", 50),
            lease_ttl_ms=_int(env, "SWITCHBOARD_LEASE_TTL_MS", 5000, minimum=100),
            max_deliveries=_int(env, "SWITCHBOARD_MAX_DELIVERIES", 5, minimum=1),
            system_prompt=env.get("SWITCHBOARD_SYSTEM_PROMPT") or DEFAULT_SYSTEM_PROMPT,
            tools=_tools(env),
            transfer_number=_str(env, "SWITCHBOARD_TRANSFER_NUMBER", None),
            transfer_queue=_str(env, "SWITCHBOARD_TRANSFER_QUEUE", None),
            languages=_languages(relay.language, extra_languages),
            relay=relay,
            resume_greeting=_str(env, "SWITCHBOARD_RESUME_GREETING", DEFAULT_RESUME_GREETING)
            or DEFAULT_RESUME_GREETING,
            silence_reprompt_s=silence_reprompt_s,
            silence_max_reprompts=_int(env, "SWITCHBOARD_SILENCE_MAX_REPROMPTS", 2),
            state_cache_calls=_int(env, "SWITCHBOARD_CONVERSATION_STATE_CACHE", 4096),
            max_played_chars=_int(env, "SWITCHBOARD_MAX_PLAYED_CHARS", 16_384, minimum=1),
            max_history_messages=_int(env, "SWITCHBOARD_MAX_HISTORY_MESSAGES", 400, minimum=1),
            max_history_chars=_int(env, "SWITCHBOARD_MAX_HISTORY_CHARS", 400_000, minimum=1),
            handler_deadline_s=handler_deadline_s,
            conversation_max_deliveries=_int(
                env, "SWITCHBOARD_CONVERSATION_MAX_DELIVERIES", 5, minimum=1
            ),
            reprompt_text=env.get("SWITCHBOARD_REPROMPT_TEXT") or DEFAULT_REPROMPT_TEXT,
            goodbye_text=env.get("SWITCHBOARD_GOODBYE_TEXT") or DEFAULT_GOODBYE_TEXT,
            goodbye_interruptible=bool(_bool(env, "SWITCHBOARD_GOODBYE_INTERRUPTIBLE", False)),
            dtmf_idle_s=dtmf_idle_s,
            speech_chars_per_second=speech_rate,
            dtmf_menu=dict(profile.dtmf_menu),
            profile_path=profile_path,
            log_level=_log_level(env),
            log_format=_choice(env, "SWITCHBOARD_LOG_FORMAT", "auto", {"auto", "json", "console"}),
            metrics_port=(
                _port(env, "SWITCHBOARD_METRICS_PORT", 0)
                if env.get("SWITCHBOARD_METRICS_PORT")
                else None
            ),
            dashboard_token=env.get("SWITCHBOARD_DASHBOARD_TOKEN") or None,
            otel_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
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
        )

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
            tools=self.tools,
            transfer_number=self.transfer_number,
            transfer_queue=self.transfer_queue,
            languages=self.languages,
        )
