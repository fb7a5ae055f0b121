"""A small HTTP/1.1 front on h11 that serves one port: webhooks and the socket.

Layering: this module knows HTTP and nothing about Twilio. It accepts TCP
connections, parses each request head with h11 under a time limit (slow-loris
guard), enforces a body size limit (413), routes by path and method (404,
405) and, for a WebSocket route, hands the raw connection over: the bytes h11
already consumed are replayed by :class:`ReplayStream` so the WebSocket
library sees the request from its first byte. A route's *gate* runs before
the hand-off, so a refused upgrade (e.g. a bad signature) is answered here
with a plain HTTP status and never becomes a session.

Keep-alive is supported for plain requests; an upgrade ends h11's part of
the connection.

Capacity: at most ``HttpLimits.max_connections`` connections are served at
once; one more is answered ``503`` and closed at once, so an attacker's idle
connections cannot use up the process's file descriptors. When ``accept``
fails for lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM)
the listener logs it once (``accept_exhausted``), backs off up to a second,
and logs ``accept_recovered`` when a connection is accepted again, instead
of trio's traceback every 100 ms.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import h11
import structlog
import trio

log = structlog.get_logger()

RECEIVE_BYTES = 16 * 1024

_REASONS = {
    200: b"OK",
    204: b"No Content",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    426: b"Upgrade Required",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request: header names are lower case, the body is complete."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        """The query string without ``?`` (empty when there is none)."""
        return self.target.partition("?")[2]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    @property
    def wants_websocket(self) -> bool:
        upgrade = self.header("upgrade") or ""
        return self.method == "GET" and upgrade.strip().lower() == "websocket"

    def form(self) -> dict[str, str]:
        """The ``application/x-www-form-urlencoded`` body; ``{}`` for other types.

        A repeated name keeps its last value here; ``form_pairs`` has them all.
        """
        return dict(self.form_pairs())

    def form_pairs(self) -> list[tuple[str, str]]:
        """Every ``(name, value)`` of the form body in order, repeated names included."""
        content_type = (self.header("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return []
        text = self.body.decode("utf-8", errors="replace")
        return parse_qsl(text, keep_blank_values=True)


@dataclass(frozen=True, slots=True)
class Response:
    """What a handler answers; ``content_type`` None sends no Content-Type."""

    status: int
    body: bytes = b""
    content_type: str | None = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def text_response(status: int, text: str = "") -> Response:
    return Response(status, text.encode())


def xml_response(xml: str, status: int = 200) -> Response:
    return Response(status, xml.encode(), content_type="application/xml")


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


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Per-request limits. ``request_timeout`` covers the head and the body,
    and also bounds how long an idle keep-alive connection is kept."""

    max_body_bytes: int = 64 * 1024
    request_timeout: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 2048


