"""Process composition: which bus, which actors, one nursery, clean shutdown.

``run_dev`` puts the gateway and every built-in actor in one process on a
``MemoryBus``; ``run_gateway`` and ``run_actor`` run one role each against
Redis. Every role drains on the first SIGINT/SIGTERM and exits 0: an actor
finishes the entries in flight (bounded) and releases its leases; a gateway,
and ``dev``, takes no new calls and lets live ones go on until they end or
the drain deadline (``gateway.drain``). A second signal cancels the nursery
at once, so work in flight stays pending on the bus for another worker.

Start-up order (``switchboard.startup``): a serving role binds its port
first, so a port in use stops it at once (``StartupError``) before anything
else started; then it opens the bus, waiting for Redis with the same backoff
the loops use after start (one ``bus_unavailable`` line, then
``bus_recovered``), never exiting because Redis is not up yet. Which actor a
role name means is ``switchboard.roles``; ``replay`` and ``tail`` run from
``switchboard.ops.commands``.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

import structlog
import trio
from prometheus_client import CollectorRegistry

from actors.runtime import dead_letter_stream, serve_actor
from actors.telemetry import TelemetryActor
from bus.base import Bus
from bus.memory import MemoryBus
from bus.trim import serve_trimmer
from gateway.server import serve_gateway
from switchboard import gcpause
from switchboard.metrics_http import bus_health_registry, process_registry, serve_metrics
from switchboard.roles import BUILTIN_ACTORS, OPTIONAL_ACTORS, build_actor
from switchboard.settings import Settings
from switchboard.startup import StartupError, bind, open_bus

__all__ = [
    "BUILTIN_ACTORS",
    "DRAIN_SECONDS",
    "OPTIONAL_ACTORS",
    "StartupError",
    "run_actor",
    "run_dev",
    "run_gateway",
    "run_until_signalled",
    "start_dev",
]

log = structlog.get_logger()

# How long a role may take to finish in-flight work after SIGTERM.
DRAIN_SECONDS = {"llm": 20.0, "conversation": 5.0}


async def run_until_signalled(
    main: Callable[[trio.Nursery], Awaitable[None]], *, stop: trio.Event | None = None
) -> None:
    """Run ``main`` (which starts services in the nursery) until SIGINT/SIGTERM.

    Without ``stop`` a signal cancels everything at once. With ``stop`` the
    first signal only sets it (``main``'s services drain and then cancel the
    nursery themselves); a second signal cancels at once.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await main(nursery)

            async def watch() -> None:
                async for signum in signals:
                    log.info("shutdown_requested", signal=signal.Signals(signum).name)
                    if stop is not None and not stop.is_set():
                        stop.set()
                        continue
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)
    log.info("shutdown_complete")


async def start_dev(
    nursery: trio.Nursery,
    settings: Settings,
    bus: Bus,
    *,
    telemetry: TelemetryActor | None = None,
    extra_registries: Sequence[CollectorRegistry] = (),
    listeners: list[trio.SocketListener] | None = None,
    stop: trio.Event | None = None,
) -> int:
    """Start every built-in actor and the gateway on ``bus``; returns the bound port.

    ``listeners``: the gateway's port, already bound (else it binds its own).
    ``stop``: once set, the gateway drains (:mod:`gateway.drain`) while the
    actors keep serving its live calls; then the whole nursery is cancelled.

    The gateway's ``/metrics`` also shows the telemetry actor's metrics (one
    port for everything in one process). Pass ``telemetry`` to keep a handle
    on the telemetry actor (tests read its turn timings).
    """
    registry = CollectorRegistry()
    actors = [
        (role, telemetry if role == "telemetry" and telemetry is not None
         else build_actor(settings, role, registry))
        for role in BUILTIN_ACTORS
    ]  # fmt: skip
    if settings.otel_endpoint is not None:
        # Traces only when configured (OTEL_EXPORTER_OTLP_ENDPOINT): off by default.
        actors.append(("otel", build_actor(settings, "otel", registry)))
    for role, actor in actors:
        await nursery.start(
            lambda task_status, actor=actor, role=role: serve_actor(
                bus,
                actor,
                consumer=f"{settings.worker_id}-{role}",
                lease_ttl_ms=settings.lease_ttl_ms,
                task_status=task_status,
            )
        )
    registries = [telemetry.registry if telemetry is not None else registry, *extra_registries]

    async def serve(task_status: trio.TaskStatus[int]) -> None:
        await serve_gateway(
            bus,
            # The dev process is the operator's own: its dashboard needs no token.
            replace(settings.gateway_config(), dashboard_open=True),
            registries=registries,
            listeners=listeners,
            stop=stop,
            task_status=task_status,
        )
        nursery.cancel_scope.cancel()  # drained: the actors have nothing left to serve

    port: int = await nursery.start(serve)
    return port


