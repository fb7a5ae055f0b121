"""``GET /dashboard/live``: the WebSocket that pushes the dashboard's changes.

The page sends ``{"watch": CALLSID}`` to pick a call. The server answers with
a ``snapshot`` of recent calls, then ``calls`` (changed summaries), ``call``
(the watched call whole, when it changed) and ``system`` (every few seconds).
Changes within ``PUSH_COALESCE_S`` go out as one message: a person reads a
few updates a second, and every push costs the process that serves calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Protocol

import orjson
import trio
import trio_websocket

from bus.envelope import now_ms
from gateway.dashboard.access import dumps
from gateway.dashboard.calllog import CallLog

PUSH_COALESCE_S = 0.2
SYSTEM_EVERY_S = 2.0  # the system view is refreshed at least this often
HANDSHAKE_TIMEOUT_S = 10.0


class LiveSource(Protocol):
    """What the feed reads: the log, a change counter and an event for the next change."""

    calls: CallLog
    version: int
    changed_at: dict[str, int]

    @property
    def changed(self) -> trio.Event: ...

    async def ready(self) -> None: ...

    async def system(self) -> Mapping[str, object]: ...


async def serve_live(source: LiveSource, stream: trio.abc.Stream) -> None:
    """Run one browser's feed until it goes away (or never finishes its handshake)."""
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                ws_request = await trio_websocket.wrap_server_stream(nursery, stream)
                ws = await ws_request.accept()
            feed = _Feed(source, ws.send_message)

            async def listen() -> None:
                async for raw in _messages(ws):
                    feed.on_message(raw)
                nursery.cancel_scope.cancel()

            nursery.start_soon(listen)
            nursery.start_soon(feed.push)
    except* (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.TooSlowError):
        pass


class _Feed:
    def __init__(self, source: LiveSource, send: Callable[[str], Awaitable[None]]) -> None:
        self.source = source
        self.send = send
        self.watch = ""
        self.woken = trio.Event()

    def on_message(self, raw: str | bytes) -> None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if isinstance(msg, dict) and isinstance(watch := msg.get("watch"), str):
            self.watch = watch
            self.woken.set()

    async def push(self) -> None:
        source = self.source
        await source.ready()
        await self.send(snapshot(source.calls))
        seen = source.version
        watched = ""
        next_system = 0.0
        while True:
            if trio.current_time() >= next_system:
                await self.send(dumps({"type": "system", **await source.system()}))
                next_system = trio.current_time() + SYSTEM_EVERY_S
            with trio.move_on_at(next_system):
                if source.version == seen and self.watch == watched:
                    await _either(source.changed, self.woken)
                await trio.sleep(PUSH_COALESCE_S)
            self.woken = trio.Event()
            dirty = [c for c, v in source.changed_at.items() if v > seen]
            seen = source.version
            if dirty:
                await self.send(update(source.calls, dirty))
            if self.watch and (self.watch != watched or self.watch in dirty):
                view = source.calls.call(self.watch)
                body = view.to_json(now_ms()) if view is not None else None
                await self.send(dumps({"type": "call", "call": body}))
            watched = self.watch


def snapshot(calls: CallLog) -> str:
    return dumps(
        {"type": "snapshot", "now_ms": now_ms(), "calls": calls.summaries(now_ms(), limit=200)}
    )


def update(calls: CallLog, dirty: list[str]) -> str:
    now = now_ms()
    summaries = [v.summary(now) for c in dirty if (v := calls.call(c)) is not None]
    return dumps({"type": "calls", "now_ms": now, "calls": summaries})


async def _messages(ws: trio_websocket.WebSocketConnection) -> AsyncIterator[str | bytes]:
    while True:
        try:
            yield await ws.get_message()
        except trio_websocket.ConnectionClosed:
            return


async def _either(a: trio.Event, b: trio.Event) -> None:
    async with trio.open_nursery() as nursery:

        async def wait(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(wait, a)
        nursery.start_soon(wait, b)
