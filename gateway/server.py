"""The gateway: Twilio's webhooks and ConversationRelay sockets on one port.

``serve_gateway(bus, config)`` composes the parts and runs three kinds of task:

- the HTTP front (:mod:`gateway.http`) with the route handlers of
  :mod:`gateway.webhooks`: webhooks, health, metrics, and the ``/relay``
  upgrade, every Twilio request signature-checked first;
- one *relay session* per socket (:mod:`gateway.lifecycle`): frames are
  parsed and stamped in order (:mod:`gateway.inbound`) and appended to the
  call's partition stream;
- the dashboard and operator API (:mod:`gateway.dashboard`);
- one *dispatcher* (:mod:`gateway.dispatch`) tailing this gateway's stream:
  reply tokens and ``gateway.send`` frames go to the live session's socket,
  behind the reply fence (:mod:`gateway.fence`) and, for frames that wait for
  the reply to be spoken, the speech model (:mod:`gateway.speech`).
"""

from __future__ import annotations

import resource
from collections.abc import Sequence
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import structlog
import trio
from prometheus_client import CollectorRegistry

from bus.base import Bus
from bus.facts import FactPublisher
from gateway.config import GatewayConfig
from gateway.context import GatewayContext
from gateway.dashboard import Dashboard, DashboardAccess
from gateway.dispatch import Dispatcher
from gateway.drain import drain
from gateway.health import HealthWatch
from gateway.http import HttpLimits, Request, Router, bound_port, open_listeners, serve_http
from gateway.lifecycle import run_relay
from gateway.metrics import GatewayMetrics
from gateway.session import Session
from gateway.webhooks import Webhooks

__all__ = ["Gateway", "serve_gateway", "with_bound_port"]

log = structlog.get_logger()


class Gateway:
    """One gateway process: its shared state, webhooks, dispatcher and sessions.

    Most code wants :func:`serve_gateway`; the class is public so a composition
    root can reach ``metrics`` or ``sessions`` (e.g. for a shutdown report).
    """

    def __init__(
        self, bus: Bus, config: GatewayConfig, *, registries: Sequence[CollectorRegistry] = ()
    ) -> None:
        self.ctx = GatewayContext(
            bus=bus,
            config=config,
            metrics=GatewayMetrics(extra=registries),
            facts=FactPublisher(bus, config.keys),
        )
        self.health = HealthWatch(self.ctx)
        self.webhooks = Webhooks(self.ctx, self.health)
        self.dispatcher = Dispatcher(self.ctx)
        # Open without a token on dev, or where no signature protects anything anyway.
        access = DashboardAccess(
            config.dashboard_token, config.dashboard_open or config.auth_token is None
        )
        self.dashboard = Dashboard(
            bus,
            config.keys,
            gateway_id=config.gateway_id,
            access=access,
            local_calls=lambda: list(self.sessions),
        )

    @property
    def config(self) -> GatewayConfig:
        return self.ctx.config

    @property
    def metrics(self) -> GatewayMetrics:
        return self.ctx.metrics

    @property
    def sessions(self) -> dict[str, Session]:
        return self.ctx.sessions

    @property
    def ready(self) -> bool:
        return self.ctx.ready

    async def serve(
        self,
        *,
        listeners: list[trio.SocketListener] | None = None,
        stop: trio.Event | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind (unless given bound ``listeners``), report the bound port through
        ``task_status``, serve until cancelled, or until ``stop`` is set and the
        drain (:mod:`gateway.drain`) is over."""
        structlog.contextvars.bind_contextvars(actor="gateway")
        ctx = self.ctx
        if ctx.config.auth_token is None:
            log.warning(
                "signature_check_disabled",
                gateway_id=ctx.config.gateway_id,
                hint="no Twilio auth token: anyone can open calls on this gateway",
            )
        if listeners is None:
            listeners = await open_listeners(ctx.config.host, ctx.config.port)
        port = bound_port(listeners)
        ctx.config = with_bound_port(ctx.config, port)
        limits = HttpLimits(
            max_body_bytes=ctx.config.max_body_bytes,
            max_connections=connection_limit(ctx.config.max_connections),
            request_timeout=ctx.config.http_timeout_s,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(ctx.facts.serve)
            await nursery.start(self.dispatcher.serve)
            await nursery.start(self.dashboard.serve)
            await nursery.start(self.health.serve)
            nursery.start_soon(serve_http, self.router(), listeners, limits)
            if stop is not None:
                nursery.start_soon(self._drain_when, stop, nursery.cancel_scope)
            ctx.ready = True
            log.info(
                "gateway_listening",
                gateway_id=ctx.config.gateway_id,
                host=ctx.config.host,
                port=port,
                public_url=ctx.config.public_url,
            )
            task_status.started(port)

    async def _drain_when(self, stop: trio.Event, serving: trio.CancelScope) -> None:
        await stop.wait()
        await drain(self.ctx)
        serving.cancel()

    def router(self) -> Router:
        hooks = self.webhooks
        router = Router()
        router.add("GET", "/healthz", hooks.healthz)
        router.add("GET", "/readyz", hooks.readyz)
        router.add("GET", "/metrics", hooks.metrics)
        router.add("POST", "/twiml", hooks.twiml)
        router.add("POST", "/action", hooks.action)
        router.add("POST", "/status", hooks.status)
        router.websocket("/relay", gate=hooks.relay_gate, handler=self._relay)
        self.dashboard.add_routes(router)
        return router

    async def _relay(self, request: Request, stream: trio.abc.Stream) -> None:
        await run_relay(self.ctx, self.dispatcher, stream)


# Descriptors kept free of connections: Redis, the dashboard, logs, the listener.
FD_RESERVE = 64


def connection_limit(configured: int) -> int:
    """``configured``, or less when the open-file limit would run out first."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or configured + FD_RESERVE <= soft:
        return configured
    limit = max(1, soft - FD_RESERVE)
    log.warning(
        "connection_limit_lowered",
        configured=configured,
        limit=limit,
        open_file_limit=soft,
        hint="raise the open-file limit (ulimit -n) to serve more connections",
    )
    return limit


def with_bound_port(config: GatewayConfig, port: int) -> GatewayConfig:
    """``config`` with a public URL naming port 0 pointed at the bound ``port``.

    With ``port=0`` (tests, ``switchboard dev --port 0``) the public URL derived
    from host and port says ``:0``, which no client can have used; the port we
    actually bound is what Twilio (or the simulator) signs and connects to.
    """
    parts = urlsplit(config.public_url)
    try:
        named = parts.port
    except ValueError:
        return config
    if named != 0:
        return config
    netloc = parts.netloc.rpartition(":")[0] + f":{port}"
    return replace(config, public_url=urlunsplit(parts._replace(netloc=netloc)))


async def serve_gateway(
    bus: Bus,
    config: GatewayConfig,
    *,
    registries: Sequence[CollectorRegistry] = (),
    listeners: list[trio.SocketListener] | None = None,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the gateway on ``config.host:config.port`` until cancelled, or
    until ``stop`` is set and the live calls are drained (:mod:`gateway.drain`).

    Reports the bound port (useful with port 0) through ``task_status``.
    On cancel every relay socket is closed with 1001 (going away), shielded
    and time-limited, and a ``call.closed`` is appended for each.
    ``registries`` are rendered on ``/metrics`` after the gateway's own (the
    one-process ``dev`` composition shows the telemetry actor's there).
    ``listeners``, when given, are already bound (the composition root binds
    the public port before anything else, so a port in use fails at once).
    """
    await Gateway(bus, config, registries=registries).serve(
        listeners=listeners, stop=stop, task_status=task_status
    )
