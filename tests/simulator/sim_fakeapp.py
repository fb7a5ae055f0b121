"""A small ConversationRelay app for testing the simulator: h11 + trio-websocket on one port.

It checks every signature with twilio's RequestValidator against its public URL,
answers ``POST /twiml`` with configurable TwiML, records the ``POST /action``
callbacks, and on ``/relay`` replies to caller prompts by echoing them as several
``text`` frames. Some prompts trigger scripted misbehaviour:

- ``"goodbye"``: ``text`` "Bye!" then ``end`` with handoff data;
- ``"garbage N"``: N invalid frames (then, if N < 10, an echo reply);
- ``"hang up on me"``: the app closes the socket itself;
- ``"media"``: ``play`` and ``sendDigits`` then a reply.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import quoteattr

import h11
import trio
import trio_websocket
from twilio.request_validator import RequestValidator

from relay import End, Play, SendDigits, Text, parse_inbound, serialize

HANDOFF = '{"reason":"caller said goodbye"}'


@dataclass
class Recorded:
    """One HTTP request or WebSocket upgrade the app received."""

    method: str
    path: str
    params: dict[str, str]
    signature: str | None
    signature_valid: bool | None


@dataclass
class FakeApp:
    token: str | None = None
    public_url: str = ""  # set from the port unless given
    relay_attrs: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    relay_url: str | None = None  # default: public_url with ws(s) scheme + /relay
    ws_verify_url: str | None = None  # check the upgrade against this instead (to fail it)
    with_action: bool = True
    action_twiml: str = "<Response><Hangup/></Response>"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)  # every frame received on /relay
    close: tuple[int | None, str | None] | None = None
    closed: trio.Event = field(default_factory=trio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _valid(self, url: str, params: dict[str, str], signature: str | None) -> bool | None:
        if self.token is None:
            return None
        return bool(RequestValidator(self.token).validate(url, params, signature or ""))

    def twiml(self) -> str:
        public = self.public_url.rstrip("/")
        url = self.relay_url or (
            public.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/relay"
        )
        attrs = {"url": url, **self.relay_attrs}
        attr_text = " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items())
        params = "".join(
            f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>"
            for k, v in self.parameters.items()
        )
        action = f" action={quoteattr(public + '/action')}" if self.with_action else ""
        return (
            f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect{action}>'
            f'<ConversationRelay {attr_text}><Language code="en-US" ttsProvider="Amazon" '
            f'voice="Joanna-Neural"/>{params}</ConversationRelay></Connect></Response>'
        )

    def action_params(self) -> list[dict[str, str]]:
        return [r.params for r in self.requests if r.path == "/action"]

    # -- serving

    async def _handle(self, stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            head += chunk
        if b"upgrade: websocket" in head.lower():
            await self._handle_ws(_Replay(head, stream))
        else:
            await self._handle_http(head, stream)

    async def _handle_http(self, head: bytes, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(head)
        request: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        assert request is not None
        target = request.target.decode()
        path = urlsplit(target).path
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        params = dict(parse_qsl(body.decode(), keep_blank_values=True))
        signature = headers.get("x-twilio-signature")
        valid = self._valid(self.public_url.rstrip("/") + target, params, signature)
        self.requests.append(Recorded(request.method.decode(), path, params, signature, valid))
        if valid is False:
            status, text = 403, "bad signature"
        elif path == "/twiml":
            status, text = 200, self.twiml()
        elif path == "/action":
            status, text = 200, self.action_twiml
        else:
            status, text = 404, "not found"
        data = text.encode()
        out = conn.send(
            h11.Response(
                status_code=status,
                headers=[("Content-Type", "text/xml"), ("Content-Length", str(len(data)))],
            )
        )
        out = (out or b"") + (conn.send(h11.Data(data=data)) or b"")
        out += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(out)
        await stream.aclose()

    async def _handle_ws(self, stream: trio.abc.Stream) -> None:
        async with trio.open_nursery() as nursery:
            request = await trio_websocket.wrap_server_stream(nursery, stream)
            headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            signature = headers.get("x-twilio-signature")
            public = self.public_url.rstrip("/")
            relay_url = (
                self.ws_verify_url
                or self.relay_url
                or (
                    public.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
                    + request.path
                )
            )
            valid = self._valid(relay_url, {}, signature)
            self.requests.append(Recorded("GET", request.path, {}, signature, valid))
            if valid is False:
                await request.reject(403)
                return
            ws = await request.accept()
            try:
                await self._converse(ws)
            except trio_websocket.ConnectionClosed as exc:
                reason = exc.reason
                self.close = (reason.code, reason.reason) if reason else (None, None)
            finally:
                self.closed.set()

    async def _converse(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            frame = await ws.get_message()
            assert isinstance(frame, str)
            self.frames.append(frame)
            msg: Any = parse_inbound(frame)
            kind = type(msg).__name__
            if kind == "Prompt" and msg.last:
                text = msg.voice_prompt
                if text == "goodbye":
                    await ws.send_message(serialize(Text("Bye!", last=True)))
                    await ws.send_message(serialize(End(handoff_data=HANDOFF)))
                    continue
                if text.startswith("garbage "):
                    count = int(text.split()[1])
                    for i in range(count):
                        await ws.send_message(f"not json {i}")
                    if count >= 10:
                        continue
                if text == "hang up on me":
                    await ws.aclose(1000, "app is done")
                    self.close = (1000, "app is done (app side)")
                    return
                if text == "media":
                    await ws.send_message(serialize(Play("https://example.com/a.mp3")))
                    await ws.send_message(serialize(SendDigits("12#")))
                await self._echo(ws, f"You said: {text}")
            elif kind == "Dtmf":
                await self._echo(ws, f"You pressed {msg.digit}.")

    async def _echo(self, ws: trio_websocket.WebSocketConnection, text: str) -> None:
        words = text.split(" ")
        for i, word in enumerate(words):
            last = i == len(words) - 1
            await ws.send_message(serialize(Text(word if last else word + " ", last=last)))


class _Replay(trio.abc.Stream):
    """A stream that first gives back bytes already read (the upgrade request head)."""

    def __init__(self, prefix: bytes, stream: trio.SocketStream) -> None:
        self._prefix = prefix
        self._stream = stream

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            return data
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


@asynccontextmanager
async def serve_fake_app(app: FakeApp) -> AsyncIterator[FakeApp]:
    """Serve ``app`` on a free loopback port for the duration of the block."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, app._handle, 0, host="127.0.0.1"))
        app.port = listeners[0].socket.getsockname()[1]
        if not app.public_url:
            app.public_url = app.base_url
        yield app
        nursery.cancel_scope.cancel()


def frames_of_type(app: FakeApp, type_: str) -> list[dict[str, Any]]:
    return [d for d in map(json.loads, app.frames) if d.get("type") == type_]
