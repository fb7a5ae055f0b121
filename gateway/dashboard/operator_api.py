"""Raw entries of this namespace's streams over HTTP, for the operator commands.

``GET /api/streams``, ``/api/range``, ``/api/read`` and ``/api/tail`` let
``switchboard replay``, ``tail`` and ``calls`` work against a ``dev`` process
(whose bus lives in its memory) exactly as against Redis. Only streams of
this namespace are served; the routes sit behind the dashboard's token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
import trio

from bus.base import Bus, BusError
from bus.keys import Keys
from gateway.dashboard.access import json_response, query, query_int
from gateway.dashboard.streams import PAGE
from gateway.http import Request, Response

MAX_RANGE = 10_000  # entries one /api/range or /api/read answers at most
MAX_BLOCK_MS = 5_000
TAIL_POLL_S = 0.05


class OperatorApi:
    """The stream routes; ``streams`` names the streams served, ``ready`` waits for them."""

    def __init__(
        self,
        bus: Bus,
        keys: Keys,
        *,
        streams: Callable[[], list[str]],
        ready: Callable[[], Awaitable[None]],
    ) -> None:
        self.bus = bus
        self.keys = keys
        self.streams = streams
        self.ready = ready

    def known_stream(self, stream: str) -> bool:
        if stream in self.streams():
            return True
        prefix, suffix = f"{self.keys.namespace}:{{gw:", "}:out"
        return stream.startswith(prefix) and stream.endswith(suffix)

    async def list_streams(self, request: Request) -> Response:
        await self.ready()
        return json_response(
            {
                "namespace": self.keys.namespace,
                "partitions": self.keys.partitions,
                "streams": self.streams(),
            }
        )

    async def range(self, request: Request) -> Response:
        stream = query(request).get("stream", "")
        if not self.known_stream(stream):
            return json_response({"error": f"not a stream of this namespace: {stream!r}"}, 400)
        q = query(request)
        count = min(query_int(request, "count", PAGE), MAX_RANGE)
        try:
            entries = await self.bus.range(stream, q.get("start", "-"), q.get("end", "+"), count)
        except BusError as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response({"entries": [[e.id, e.fields] for e in entries]})

    async def read(self, request: Request) -> Response:
        stream = query(request).get("stream", "")
        if not self.known_stream(stream):
            return json_response({"error": f"not a stream of this namespace: {stream!r}"}, 400)
        count = min(query_int(request, "count", PAGE), MAX_RANGE)
        block = min(query_int(request, "block_ms", 0), MAX_BLOCK_MS)
        try:
            after = query(request).get("after", "$")
            if after == "$":
                after = await self.bus.last_id(stream)
            entries = await self.bus.read(stream, after, count=count, block_ms=block or None)
        except BusError as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response({"after": after, "entries": [[e.id, e.fields] for e in entries]})

    async def tail(self, request: Request) -> Response:
        """New entries on every stream after the client's cursors (``switchboard tail --url``).

        ``after`` is the JSON ``{stream: id}`` the previous answer returned (a
        stream missing from it starts at its newest entry). Waits up to
        ``block_ms`` for something new, looking again every 50 ms: the bus
        has no blocking read over many streams, and this is an operator's
        terminal, not the caller's path.
        """
        try:
            after = orjson.loads(query(request).get("after") or "{}")
        except orjson.JSONDecodeError:
            after = None
        if not isinstance(after, dict):
            return json_response({"error": "after must be a JSON object of stream ids"}, 400)
        await self.ready()  # the gateway streams are known once the log is loaded
        block_s = min(query_int(request, "block_ms", 1000), MAX_BLOCK_MS) / 1000
        try:
            cursors = {
                stream: str(after[stream]) if after.get(stream) else await self.bus.last_id(stream)
                for stream in self.streams()
            }
            found = await self._poll(cursors, trio.current_time() + block_s)
        except BusError as exc:
            return json_response({"error": str(exc)}, 503)
        return json_response({"after": cursors, "entries": found})

    async def _poll(self, cursors: dict[str, str], deadline: float) -> list[list[object]]:
        """Entries after ``cursors`` (moved on past them), waiting until ``deadline`` for one."""
        found: list[list[object]] = []
        while True:
            for stream, cursor in cursors.items():
                for entry in await self.bus.range(stream, f"({cursor}", "+", count=PAGE):
                    found.append([stream, entry.id, entry.fields])
                    cursors[stream] = entry.id
            if found or trio.current_time() >= deadline:
                return found
            await trio.sleep(TAIL_POLL_S)
