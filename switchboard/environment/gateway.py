"""The gateway's settings: where it listens, who may call it, and its limits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

from gateway.config import (
    DEFAULT_DRAIN_DEADLINE_S,
    DEFAULT_MAX_RESUMES,
    DEFAULT_REPLY_APOLOGY,
    DEFAULT_RESUME_APOLOGY,
)
from gateway.reply_deadline import DEFAULT_REPLY_DEADLINE_S
from switchboard.environment.parse import (
    SettingsError,
    flag,
    integer,
    number,
    port,
    positive,
    url,
)


class GatewaySettings(TypedDict):
    host: str
    port: int
    public_url: str
    twilio_auth_token: str | None
    webhook_shared_key: str | None
    session_secret: str | None
    setup_timeout_s: float
    max_sockets: int
    max_connections: int
    http_timeout_s: float
    max_resumes: int
    resume_apology: str
    reply_deadline_s: float
    reply_apology: str
    drain_deadline_s: float
    interim_prompts: bool | None


def read_gateway(env: Mapping[str, str]) -> GatewaySettings:
    listen_port = port(env, "SWITCHBOARD_PORT", 8080)
    host = env.get("SWITCHBOARD_HOST") or "127.0.0.1"
    public_url = (env.get("SWITCHBOARD_PUBLIC_URL") or f"http://{host}:{listen_port}").rstrip("/")
    url("SWITCHBOARD_PUBLIC_URL", public_url, frozenset({"http", "https"}))
    max_sockets = integer(env, "SWITCHBOARD_MAX_SOCKETS", 1024, minimum=1)
    max_connections = integer(env, "SWITCHBOARD_MAX_CONNECTIONS", 1536, minimum=2)
    if max_sockets >= max_connections:
        raise SettingsError(
            f"SWITCHBOARD_MAX_SOCKETS ({max_sockets}) must be below "
            f"SWITCHBOARD_MAX_CONNECTIONS ({max_connections}), so health checks "
            "and webhooks get through when the sockets are full"
        )
    return GatewaySettings(
        host=host,
        port=listen_port,
        public_url=public_url,
        twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
        webhook_shared_key=env.get("TWILIO_WEBHOOK_SHARED_KEY") or None,
        session_secret=env.get("SWITCHBOARD_SESSION_SECRET") or None,
        setup_timeout_s=positive(env, "SWITCHBOARD_SETUP_TIMEOUT_S", 5.0),
        max_sockets=max_sockets,
        max_connections=max_connections,
        http_timeout_s=positive(env, "SWITCHBOARD_HTTP_TIMEOUT_S", 10.0),
        max_resumes=integer(env, "SWITCHBOARD_MAX_RESUMES", DEFAULT_MAX_RESUMES),
        resume_apology=env.get("SWITCHBOARD_RESUME_APOLOGY") or DEFAULT_RESUME_APOLOGY,
        reply_deadline_s=number(env, "SWITCHBOARD_REPLY_DEADLINE_S", DEFAULT_REPLY_DEADLINE_S),
        reply_apology=env.get("SWITCHBOARD_REPLY_APOLOGY") or DEFAULT_REPLY_APOLOGY,
        drain_deadline_s=number(env, "SWITCHBOARD_DRAIN_DEADLINE_S", DEFAULT_DRAIN_DEADLINE_S),
        interim_prompts=flag(env, "SWITCHBOARD_INTERIM_PROMPTS", None),
    )
