"""Accepting connections: binding, the connection limit, running out of descriptors.

At most ``Capacity.limit`` connections are served at once; one more is
answered ``503`` and closed at once, so an attacker's idle connections
cannot use up the process's file descriptors. When ``accept`` fails for
lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) the
listener logs it once (``accept_exhausted``), backs off up to a second, and
logs ``accept_recovered`` when a connection is accepted again, instead of
trio's traceback every 100 ms.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
import trio

log = structlog.get_logger()


async def close_stream(stream: trio.abc.Stream) -> None:
    """Close ``stream``, shielded from cancellation and for at most a second."""
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        await stream.aclose()


async def open_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Bind ``host:port``; with port 0 keep one listener so the port is unique."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    if port == 0 and len(listeners) > 1:
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    return listeners


def bound_port(listeners: list[trio.SocketListener]) -> int:
    return int(listeners[0].socket.getsockname()[1])


# accept() failing for want of resources: retry later, the listener is fine.
_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_BACKOFF_S = (0.01, 1.0)  # first and longest wait after a failed accept
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 5\r\nRetry-After: 1\r\nConnection: close\r\n\r\nbusy\n"
)


@dataclass(slots=True)
class Capacity:
    """Connections being served now, against the limit (shared by every listener)."""

    limit: int
    open: int = 0
    refused: int = 0


async def _refuse(stream: trio.SocketStream) -> None:
    """Answer 503 without reading the request, and close: the server is full."""
    with trio.move_on_after(1.0):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(_BUSY)
    await close_stream(stream)


async def accept_loop(
    listener: trio.SocketListener,
    nursery: trio.Nursery,
    serve: Callable[[trio.SocketStream], Awaitable[None]],
    capacity: Capacity,
) -> None:
    wait = _ACCEPT_BACKOFF_S[0]
    exhausted = False
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in _CAPACITY_ERRNOS:
                raise
            if not exhausted:
                exhausted = True
                log.error(
                    "accept_exhausted",
                    error=errno.errorcode.get(exc.errno or 0, str(exc.errno)),
                    open_connections=capacity.open,
                    hint="raise the open-file limit (ulimit -n) or lower "
                    "SWITCHBOARD_MAX_CONNECTIONS below it",
                )
            await trio.sleep(wait)
            wait = min(wait * 2, _ACCEPT_BACKOFF_S[1])
            continue
        if exhausted:
            exhausted = False
            log.info("accept_recovered", open_connections=capacity.open)
        wait = _ACCEPT_BACKOFF_S[0]
        if capacity.open >= capacity.limit:
            capacity.refused += 1
            if capacity.refused == 1 or capacity.refused % 1000 == 0:
                log.warning("connections_at_limit", limit=capacity.limit, refused=capacity.refused)
            nursery.start_soon(_refuse, stream)
            continue
        capacity.open += 1
        nursery.start_soon(serve, stream)
