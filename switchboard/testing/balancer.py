"""A TCP load balancer for tests: what sits in front of the gateways in production.

Twilio reaches a deployment through one public URL; a load balancer sends
each connection (a webhook, or a ``/relay`` upgrade) to a gateway whose
``/readyz`` answers 200, round robin. That is all this one does, at layer 4:
it asks each candidate's ``/readyz`` when a connection arrives (so a gateway
that starts draining, or is still starting, is skipped at once), tries the
next ready one if the connection to it fails, then pipes bytes both ways
until either side closes. A connection for which no gateway is ready is closed
without an answer, as a balancer with no healthy backend does.

Use it with the gateways' ``SWITCHBOARD_PUBLIC_URL`` set to the balancer's
URL, so signatures, ``<Connect action>`` and the relay URL all name it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog
import trio

__all__ = ["Balancer", "open_balancer"]

log = structlog.get_logger()

PROBE_TIMEOUT_S = 2.0
CHUNK = 65536
_IO_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


async def is_ready(host: str, port: int) -> bool:
    """Whether ``GET /readyz`` on ``host:port`` answers 200 (within the probe timeout)."""
    with trio.move_on_after(PROBE_TIMEOUT_S):
        try:
            async with await trio.open_tcp_stream(host, port) as stream:
                request = (
                    f"GET /readyz HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
                )
                await stream.send_all(request.encode())
                head = b""
                while b"\r\n" not in head:
                    chunk = await stream.receive_some(1024)
                    if not chunk:
                        return False
                    head += chunk
                return head.split(b" ", 2)[1:2] == [b"200"]
        except _IO_ERRORS:
            return False
    return False


async def _pipe(src: trio.SocketStream, dst: trio.SocketStream, broken: trio.CancelScope) -> None:
    """Copy ``src`` to ``dst``; a clean end is passed on as a half-close, a
    broken one (a reset: the backend died) ends both directions at once, or
    the client would wait forever on a connection whose other end is gone."""
    try:
        while data := await src.receive_some(CHUNK):
            await dst.send_all(data)
        await dst.send_eof()
    except _IO_ERRORS:
        broken.cancel()


@dataclass(eq=False)
class Balancer:
    """The balancer's bound port and where it sent each connection."""

    backends: list[tuple[str, int]]  # may grow while it runs (gateways on port 0)
    port: int = 0
    routed: list[tuple[str, int]] = field(default_factory=list)
    _next: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def pick(self) -> tuple[str, int] | None:
        """The next ready backend, round robin; None when none is ready."""
        first, count = self._next, len(self.backends)
        self._next += 1
        for offset in range(count):
            backend = self.backends[(first + offset) % count]
            if await is_ready(*backend):
                return backend
        return None

    async def handle(self, client: trio.SocketStream) -> None:
        async with client:
            # A backend that dies between its probe and the connection is
            # skipped for the next ready one, as a balancer retries a
            # connect failure on another upstream.
            for _ in range(max(1, len(self.backends))):
                backend = await self.pick()
                if backend is None:
                    log.warning("balancer_no_ready_backend")
                    return
                try:
                    upstream = await trio.open_tcp_stream(*backend)
                except OSError:
                    log.info("balancer_backend_refused", backend=f"{backend[0]}:{backend[1]}")
                    continue
                break
            else:
                return
            self.routed.append(backend)
            async with upstream, trio.open_nursery() as nursery:
                nursery.start_soon(_pipe, client, upstream, nursery.cancel_scope)
                nursery.start_soon(_pipe, upstream, client, nursery.cancel_scope)


@asynccontextmanager
async def open_balancer(backends: Sequence[tuple[str, int]] = ()) -> AsyncIterator[Balancer]:
    """Balance loopback connections over ``backends`` (host, port) until the block exits."""
    balancer = Balancer(list(backends))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    balancer.port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, balancer.handle, listeners)
        try:
            yield balancer
        finally:
            nursery.cancel_scope.cancel()
