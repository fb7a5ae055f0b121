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

The parts live in their own modules and are re-exported here: the request
and response types (``gateway.http_message``), the router
(``gateway.routing``), the hand-off stream (``gateway.replay_stream``) and
accepting connections under a limit (``gateway.accept``). This module is the
h11 request/response plumbing of one connection, and ``serve_http``.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11
import structlog
import trio

from gateway.accept import Capacity, accept_loop, bound_port, close_stream, open_listeners
from gateway.http_message import Request, Response, text_response, xml_response
from gateway.replay_stream import ReplayStream
from gateway.routing import (
    HttpHandler,
    Router,
    StreamHandler,
    UpgradeGate,
    WebSocketRoute,
    dispatch,
)

__all__ = [
    "Capacity",
    "HttpHandler",
    "HttpLimits",
    "ReplayStream",
    "Request",
    "Response",
    "Router",
    "StreamHandler",
    "UpgradeGate",
    "WebSocketRoute",
    "bound_port",
    "handle_connection",
    "open_listeners",
    "serve_http",
    "text_response",
    "xml_response",
]

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
class HttpLimits:
    """Per-request limits. ``request_timeout`` covers the head and the body,
    and also bounds how long an idle keep-alive connection is kept."""

    max_body_bytes: int = 64 * 1024
    request_timeout: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 2048


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
            response = await dispatch(router, request)
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
        await close_stream(stream)


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
            nursery.start_soon(accept_loop, listener, nursery, guarded, cap)
