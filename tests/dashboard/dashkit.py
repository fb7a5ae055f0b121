"""Helpers for the dashboard tests: a gateway or a whole dev process in this one.

Loopback only, port 0, every test bounded by ``trio.fail_after``; tests wait
for the message or entry they expect, never for time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import orjson
import trio
import trio_websocket

from bus.memory import MemoryBus
from gateway.config import GatewayConfig
from gateway.server import Gateway
from switchboard.runner import start_dev
from switchboard.settings import Settings


@asynccontextmanager
async def running_gateway(**overrides: Any) -> AsyncIterator[int]:
    """A gateway alone on a memory bus; yields its port."""
    bus = MemoryBus()
    config = GatewayConfig(gateway_id="gw-dash", host="127.0.0.1", port=0, **overrides)
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(
            lambda task_status: Gateway(bus, config).serve(task_status=task_status)
        )
        yield port
        nursery.cancel_scope.cancel()
    await bus.aclose()


@asynccontextmanager
async def running_dev(**env: str) -> AsyncIterator[tuple[int, MemoryBus]]:
    """Every actor and the gateway on a memory bus, as ``switchboard dev``."""
    base = {
        "SWITCHBOARD_PORT": "0",
        "SWITCHBOARD_LLM_PROVIDER": "scripted",
        "SWITCHBOARD_PARTITIONS": "4",
        "ANTHROPIC_API_KEY": "",
    }
    settings = Settings.from_env({**base, **env})
    settings = replace(settings, gateway_id="gw-dev", worker_id="w-dev")
    bus = MemoryBus()
    async with trio.open_nursery() as nursery:
        port = await start_dev(nursery, settings, bus)
        yield port, bus
        nursery.cancel_scope.cancel()
    await bus.aclose()


class LiveFeed:
    """The dashboard's WebSocket as the page uses it: messages in, ``watch`` out."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def watch(self, call_sid: str) -> None:
        await self.ws.send_message(orjson.dumps({"watch": call_sid}).decode())

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The next message for which ``predicate`` holds."""
        while True:
            msg = orjson.loads(await self.ws.get_message())
            self.seen.append(msg)
            if predicate(msg):
                return dict(msg)


@asynccontextmanager
async def live_feed(port: int, query: str = "") -> AsyncIterator[LiveFeed]:
    url = f"ws://127.0.0.1:{port}/dashboard/live{query}"
    async with trio_websocket.open_websocket_url(url) as ws:
        yield LiveFeed(ws)
