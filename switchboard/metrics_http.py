"""A minimal HTTP server for an actor process: ``GET /metrics``, ``/healthz``, ``/readyz``.

The gateway serves its own ``/metrics`` on its public port; actor processes
have no HTTP server of their own, and ``actors`` must not import ``gateway``,
so the composition root starts this one when ``SWITCHBOARD_METRICS_PORT`` is
set. One request per connection (``Connection: close``), bounded in time and
size: it serves scrapers and probes, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

import h11
import structlog
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, ProcessCollector
from prometheus_client.exposition import generate_latest

from bus.retry import HEALTH, BusHealth

log = structlog.get_logger()

REQUEST_TIMEOUT = 5.0
MAX_REQUEST_BYTES = 16 * 1024


def process_registry() -> CollectorRegistry:
    """A registry holding this process's own metrics (prometheus_client's
    ``ProcessCollector``, read from ``/proc``): ``process_resident_memory_bytes``,
    ``process_cpu_seconds_total``, ``process_open_fds``, ``process_max_fds``,
    ``process_virtual_memory_bytes`` and ``process_start_time_seconds``.

    Every role's ``/metrics`` includes one (on systems without ``/proc`` the
    collector reports nothing).
    """
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


def bus_health_registry(role: str, health: BusHealth = HEALTH) -> CollectorRegistry:
    """A registry with the process's bus weather (``bus.retry.BusHealth``), read at scrape.

    ``switchboard_bus_degraded{role}`` is 1 while the process rides out a bus
    outage (Redis full, read-only, loading, away) and 0 otherwise;
    ``switchboard_bus_outages{role}`` counts the outages since start.
    """
    registry = CollectorRegistry()
    degraded = Gauge(
        "switchboard_bus_degraded",
        "1 while this process's bus commands fail (Redis full, read-only, loading, away).",
        ["role"],
        registry=registry,
    )
    degraded.labels(role).set_function(lambda: float(health.degraded))
    outages = Gauge(
        "switchboard_bus_outages",
        "Bus outages this process has ridden out since it started.",
        ["role"],
        registry=registry,
    )
    outages.labels(role).set_function(lambda: float(health.outages))
    return registry


def render(registries: Sequence[CollectorRegistry]) -> bytes:
    """The Prometheus text exposition of every registry, one after the other."""
    return b"".join(bytes(generate_latest(r)) for r in registries)


async def _respond(stream: trio.SocketStream, registries: Sequence[CollectorRegistry]) -> None:
    conn = h11.Connection(h11.SERVER)
    received = 0
    request: h11.Request | None = None
    while request is None:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(4096)
            received += len(data)
            if not data or received > MAX_REQUEST_BYTES:
                return
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            request = event
        else:
            return
    path = request.target.decode(errors="replace").split("?", 1)[0]
    if request.method == b"GET" and path == "/metrics":
        status, body, ctype = 200, render(registries), CONTENT_TYPE_LATEST
    elif request.method == b"GET" and path == "/healthz":
        status, body, ctype = 200, b"ok\n", "text/plain; charset=utf-8"
    elif request.method == b"GET" and path == "/readyz":
        # Alive but riding out a bus outage: not ready, so not restarted.
        status, body = (503, b"bus degraded\n") if HEALTH.degraded else (200, b"ready\n")
        ctype = "text/plain; charset=utf-8"
    else:
        status, body, ctype = 404, b"not found\n", "text/plain; charset=utf-8"
    headers = [
        ("Content-Type", ctype),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
    out += conn.send(h11.Data(data=body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(out)


async def serve_metrics(
    host: str,
    port: int,
    registries: Sequence[CollectorRegistry],
    *,
    listeners: list[trio.SocketListener] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics`` (the ``registries``), ``/healthz`` and ``/readyz`` until cancelled.

    ``/readyz`` is 503 while the process's bus is degraded (``bus.retry.HEALTH``).

    Reports the bound port through ``task_status`` (useful with port 0).
    ``listeners``, when given, are already bound to ``host:port``.
    """
    if listeners is None:
        listeners = await trio.open_tcp_listeners(port, host=host)
    bound = int(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(REQUEST_TIMEOUT):
                try:
                    await _respond(stream, registries)
                except (h11.ProtocolError, trio.BrokenResourceError, OSError) as exc:
                    log.debug("metrics_request_failed", error=repr(exc))

    log.info("metrics_listening", host=host, port=bound)
    async with trio.open_nursery() as nursery:
        task_status.started(bound)
        await trio.serve_listeners(handle, listeners, handler_nursery=nursery)


async def fetch(host: str, port: int, path: str) -> tuple[int, str]:
    """GET ``http://host:port/path`` once: (status, body). For tests and probes.

    Bound it with ``trio.fail_after`` at the call site.
    """
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        chunks = []
        while data := await stream.receive_some(65536):
            chunks.append(bytes(data))
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body.decode(errors="replace")
