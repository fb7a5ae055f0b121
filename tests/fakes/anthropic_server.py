"""A local fake of Anthropic's streaming Messages API, on Trio + h11.

``POST /v1/messages`` with ``"stream": true`` answers ``text/event-stream``
in the shape the real API uses: ``message_start``, ``content_block_start``,
a ``ping``, one ``content_block_delta`` (``text_delta``) per reply piece,
``content_block_stop``, ``message_delta`` (``stop_reason`` and output
``usage``) and ``message_stop``. Every request body is recorded so tests can
assert what the client sent. ``error_status`` answers every request with that
HTTP status and the API's error JSON (529 ``overloaded_error``, 500
``api_error``, ...); ``stream_error_after`` sends an in-stream ``error`` event
after that many deltas, as the API does when it overloads mid-reply.
``reject_prefill`` answers a request whose last message is ``assistant``
with the 400 that Claude 4.6+ models give ("does not support assistant
message prefill"); the API also rejects a prefill ending in whitespace, and
so does this fake, always.

Tool use: ``responder(payload) -> FakeReply`` picks the reply per request
(e.g. a ``tool_use`` first, then text once the request holds the
``tool_result``). A ``FakeReply`` with ``tool_uses`` streams, after its text
block, one ``tool_use`` content block per use, its input as
``input_json_delta`` pieces (split mid-JSON, as the API does), and stops
with ``stop_reason: "tool_use"``. ``delta_gap_s`` paces every delta.

Usage::

    async with open_fake_anthropic(reply=["Hi", " there"]) as fake:
        client = anthropic.AsyncAnthropic(api_key="test", base_url=fake.base_url)
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h11
import trio

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class FakeReply:
    """One streamed answer: text pieces, then tool uses ``{"id","name","input"}``."""

    text: Sequence[str] = ()
    tool_uses: Sequence[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None  # default: "tool_use" with uses, else "end_turn"


class FakeAnthropic:
    """The fake's settings and what it saw; ``base_url`` once it is serving."""

    def __init__(
        self,
        reply: Sequence[str] = ("Hello", " from", " the", " fake."),
        *,
        error_status: int | None = None,
        stream_error_after: int | None = None,
        input_tokens: int = 21,
        stop_reason: str = "end_turn",
        delta_gap_s: float = 0.0,
        reject_prefill: bool = False,
        responder: Callable[[dict[str, Any]], FakeReply] | None = None,
    ) -> None:
        self.reply = list(reply)
        self.error_status = error_status
        self.stream_error_after = stream_error_after
        self.input_tokens = input_tokens
        self.stop_reason = stop_reason
        self.delta_gap_s = delta_gap_s
        self.reject_prefill = reject_prefill
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.port = 0
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _prefill_refusal(self, payload: dict[str, Any]) -> str | None:
        messages = payload.get("messages") or []
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        if last.get("role") != "assistant":
            return None
        content = last.get("content")
        if isinstance(content, str) and content != content.rstrip():
            return "messages: final assistant content cannot end with trailing whitespace"
        if self.reject_prefill:
            return (
                "This model does not support assistant message prefill. "
                "The conversation must end with a user message."
            )
        return None

    async def handle_connection(self, stream: trio.SocketStream) -> None:
        """Serve HTTP/1.1 requests on one connection until the client closes it."""
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                got = await _read_request(conn, stream)
                if got is None:
                    return
                request, body = got
                await self._respond(conn, stream, request, body)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await stream.aclose()

    async def _respond(
        self, conn: h11.Connection, stream: trio.SocketStream, request: h11.Request, body: bytes
    ) -> None:
        n = next(self._ids)
        self.headers.append({k.decode().lower(): v.decode() for k, v in request.headers})
        if request.method != b"POST" or request.target.split(b"?")[0] != b"/v1/messages":
            await _send_json(conn, stream, 404, _error_body(404, "not found"), n)
            return
        payload = json.loads(body or b"{}")
        self.requests.append(payload)
        if self.error_status is not None:
            await _send_json(
                conn, stream, self.error_status, _error_body(self.error_status, "fake error"), n
            )
            return
        refusal = self._prefill_refusal(payload)
        if refusal is not None:
            await _send_json(conn, stream, 400, _error_body(400, refusal), n)
            return
        model = str(payload.get("model", ""))
        await _send(
            conn,
            stream,
            h11.Response(
                status_code=200,
                headers=[
                    ("content-type", "text/event-stream"),
                    ("cache-control", "no-cache"),
                    ("request-id", f"req_fake_{n}"),
                ],
            ),
        )
        events: list[tuple[str, dict[str, Any]]] = [
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": f"msg_fake_{n}",
                        "type": "message",
                        "role": "assistant",
                        "content": [],
                        "model": model,
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": self.input_tokens, "output_tokens": 1},
                    },
                },
            ),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            ("ping", {"type": "ping"}),
        ]
        answer = (
            self.responder(payload)
            if self.responder is not None
            else FakeReply(self.reply, stop_reason=self.stop_reason)
        )
        for event in events:
            await _send_event(conn, stream, *event)
        pieces = list(answer.text)
        for i, piece in enumerate(pieces):
            if self.stream_error_after is not None and i >= self.stream_error_after:
                await _send_event(conn, stream, "error", _error_body(529, "Overloaded"))
                await _send(conn, stream, h11.EndOfMessage())
                return
            if self.delta_gap_s > 0:
                await trio.sleep(self.delta_gap_s)
            await _send_event(
                conn,
                stream,
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )
        await _send_event(
            conn, stream, "content_block_stop", {"type": "content_block_stop", "index": 0}
        )
        for n, use in enumerate(answer.tool_uses, start=1):
            await _send_event(
                conn,
                stream,
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": n,
                    "content_block": {
                        "type": "tool_use",
                        "id": use["id"],
                        "name": use["name"],
                        "input": {},
                    },
                },
            )
            raw = json.dumps(use.get("input") or {})
            for part in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
                if self.delta_gap_s > 0:
                    await trio.sleep(self.delta_gap_s)
                await _send_event(
                    conn,
                    stream,
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": n,
                        "delta": {"type": "input_json_delta", "partial_json": part},
                    },
                )
            await _send_event(
                conn, stream, "content_block_stop", {"type": "content_block_stop", "index": n}
            )
        stop_reason = answer.stop_reason or ("tool_use" if answer.tool_uses else "end_turn")
        await _send_event(
            conn,
            stream,
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": len(pieces) + len(answer.tool_uses)},
            },
        )
        await _send_event(conn, stream, "message_stop", {"type": "message_stop"})
        await _send(conn, stream, h11.EndOfMessage())


