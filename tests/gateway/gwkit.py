"""Helpers for the gateway tests: a running gateway, a tiny h11 client, bus waits.

Policy (as trio-websocket's own tests): loopback only, port 0, every test
bounded by ``trio.fail_after``; nothing sleeps to wait for something, tests
wait for the bus entry or the frame they expect.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import h11
import trio

from bus.base import Bus
from bus.envelope import Envelope, Kind
from gateway import calltoken
from gateway.config import GatewayConfig
from gateway.server import Gateway

PUBLIC_URL = "https://agent.example.com"
TOKEN = "test-auth-token"
# The gateways these tests start sign session tokens with this (gateway.calltoken).
SESSION_SECRET = "test-session-secret"


def session_token(call_sid: str, *, supersedes: str = "", secret: str = SESSION_SECRET) -> str:
    """The token the TwiML of ``call_sid`` would have carried."""
    return calltoken.issue(secret.encode(), call_sid, now=time.time(), supersedes=supersedes)


@dataclass
class Running:
    gateway: Gateway
    config: GatewayConfig
    port: int
    bus: Bus
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    finished: trio.Event = field(default_factory=trio.Event)

    def calls_stream(self, call_sid: str) -> str:
        return self.config.keys.calls_for(call_sid)

    async def tokens(
        self,
        call_sid: str,
        session_id: str,
        *,
        reply_to: int,
        index: int,
        text: str,
        last: bool = False,
        turn: int = 1,
    ) -> None:
        """Append an ``llm.tokens`` entry for this gateway, as the LLM actor does."""
        env = Envelope(
            kind=Kind.LLM_TOKENS,
            call=call_sid,
            session=session_id,
            gateway=self.config.gateway_id,
            turn=turn,
            body={"text": text, "index": index, "last": last, "reply_to": reply_to},
        )
        await self.bus.append(self.config.keys.gateway(self.config.gateway_id), env.encode())

    async def send_frame(self, call_sid: str, session_id: str, frame: dict[str, Any]) -> None:
        """Append a ``gateway.send`` entry, as the conversation does."""
        env = Envelope(
            kind=Kind.GATEWAY_SEND,
            call=call_sid,
            session=session_id,
            gateway=self.config.gateway_id,
            body={"frame": frame},
        )
        await self.bus.append(self.config.keys.gateway(self.config.gateway_id), env.encode())


async def start_gateway(
    nursery: trio.Nursery, bus: Bus, *, gateway_id: str = "gw-test", **overrides: Any
) -> Running:
    """Start a gateway on a free loopback port in its own cancel scope."""
    overrides.setdefault("public_url", PUBLIC_URL)
    overrides.setdefault("session_secret", SESSION_SECRET)
    config = GatewayConfig(gateway_id=gateway_id, host="127.0.0.1", port=0, **overrides)
    gateway = Gateway(bus, config)
    running_scope = trio.CancelScope()
    finished = trio.Event()

    async def run(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with running_scope:
                await gateway.serve(task_status=task_status)
        finally:
            finished.set()

    port: int = await nursery.start(run)
    return Running(gateway, config, port, bus, running_scope, finished)


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


async def read_reply(stream: trio.abc.Stream, conn: h11.Connection) -> HttpReply:
    status = 0
    headers: dict[str, str] = {}
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode().lower(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return HttpReply(status, headers, bytes(body))


def request_bytes(
    conn: h11.Connection,
    method: str,
    path: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> bytes:
    all_headers = [("Host", "127.0.0.1"), *(headers or [])]
    if method != "GET" or body:
        all_headers.append(("Content-Length", str(len(body))))
    data = conn.send(h11.Request(method=method, target=path, headers=all_headers)) or b""
    if body:
        data += conn.send(h11.Data(data=body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    return data


async def http(
    port: int,
    method: str,
    path: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    form: dict[str, str] | None = None,
) -> HttpReply:
    """One HTTP/1.1 request on a fresh connection."""
    headers = list(headers or [])
    if form is not None:
        body = urlencode(form).encode()
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        await stream.send_all(request_bytes(conn, method, path, headers=headers, body=body))
        return await read_reply(stream, conn)


async def entries(bus: Bus, stream: str, n: int, *, after: str = "0-0") -> list[Envelope]:
    """Wait until ``stream`` holds at least ``n`` entries after ``after``; decode them."""
    found: list[Envelope] = []
    while len(found) < n:
        batch = await bus.read(stream, after, count=100, block_ms=1000)
        for entry in batch:
            after = entry.id
            found.append(Envelope.decode(entry.fields))
    return found


async def wait_for_kind(bus: Bus, stream: str, kind: str) -> list[Envelope]:
    """Wait for the first entry of ``kind``; return everything read up to it."""
    found: list[Envelope] = []
    after = "0-0"
    while True:
        for entry in await bus.read(stream, after, count=100, block_ms=1000):
            after = entry.id
            env = Envelope.decode(entry.fields)
            found.append(env)
            if env.kind == kind:
                return found


def setup_frame(call_sid: str, session_id: str, *, token: str | None = None, **extra: Any) -> str:
    """Twilio's setup, with the session token of ``call_sid`` (``token`` overrides it;
    an empty one sends none)."""
    parameters = dict(extra.pop("customParameters", {}))
    token = session_token(call_sid) if token is None else token
    if token:
        parameters[calltoken.PARAMETER] = token
    frame = {
        "type": "setup",
        "sessionId": session_id,
        "callSid": call_sid,
        "accountSid": "AC00000000000000000000000000000000",
        "parentCallSid": "",
        "from": "+15550001111",
        "to": "+15550002222",
        "forwardedFrom": "",
        "callerName": "",
        "direction": "inbound",
        "callType": "PSTN",
        "callStatus": "RINGING",
        "customParameters": parameters,
        **extra,
    }
    return json.dumps(frame)


def prompt_frame(text: str, *, last: bool = True) -> str:
    return json.dumps({"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": last})