async def run_dev(settings: Settings) -> None:
    """``switchboard dev``: the whole system in one process on the memory bus."""
    listeners = await bind(settings.host, settings.port, what="gateway", setting="SWITCHBOARD_PORT")
    bus = MemoryBus(retention_ms=settings.retention_ms)
    pauses = gcpause.observe(process_registry())
    # SIGTERM drains as a gateway does: no new calls, live ones go on (every
    # actor still serves them) until they end or the drain deadline, then
    # stop; a second signal stops at once.
    stop = trio.Event()

    async def main(nursery: trio.Nursery) -> None:
        port = await start_dev(
            nursery,
            settings,
            bus,
            extra_registries=[pauses.registry, bus_health_registry("dev")],
            listeners=listeners,
            stop=stop,
        )
        gcpause.settle()
        log.info(
            "switchboard_ready",
            mode="dev",
            url=f"http://{settings.host}:{port}",
            provider=settings.provider,
            hint=f"talk to it: switchboard call --url http://{settings.host}:{port}",
            dashboard=f"http://{settings.host}:{port}/dashboard",
        )

    try:
        await run_until_signalled(main, stop=stop)
    finally:
        await bus.aclose()


async def run_gateway(settings: Settings) -> None:
    """``switchboard gateway``: the edge alone, on Redis."""
    listeners = await bind(settings.host, settings.port, what="gateway", setting="SWITCHBOARD_PORT")
    pauses = gcpause.observe(process_registry())
    # SIGTERM drains: no new calls, live ones go on, the rest are handed over.
    stop = trio.Event()
    async with open_bus(settings, wait=True) as bus:

        async def main(nursery: trio.Nursery) -> None:
            async def serve(task_status: trio.TaskStatus[int]) -> None:
                await serve_gateway(
                    bus,
                    settings.gateway_config(),
                    registries=[pauses.registry, bus_health_registry("gateway")],
                    listeners=listeners,
                    stop=stop,
                    task_status=task_status,
                )
                nursery.cancel_scope.cancel()  # drained: stop the rest too

            port = await nursery.start(serve)
            # Its own stream: trimmed, and kept alive only while it runs.
            own = settings.keys.gateway(settings.gateway_id)
            nursery.start_soon(
                lambda: serve_trimmer(bus, [own], settings.trim, keep_alive=[own], role="gateway")
            )
            gcpause.settle()
            log.info(
                "switchboard_ready",
                mode="gateway",
                url=f"http://{settings.host}:{port}",
                gateway_id=settings.gateway_id,
            )

        await run_until_signalled(main, stop=stop)


async def run_actor(settings: Settings, role: str) -> None:
    """``switchboard actor ROLE``: one actor role (built-in or plug-in), on Redis.

    With ``SWITCHBOARD_METRICS_PORT`` set, the process also serves ``/metrics``
    (its registry) and ``/healthz`` on that port.
    """
    metrics_listeners = None
    if settings.metrics_port is not None:
        metrics_listeners = await bind(
            settings.host, settings.metrics_port, what="metrics", setting="SWITCHBOARD_METRICS_PORT"
        )
    registry = process_registry()
    actor = build_actor(settings, role, registry)
    gcpause.observe(registry)
    # SIGTERM drains: in-flight entries finish, partition leases are released.
    stop = trio.Event()
    async with open_bus(settings, wait=True) as bus:

        async def main(nursery: trio.Nursery) -> None:
            async def serve(task_status: trio.TaskStatus[None]) -> None:
                await serve_actor(
                    bus,
                    actor,
                    consumer=f"{settings.worker_id}",
                    lease_ttl_ms=settings.lease_ttl_ms,
                    stop=stop,
                    # A reply in flight is worth finishing: the caller is
                    # listening. Past the bound it is left to another worker.
                    drain_timeout_s=DRAIN_SECONDS.get(role, 5.0),
                    task_status=task_status,
                )
                nursery.cancel_scope.cancel()  # drained: stop the rest too

            await nursery.start(serve)
            # The streams this role consumes, trimmed whether or not anything is appended.
            streams = [*actor.streams(), dead_letter_stream(actor.keys)]
            nursery.start_soon(lambda: serve_trimmer(bus, streams, settings.trim, role=role))
            metrics_port: int | None = None
            if metrics_listeners is not None:
                metrics_port = await nursery.start(
                    lambda task_status: serve_metrics(
                        settings.host,
                        0,
                        [registry, bus_health_registry(role)],
                        listeners=metrics_listeners,
                        task_status=task_status,
                    )
                )
            gcpause.settle()
            log.info(
                "switchboard_ready",
                mode="actor",
                actor=role,
                worker_id=settings.worker_id,
                metrics_port=metrics_port,
            )

        await run_until_signalled(main, stop=stop)
