"""A local fake of Anthropic's streaming Messages API, on Trio + h11.

``POST /v1/messages`` with ``"stream": true`` answers ``text/event-stream``
in the shape the real API uses: ``message_start`` (with ``usage``, prompt
cache fields included), then per content block ``content_block_start``,
its deltas and ``content_block_stop`` (a ``ping`` after the first start),
``message_delta`` (``stop_reason``, ``stop_details`` on a refusal, output
``usage``) and ``message_stop``. Every request body is recorded so tests
can assert what the client sent.

Errors, as the API sends them (JSON ``{"type": "error", "error": {"type",
"message"}}`` with a ``request-id`` header):

- ``error_status`` answers every request with that status (529
  ``overloaded_error``, 429 ``rate_limit_error``, 500 ``api_error``...),
  with a ``retry-after`` header (seconds) when ``retry_after`` is set;
- ``errors`` answers the first requests with the given ``FakeError``s, one
  each, then streams normally; a ``responder`` may also return a
  ``FakeError`` (e.g. per model, to test a fallback model);
- ``stream_error_after`` (or a ``FakeReply``'s own) sends an in-stream
  ``error`` event (``overloaded_error``) after that many text deltas, as
  the API does when it overloads mid-reply;
- ``reject_prefill`` answers a request whose last message is ``assistant``
  with the 400 that Claude 4.6+ models give ("does not support assistant
  message prefill"); the API also rejects a prefill ending in whitespace,
  and so does this fake, always.

Replies: ``responder(payload) -> FakeReply`` picks the reply per request.
A ``FakeReply`` streams, in the API's order, its ``thinking`` block
(``thinking_delta`` pieces, then a ``signature_delta``), its
``redacted_thinking`` blocks (opaque ``data``), its text block
(``text_delta`` pieces) and one ``tool_use`` block per use, the input as
``input_json_delta`` pieces split mid-JSON; it stops with ``tool_use`` when
it has uses, else ``end_turn``, or with the ``stop_reason`` given. A
``refusal`` stop carries ``stop_details`` (``type``, ``category``,
``explanation``) on ``message_delta``, after whatever text was streamed, as
the API's streaming classifiers do.

Thinking in tool loops, as the API enforces it: the fake remembers the
thinking blocks of every reply that asked for tools; a later request whose
assistant message carries one of those ``tool_use`` ids must carry the same
thinking and redacted-thinking blocks, unchanged and before the text and
tool uses, or it is answered 400 ``invalid_request_error``. A thinking block
whose ``signature`` the fake did not issue for that text is also a 400.

``first_delay_s`` waits after the response headers before the first event
(a slow time to first token); ``delta_gap_s`` paces every delta.

A prompt cache (``prompt_cache=True``), as the API models it: the request
is read as blocks in the order tools, system, messages; a block marked
``cache_control`` is a breakpoint, and the prefix up to it is written to
the cache when it is at least ``cache_min_tokens`` long (tokens estimated
as JSON characters / 4). A later request reads the longest cached prefix
found at one of its breakpoints or up to 20 blocks before one. ``usage``
then reports ``cache_read_input_tokens``, ``cache_creation_input_tokens``
and the rest as ``input_tokens``, and a request that read from the cache
waits ``cache_hit_delay_s`` instead of ``first_delay_s`` (a faster time to
first token). ``cache_hits`` counts them.

``connections`` counts the TCP connections accepted (a kept-alive client
makes one for many requests).

Usage::

    async with open_fake_anthropic(reply=["Hi", " there"]) as fake:
        client = anthropic.AsyncAnthropic(api_key="test", base_url=fake.base_url)
"""

from __future__ import annotations

import hashlib
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
_ERROR_MESSAGES = {
    429: "Number of request tokens has exceeded your per-minute rate limit",
    529: "Overloaded",
}
SPEND_LIMIT_CODE = "enforced_spend_limit_reached"


