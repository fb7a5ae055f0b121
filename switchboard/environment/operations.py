"""What operators see: log level and format, metrics, the dashboard, tracing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

from switchboard.environment.parse import SettingsError, choice, port
from switchboard.profile import choice_problem

LOG_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})


class OperationsSettings(TypedDict):
    log_level: str
    log_format: str
    metrics_port: int | None
    dashboard_token: str | None
    otel_endpoint: str | None


def _log_level(env: Mapping[str, str]) -> str:
    """SWITCHBOARD_LOG_LEVEL, any case (``INFO`` is as common as ``info``)."""
    raw = env.get("SWITCHBOARD_LOG_LEVEL") or "info"
    if raw.lower() not in LOG_LEVELS:
        raise SettingsError(f"SWITCHBOARD_LOG_LEVEL {choice_problem(raw, LOG_LEVELS)}")
    return raw.lower()


def read_operations(env: Mapping[str, str]) -> OperationsSettings:
    return OperationsSettings(
        log_level=_log_level(env),
        log_format=choice(env, "SWITCHBOARD_LOG_FORMAT", "auto", {"auto", "json", "console"}),
        metrics_port=(
            port(env, "SWITCHBOARD_METRICS_PORT", 0)
            if env.get("SWITCHBOARD_METRICS_PORT")
            else None
        ),
        dashboard_token=env.get("SWITCHBOARD_DASHBOARD_TOKEN") or None,
        otel_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
    )
