"""The webhooks as Twilio sends them: signed form posts over HTTP/1.1 (h11).

The simulator connects to the *local* origin of ``base_url`` but signs and
addresses each request with the *public* URL Twilio would have used.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode, urlsplit

import h11
import trio

from relay.signature import SIGNATURE_HEADER, sign
from switchboard.twilio.errors import ConnectionFailed, HttpError, SimulatorError

API_VERSION: Final = "2010-04-01"
# Bounds for a simulator talking to our own server: generous, but finite.
MAX_HTTP_BODY: Final = 1024 * 1024

# How Twilio makes a webhook request by default (its "Webhooks connection
# overrides" page, https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides):
# 5 s to connect (``ct``), 15 s for a response (``rt``) and for every attempt
# together (``tt``), and one retry (``rc``) when the connection fails.
CONNECT_TIMEOUT_S: Final = 5.0
TOTAL_TIMEOUT_S: Final = 15.0
RETRIES: Final = 1


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the simulator really connects: scheme, host and port of ``base_url``."""

    tls: bool
    host: str
    port: int

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SimulatorError(f"base url must be http(s)://host[:port]: {base_url!r}")
        tls = parts.scheme == "https"
        return cls(tls=tls, host=parts.hostname, port=parts.port or (443 if tls else 80))


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _request(
    origin: Origin,
    method: str,
    public_url: str,
    params: Mapping[str, str],
    auth_token: str | None,
) -> tuple[str, list[tuple[str, str]], bytes]:
    """The URL Twilio signs, the headers (signature included) and the body."""
    headers = [
        ("Host", urlsplit(public_url).netloc or origin.host),
        ("User-Agent", "TwilioProxy/1.1"),
        ("Accept", "*/*"),
        ("Connection", "close"),
    ]
    if method == "GET":
        url = public_url + (("&" if "?" in public_url else "?") + urlencode(params))
        body = b""
        signed = sign(auth_token, url) if auth_token else None
    else:
        url = public_url
        body = urlencode(params).encode()
        headers += [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Length", str(len(body))),
        ]
        signed = sign(auth_token, url, params) if auth_token else None
    if signed is not None:
        headers.append((SIGNATURE_HEADER, signed))
    return url, headers, body


async def _open_stream(origin: Origin) -> trio.abc.Stream:
    if origin.tls:
        return await trio.open_ssl_over_tcp_stream(
            origin.host, origin.port, ssl_context=ssl.create_default_context()
        )
    return await trio.open_tcp_stream(origin.host, origin.port)


async def _read_response(conn: h11.Connection, stream: trio.abc.Stream, url: str) -> HttpResponse:
    status = 0
    headers: tuple[tuple[str, str], ...] = ()
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if not status:  # closed before any response: the connection failed
                raise ConnectionFailed(f"{url} closed the connection unanswered") from None
            raise SimulatorError(f"bad HTTP response from {url}: {exc}") from None
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = tuple((k.decode(), v.decode()) for k, v in event.headers)
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_HTTP_BODY:
                raise SimulatorError(f"response from {url} exceeds {MAX_HTTP_BODY} bytes")
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return HttpResponse(status=status, headers=headers, body=b"".join(chunks))


async def http_request(
    origin: Origin,
    method: str,
    public_url: str,
    params: Mapping[str, str],
    auth_token: str | None,
) -> HttpResponse:
    """One signed webhook request, as Twilio sends it, to the local origin.

    As Twilio does: the connection must open within ``CONNECT_TIMEOUT_S``; a
    connection that fails (refused, reset, closed before a response: a
    server or balancer that went away) is tried once more; everything
    together within ``TOTAL_TIMEOUT_S``. An HTTP error status is not retried.
    """
    url = public_url
    with trio.move_on_after(TOTAL_TIMEOUT_S):
        for attempt in range(RETRIES + 1):
            try:
                return await _attempt(origin, method, public_url, params, auth_token)
            except ConnectionFailed:
                if attempt == RETRIES:
                    raise
    raise SimulatorError(f"no response from {url} within {TOTAL_TIMEOUT_S:g} s")


async def _attempt(
    origin: Origin,
    method: str,
    public_url: str,
    params: Mapping[str, str],
    auth_token: str | None,
) -> HttpResponse:
    url, headers, body = _request(origin, method, public_url, params, auth_token)
    conn = h11.Connection(h11.CLIENT)
    try:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            stream = await _open_stream(origin)
    except (OSError, trio.TooSlowError) as exc:
        raise ConnectionFailed(f"could not connect to {url}: {exc!r}") from None
    async with stream:
        try:
            out = conn.send(h11.Request(method=method, target=target(url), headers=headers))
            if body:
                out += conn.send(h11.Data(data=body)) or b""
            out += conn.send(h11.EndOfMessage()) or b""
            await stream.send_all(out or b"")
            response = await _read_response(conn, stream, url)
        except (OSError, trio.BrokenResourceError) as exc:
            raise ConnectionFailed(f"connection to {url} failed: {exc!r}") from None
    if response.status == 0:
        raise ConnectionFailed(f"connection to {url} closed before a response")
    if not 200 <= response.status < 300:
        raise HttpError(url, response.status, response.text)
    return response