@dataclass
class FakeError:
    """One error answer: HTTP ``status``, optional ``retry-after`` seconds.

    ``error_code`` goes to ``error.details.error_code`` (the API marks a
    spend-cap 429 with ``enforced_spend_limit_reached`` this way).
    """

    status: int
    retry_after: float | None = None
    message: str | None = None
    error_code: str | None = None


@dataclass
class FakeReply:
    """One streamed answer (see the module docstring for the block order)."""

    text: Sequence[str] = ()
    tool_uses: Sequence[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None  # default: "tool_use" with uses, else "end_turn"
    thinking: Sequence[str] = ()
    redacted_thinking: Sequence[str] = ()
    refusal_category: str | None = "cyber"
    # An in-stream overloaded_error after this many text deltas (this reply only).
    stream_error_after: int | None = None


def thinking_signature(text: str) -> str:
    """The signature the fake issues for a thinking block with ``text``."""
    return "sig_" + hashlib.sha256(b"fake-anthropic:" + text.encode()).hexdigest()[:32]


class FakeAnthropic:
    """The fake's settings and what it saw; ``base_url`` once it is serving."""

    def __init__(
        self,
        reply: Sequence[str] = ("Hello", " from", " the", " fake."),
        *,
        error_status: int | None = None,
        retry_after: float | None = None,
        errors: Sequence[FakeError] = (),
        stream_error_after: int | None = None,
        input_tokens: int = 21,
        cache_read_input_tokens: int = 0,
        cache_creation_input_tokens: int = 0,
        stop_reason: str = "end_turn",
        first_delay_s: float = 0.0,
        delta_gap_s: float = 0.0,
        reject_prefill: bool = False,
        responder: Callable[[dict[str, Any]], FakeReply | FakeError] | None = None,
        prompt_cache: bool = False,
        cache_min_tokens: int = 1024,
        cache_hit_delay_s: float | None = None,
    ) -> None:
        self.prompt_cache = prompt_cache
        self.cache_min_tokens = cache_min_tokens
        self.cache_hit_delay_s = cache_hit_delay_s
        self.cache_hits = 0
        self._cached: set[str] = set()
        self.connections = 0
        self.reply = list(reply)
        self.error_status = error_status
        self.retry_after = retry_after
        self.errors = list(errors)
        self.stream_error_after = stream_error_after
        self.input_tokens = input_tokens
        self.cache_read_input_tokens = cache_read_input_tokens
        self.cache_creation_input_tokens = cache_creation_input_tokens
        self.stop_reason = stop_reason
        self.first_delay_s = first_delay_s
        self.delta_gap_s = delta_gap_s
        self.reject_prefill = reject_prefill
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        # Trio time each request arrived, in order (for tests of retry pacing).
        self.arrived: list[float] = []
        # Requests answered with an error, in order: (status, model).
        self.rejected: list[tuple[int, str]] = []
        # tool_use id -> the thinking blocks of the reply that asked for it.
        self._thinking_by_use: dict[str, list[dict[str, Any]]] = {}
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

    def _thinking_refusal(self, payload: dict[str, Any]) -> str | None:
        """The API's 400 for thinking blocks dropped, altered or forged in a tool loop."""
        for i, message in enumerate(payload.get("messages") or []):
            if not isinstance(message, dict) or message.get("role") != "assistant":
                continue
            content = message.get("content")
            blocks = content if isinstance(content, list) else []
            for j, block in enumerate(blocks):
                if not isinstance(block, dict) or block.get("type") != "thinking":
                    continue
                if block.get("signature") != thinking_signature(str(block.get("thinking", ""))):
                    return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
            for block in blocks:
                if not isinstance(block, dict) or block.get("type") != "tool_use":
                    continue
                expected = self._thinking_by_use.get(str(block.get("id")))
                if not expected:
                    continue
                head = [dict(b) for b in blocks[: len(expected)]]
                if head != expected:
                    found = (
                        blocks[0].get("type") if blocks and isinstance(blocks[0], dict) else "none"
                    )
                    return (
                        f"messages.{i}.content.0.type: Expected `thinking` or "
                        f"`redacted_thinking`, but found `{found}`. When `thinking` is "
                        "enabled, a final `assistant` message must start with a thinking "
                        "block (preceeding the lastmost set of `tool_use` and `tool_result` "
                        "blocks). We recommend you include thinking blocks from previous "
                        "turns."
                    )
                break
        return None

    def _error_for(self, payload: dict[str, Any]) -> FakeError | None:
        if self.error_status is not None:
            return FakeError(self.error_status, self.retry_after)
        if self.errors:
            return self.errors.pop(0)
        return None

    async def handle_connection(self, stream: trio.SocketStream) -> None:
        """Serve HTTP/1.1 requests on one connection until the client closes it."""
        conn = h11.Connection(h11.SERVER)
        self.connections += 1
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
            await _send_error(conn, stream, FakeError(404, message="not found"), n)
            return
        payload = json.loads(body or b"{}")
        self.requests.append(payload)
        self.arrived.append(trio.current_time())
        model = str(payload.get("model", ""))
        error = self._error_for(payload)
        if error is None:
            refusal = self._prefill_refusal(payload) or self._thinking_refusal(payload)
            if refusal is not None:
                error = FakeError(400, message=refusal)
        answer: FakeReply | FakeError
        if error is not None:
            answer = error
        elif self.responder is not None:
            answer = self.responder(payload)
        else:
            answer = FakeReply(self.reply, stop_reason=self.stop_reason)
        if isinstance(answer, FakeError):
            self.rejected.append((answer.status, model))
            await _send_error(conn, stream, answer, n)
            return
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
        tokens = (self.input_tokens, self.cache_read_input_tokens, self.cache_creation_input_tokens)
        delay = self.first_delay_s
        if self.prompt_cache:
            tokens = self._use_cache(payload)
            if tokens[1] and self.cache_hit_delay_s is not None:
                delay = self.cache_hit_delay_s
        if delay > 0:
            await trio.sleep(delay)
        await self._stream_reply(conn, stream, answer, model, n, tokens)

    def _use_cache(self, payload: dict[str, Any]) -> tuple[int, int, int]:
        """(input, cache read, cache write) tokens of a request; writes its prefixes."""
        blocks = _prompt_blocks(payload)
        marks = [i for i, (_, marked) in enumerate(blocks) if marked]
        keys: list[str] = []
        sizes: list[int] = []
        digest = hashlib.sha256()
        size = 0
        for block, _ in blocks:
            raw = json.dumps(block, sort_keys=True)
            digest.update(raw.encode())
            keys.append(digest.copy().hexdigest())
            size += len(raw)
            sizes.append(size // 4)
        total = max(sizes[-1] if sizes else 0, 1)
        read = 0
        for mark in marks:
            for i in range(mark, max(mark - 20, -1), -1):
                if keys[i] in self._cached:
                    read = max(read, sizes[i])
                    break
        written = 0
        for mark in marks:
            if sizes[mark] >= self.cache_min_tokens and keys[mark] not in self._cached:
                self._cached.add(keys[mark])
                written = max(written, sizes[mark] - read)
        if read:
            self.cache_hits += 1
        return max(total - read - written, 1), read, written

    async def _stream_reply(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        answer: FakeReply,
        model: str,
        n: int,
        tokens: tuple[int, int, int],
    ) -> None:
        input_tokens, cache_read, cache_write = tokens
        usage: dict[str, Any] = {
            "input_tokens": input_tokens,
            "output_tokens": 1,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": cache_write,
                "ephemeral_1h_input_tokens": 0,
            },
        }
        await _send_event(
            conn,
            stream,
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
                    "usage": usage,
                },
            },
        )
        index = itertools.count()
        pinged = False

        async def start(block: dict[str, Any]) -> int:
            nonlocal pinged
            i = next(index)
            await _send_event(
                conn,
                stream,
                "content_block_start",
                {"type": "content_block_start", "index": i, "content_block": block},
            )
            if not pinged:
                pinged = True
                await _send_event(conn, stream, "ping", {"type": "ping"})
            return i

        async def delta(i: int, body: dict[str, Any]) -> None:
            if self.delta_gap_s > 0:
                await trio.sleep(self.delta_gap_s)
            await _send_event(
                conn,
                stream,
                "content_block_delta",
                {"type": "content_block_delta", "index": i, "delta": body},
            )

        async def stop(i: int) -> None:
            await _send_event(
                conn, stream, "content_block_stop", {"type": "content_block_stop", "index": i}
            )

        produced: list[dict[str, Any]] = []
        if answer.thinking:
            text = "".join(answer.thinking)
            i = await start({"type": "thinking", "thinking": "", "signature": ""})
            for piece in answer.thinking:
                await delta(i, {"type": "thinking_delta", "thinking": piece})
            signature = thinking_signature(text)
            await delta(i, {"type": "signature_delta", "signature": signature})
            await stop(i)
            produced.append({"type": "thinking", "thinking": text, "signature": signature})
        for data in answer.redacted_thinking:
            i = await start({"type": "redacted_thinking", "data": data})
            await stop(i)
            produced.append({"type": "redacted_thinking", "data": data})
        pieces = list(answer.text)
        if pieces or not (answer.tool_uses or produced):
            i = await start({"type": "text", "text": ""})
            error_after = (
                answer.stream_error_after
                if answer.stream_error_after is not None
                else self.stream_error_after
            )
            for k, piece in enumerate(pieces):
                if error_after is not None and k >= error_after:
                    await _send_event(conn, stream, "error", _error_body(529, "Overloaded"))
                    await _send(conn, stream, h11.EndOfMessage())
                    return
                await delta(i, {"type": "text_delta", "text": piece})
            await stop(i)
        for use in answer.tool_uses:
            i = await start({"type": "tool_use", "id": use["id"], "name": use["name"], "input": {}})
            raw = json.dumps(use.get("input") or {})
            for part in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
                await delta(i, {"type": "input_json_delta", "partial_json": part})
            await stop(i)
            if produced:
                self._thinking_by_use[str(use["id"])] = produced
        stop_reason = answer.stop_reason or ("tool_use" if answer.tool_uses else "end_turn")
        message_delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": len(pieces) + len(answer.tool_uses) + len(produced)},
        }
        if stop_reason == "refusal":
            message_delta["delta"]["stop_details"] = {
                "type": "refusal",
                "category": answer.refusal_category,
                "explanation": "This request was declined by the fake's classifier.",
            }
        await _send_event(conn, stream, "message_delta", message_delta)
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