@asynccontextmanager
async def open_fake_anthropic(
    reply: Sequence[str] = ("Hello", " from", " the", " fake."), **options: Any
) -> AsyncIterator[FakeAnthropic]:
    """Serve a ``FakeAnthropic`` on a free loopback port for the block's duration."""
    fake = FakeAnthropic(reply, **options)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, fake.handle_connection, 0, host="127.0.0.1")
        )
        fake.port = listeners[0].socket.getsockname()[1]
        try:
            yield fake
        finally:
            nursery.cancel_scope.cancel()


async def _read_request(
    conn: h11.Connection, stream: trio.SocketStream
) -> tuple[h11.Request, bytes] | None:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _send(conn: h11.Connection, stream: trio.SocketStream, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


async def _send_event(
    conn: h11.Connection, stream: trio.SocketStream, name: str, data: dict[str, Any]
) -> None:
    frame = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
    await _send(conn, stream, h11.Data(data=frame))


async def _send_json(
    conn: h11.Connection, stream: trio.SocketStream, status: int, body: dict[str, Any], n: int
) -> None:
    raw = json.dumps(body).encode()
    await _send(
        conn,
        stream,
        h11.Response(
            status_code=status,
            headers=[
                ("content-type", "application/json"),
                ("content-length", str(len(raw))),
                ("request-id", f"req_fake_{n}"),
                # Let the SDK retry almost at once (tests stay fast).
                ("retry-after-ms", "1"),
            ],
        ),
    )
    await _send(conn, stream, h11.Data(data=raw))
    await _send(conn, stream, h11.EndOfMessage())


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
    }
