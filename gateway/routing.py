"""Routing a request: by path and method to a handler, or to a WebSocket route.

A WebSocket route has a *gate* that runs before the hand-off, so a refused
upgrade is answered with a plain HTTP status and never becomes a session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
import trio

from gateway.http_message import Request, Response, text_response

log = structlog.get_logger()

HttpHandler = Callable[[Request], Awaitable[Response]]
# Runs before a WebSocket hand-off: a Response refuses the upgrade with it.
UpgradeGate = Callable[[Request], Awaitable[Response | None]]
# Owns the stream once called; the stream replays the request bytes first.
StreamHandler = Callable[[Request, trio.abc.Stream], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WebSocketRoute:
    gate: UpgradeGate
    handler: StreamHandler


@dataclass(slots=True)
class Router:
    """Maps (path, method) to handlers; one WebSocket route per path."""

    routes: dict[str, dict[str, HttpHandler]] = field(default_factory=dict)
    sockets: dict[str, WebSocketRoute] = field(default_factory=dict)

    def add(self, method: str, path: str, handler: HttpHandler) -> None:
        self.routes.setdefault(path, {})[method.upper()] = handler

    def websocket(self, path: str, *, gate: UpgradeGate, handler: StreamHandler) -> None:
        self.sockets[path] = WebSocketRoute(gate, handler)

    def allowed(self, path: str) -> list[str]:
        methods = set(self.routes.get(path, {}))
        if path in self.sockets:
            methods.add("GET")
        return sorted(methods)


async def dispatch(router: Router, request: Request) -> Response:
    methods = router.routes.get(request.path)
    if methods is None:
        if request.path in router.sockets:
            if request.method in ("GET", "HEAD"):
                return Response(
                    426, b"websocket upgrade required", headers=(("Upgrade", "websocket"),)
                )
            return Response(405, b"method not allowed", headers=(("Allow", "GET"),))
        return text_response(404, "not found")
    # HEAD is GET without the body (RFC 9110 9.3.2); _send_response leaves it out.
    method = "GET" if request.method == "HEAD" else request.method
    handler = methods.get(method)
    if handler is None:
        allow = ", ".join(router.allowed(request.path))
        return Response(405, b"method not allowed", headers=(("Allow", allow),))
    try:
        return await handler(request)
    except Exception:
        log.exception("http_handler_failed", path=request.path, method=request.method)
        return text_response(500, "internal error")