def _prompt_blocks(payload: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    """The prompt as the cache sees it: (block without its marker, marked), in order."""
    out: list[tuple[dict[str, Any], bool]] = []

    def add(block: Any, where: str) -> None:
        if not isinstance(block, dict):
            block = {"type": "text", "text": str(block)}
        bare = {k: v for k, v in block.items() if k != "cache_control"}
        out.append(({"at": where, **bare}, "cache_control" in block))

    for tool in payload.get("tools") or []:
        add(tool, "tools")
    system = payload.get("system")
    if isinstance(system, list):
        for block in system:
            add(block, "system")
    elif system:
        add(system, "system")
    for message in payload.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role = str(message.get("role"))
        content = message.get("content")
        for block in content if isinstance(content, list) else [content]:
            add(block, role)
    return out


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


async def _send_error(
    conn: h11.Connection, stream: trio.SocketStream, error: FakeError, n: int
) -> None:
    body = _error_body(
        error.status, error.message or _ERROR_MESSAGES.get(error.status, "fake error")
    )
    if error.error_code is not None:
        body["error"]["details"] = {"error_code": error.error_code}
    raw = json.dumps(body).encode()
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(raw))),
        ("request-id", f"req_fake_{n}"),
    ]
    if error.retry_after is not None:
        headers.append(("retry-after", f"{error.retry_after:g}"))
    await _send(conn, stream, h11.Response(status_code=error.status, headers=headers))
    await _send(conn, stream, h11.Data(data=raw))
    await _send(conn, stream, h11.EndOfMessage())


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
    }
