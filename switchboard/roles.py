"""Which actor a role name stands for: a built-in one, else an installed plug-in."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from actors import plugins
from actors.conversation import ConversationActor
from actors.llm import LLMActor
from actors.llm.history import history_metrics
from actors.providers import make_provider
from actors.runtime import Actor
from actors.telemetry import TelemetryActor
from switchboard.settings import Settings

BUILTIN_ACTORS = ("conversation", "llm", "telemetry")
# Built in but not part of every deployment: ``otel`` runs only when configured.
OPTIONAL_ACTORS = ("otel",)


def build_actor(settings: Settings, role: str, registry: CollectorRegistry | None = None) -> Actor:
    """The actor for ``role``: a built-in one, else an installed plug-in.

    ``registry`` is the process's Prometheus registry (telemetry and plug-ins
    register their metrics there). Raises ``plugins.PluginError`` for a name
    that is neither.
    """
    registry = registry if registry is not None else CollectorRegistry()
    if role == "conversation":
        return ConversationActor(settings.conversation_config())
    if role == "llm":
        config = settings.llm_config()
        llm = LLMActor(config, make_provider(config))
        history_metrics(llm.histories, registry)
        return llm
    if role == "telemetry":
        return TelemetryActor(settings.telemetry_config(), registry)
    if role == "otel":
        return _otel_actor(settings)
    context = plugins.PluginContext(
        keys=settings.keys,
        worker_id=settings.worker_id,
        retention_ms=settings.retention_ms,
        registry=registry,
    )
    return plugins.load(role, context)


def _otel_actor(settings: Settings) -> Actor:
    """The ``otel`` actor exporting to ``settings.otel_endpoint`` (``switchboard.otel``)."""
    from switchboard import otel

    if settings.otel_endpoint is None:
        raise plugins.PluginError(
            "the otel actor exports traces over OTLP: set OTEL_EXPORTER_OTLP_ENDPOINT "
            "(e.g. http://127.0.0.1:4318)"
        )
    try:
        provider = otel.tracer_provider(settings.otel_endpoint)
    except otel.OtelUnavailable as exc:
        raise plugins.PluginError(str(exc)) from None
    return otel.trace_actor(
        settings.keys, provider, llm_provider=settings.provider, model=settings.model
    )