class ReplayStream(trio.abc.Stream):
    """A stream that first returns ``prefix`` and then reads from ``stream``.

    Used to hand a connection whose request head h11 has already consumed
    to a WebSocket library that wants to parse the handshake itself.
    """

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self.stream = stream
        self._prefix = bytearray(prefix)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            size = len(self._prefix) if max_bytes is None else max_bytes
            chunk = bytes(self._prefix[:size])
            del self._prefix[:size]
            return chunk
        return bytes(await self.stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


# h11 lets a server answer before a full request head (400, 408) from IDLE.
_CAN_ANSWER = (h11.IDLE, h11.SEND_RESPONSE)


class _Closed(Exception):
    """The peer closed (or broke) the connection before a full request."""


async def _next_event(stream: trio.abc.Stream, conn: h11.Connection, raw: bytearray) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            data = bytes(await stream.receive_some(RECEIVE_BYTES))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _Closed from exc
        raw += data
        conn.receive_data(data)


async def _send_response(
    stream: trio.abc.Stream,
    conn: h11.Connection,
    response: Response,
    *,
    close: bool,
    head: bool = False,
) -> None:
    """Write ``response``; ``head`` (a HEAD request) sends its headers only."""
    headers: list[tuple[str, str]] = []
    if response.content_type is not None and response.status != 204:
        headers.append(("Content-Type", response.content_type))
    if response.status != 204:
        headers.append(("Content-Length", str(len(response.body))))
    headers.extend(response.headers)
    if close:
        headers.append(("Connection", "close"))
    reason = _REASONS.get(response.status, b"")
    data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
    if response.body and response.status != 204 and not head:
        data = (data or b"") + (conn.send(h11.Data(data=response.body)) or b"")
    data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
    await stream.send_all(data)


async def _close(stream: trio.abc.Stream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        await stream.aclose()


async def handle_connection(stream: trio.abc.Stream, router: Router, limits: HttpLimits) -> None:
    """Serve requests on one connection until it closes, errs or is upgraded."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
    raw = bytearray()
    handed_off = False
    try:
        while True:
            request: Request | None = None
            refusal: Response | None = None
            with trio.move_on_after(limits.request_timeout) as timer:
                try:
                    request, refusal = await _read_request(stream, conn, raw, limits)
                except _Closed:
                    return
                except h11.RemoteProtocolError as exc:
                    refusal = text_response(exc.error_status_hint, "bad request")
            if timer.cancelled_caught:
                if not raw or conn.our_state not in _CAN_ANSWER:
                    return  # idle keep-alive connection: just close it
                log.info("http_request_timeout", bytes_read=len(raw))
                refusal = text_response(408, "request timeout")
            if request is None and refusal is None:
                return  # clean end of a keep-alive connection
            if refusal is not None:
                if conn.our_state in _CAN_ANSWER:
                    await _send_response(stream, conn, refusal, close=True)
                return
            assert request is not None
            route = router.sockets.get(request.path)
            if route is not None and request.wants_websocket:
                rejected = await route.gate(request)
                if rejected is not None:
                    await _send_response(stream, conn, rejected, close=True)
                    return
                handed_off = True
                await route.handler(request, ReplayStream(stream, bytes(raw)))
                return
            response = await _dispatch(router, request)
            keep = conn.their_state is h11.DONE and request.header("upgrade") is None
            head = request.method == "HEAD"
            await _send_response(stream, conn, response, close=not keep, head=head)
            if not keep or conn.our_state is not h11.DONE:
                return
            conn.start_next_cycle()
            raw = bytearray(conn.trailing_data[0])
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        if not handed_off:
            log.debug("http_connection_broken")
    finally:
        await _close(stream)


async def _read_request(
    stream: trio.abc.Stream, conn: h11.Connection, raw: bytearray, limits: HttpLimits
) -> tuple[Request | None, Response | None]:
    event = await _next_event(stream, conn, raw)
    if isinstance(event, h11.ConnectionClosed):
        return None, None
    if not isinstance(event, h11.Request):
        return None, text_response(400, "bad request")
    headers = tuple(
        (name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in event.headers
    )
    head = Request(
        method=event.method.decode("ascii", errors="replace").upper(),
        target=event.target.decode("latin-1"),
        headers=headers,
    )
    length = head.header("content-length")
    if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
        return None, text_response(413, "body too large")
    body = bytearray()
    while True:
        event = await _next_event(stream, conn, raw)
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > limits.max_body_bytes:
                return None, text_response(413, "body too large")
        elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
            break
        elif isinstance(event, h11.ConnectionClosed):
            raise _Closed
    return Request(head.method, head.target, head.headers, bytes(body)), None


async def _dispatch(router: Router, request: Request) -> Response:
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
    await _close(stream)


async def _accept_loop(
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


async def serve_http(
    router: Router,
    listeners: list[trio.SocketListener],
    limits: HttpLimits,
    *,
    capacity: Capacity | None = None,
) -> None:
    """Serve ``router`` on already bound ``listeners`` until cancelled.

    A failing connection is logged and closed; it never stops the server.
    ``capacity`` (default: one of ``limits.max_connections``) counts the
    connections being served; a caller may pass its own to read it.
    """
    cap = capacity or Capacity(limits.max_connections)

    async def guarded(stream: trio.SocketStream) -> None:
        try:
            await handle_connection(stream, router, limits)
        except* Exception as group:
            log.error("http_connection_failed", error=repr(group.exceptions[0]))
        finally:
            cap.open -= 1

    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept_loop, listener, nursery, guarded, cap)
