"""Starting a role: its port bound first, then the bus, waited for.

A serving role binds its port before anything else starts, so a port in use
stops it at once (``StartupError``); then it opens the bus, waiting for Redis
with the same backoff the loops use after start.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from bus.base import Bus, BusError
from bus.redis import open_redis_bus
from bus.retry import Backoff
from gateway.http import open_listeners
from switchboard.settings import Settings


class StartupError(Exception):
    """A role cannot start for a reason its operator can fix; the message says how."""


async def bind(host: str, port: int, *, what: str, setting: str) -> list[trio.SocketListener]:
    """Bind ``host:port`` before anything else starts; a clash is a ``StartupError``."""
    try:
        return await open_listeners(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {host} is already in use; stop the process using it "
                f"or choose another {what} port ({setting})"
            ) from None
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            raise StartupError(
                f"cannot listen on {host}:{port} ({exc.strerror}); check --host or SWITCHBOARD_HOST"
            ) from None
        if exc.errno == errno.EACCES:
            raise StartupError(
                f"no permission to listen on port {port}; use a port above 1023 ({setting})"
            ) from None
        raise


@asynccontextmanager
async def open_bus(settings: Settings, *, wait: bool = False) -> AsyncIterator[Bus]:
    """The Redis bus named by the settings.

    With ``wait`` an unreachable Redis is waited for, with the backoff every
    bus loop uses (logged once: ``bus_unavailable`` with loop ``start``, then
    ``bus_recovered``); without it the first failure is raised.
    """
    backoff = Backoff("start", redis_url=settings.redis_url)
    async with AsyncExitStack() as stack:
        while True:
            try:
                bus = await stack.enter_async_context(
                    open_redis_bus(
                        settings.redis_url,
                        retention_ms=settings.retention_ms,
                        wait=settings.redis_wait,
                    )
                )
                break
            except BusError as exc:
                if not wait:
                    raise
                await backoff.failed(exc)
        backoff.succeeded()
        yield bus
