"""The dashboard: its routes, and the tail that keeps its call log current.

The tail that feeds the log starts on the first request, so a gateway whose
dashboard nobody opens pays nothing. It reads each stream with its own
blocking read (on Redis, one connection each while the dashboard is in use).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import cache
from pathlib import Path

import structlog
import trio

from bus.base import Bus, BusError
from bus.envelope import now_ms
from bus.keys import GROUP_CONVERSATION, GROUP_LLM, GROUP_TELEMETRY, Keys
from bus.retry import Backoff
from gateway.dashboard.access import DashboardAccess, json_response, query, query_int
from gateway.dashboard.calllog import SOURCE_GATEWAY, CallLog
from gateway.dashboard.live import serve_live
from gateway.dashboard.operator_api import OperatorApi
from gateway.dashboard.streams import (
    PAGE,
    apply_entry,
    call_timeline,
    dead_letters,
    gateway_of_stream,
    load_call_log,
    source_of,
)
from gateway.http import Request, Response, Router, text_response

log = structlog.get_logger()

BACKFILL_MS = 3_600_000  # on start the log reads the last hour of the streams
READ_BLOCK_MS = 1000
# After a read that found entries the tail waits this long before reading
# again, so a busy stream is folded in batches rather than entry by entry.
TAIL_BATCH_S = 0.1
SYSTEM_TIMEOUT_S = 1.0
ROLES = (GROUP_CONVERSATION, GROUP_LLM, GROUP_TELEMETRY)
STATIC_DIR = Path(__file__).parent.parent / "static" / "dashboard"
_STATIC = {
    "/dashboard": ("index.html", "text/html; charset=utf-8"),
    "/dashboard/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/dashboard/app.css": ("app.css", "text/css; charset=utf-8"),
}

Handler = Callable[[Request], Awaitable[Response]]


@cache
def _asset(name: str) -> bytes:
    """A static file of the page, read once (they ship inside the package)."""
    return (STATIC_DIR / name).read_bytes()


class Dashboard:
    """The dashboard's routes and the tail that keeps its call log current."""

    def __init__(
        self,
        bus: Bus,
        keys: Keys,
        *,
        gateway_id: str,
        access: DashboardAccess,
        local_calls: Callable[[], Sequence[str]] = tuple,
    ) -> None:
        self.bus = bus
        self.keys = keys
        self.gateway_id = gateway_id
        self.access = access
        self.local_calls = local_calls
        self.calls = CallLog()
        self.version = 0
        self.changed_at: dict[str, int] = {}
        self._changed = trio.Event()
        self._wanted = trio.Event()
        self._loaded = trio.Event()
        self._gateways: set[str] = {gateway_id}
        self._tailing: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self.api = OperatorApi(bus, keys, streams=self.streams, ready=self.ready)

    @property
    def changed(self) -> trio.Event:
        """Set at the next change of the log."""
        return self._changed

    # ----------------------------------------------------------------- routes

    def add_routes(self, router: Router) -> None:
        for path in _STATIC:
            router.add("GET", path, self._static)
        routes: dict[str, Handler] = {
            "/api/calls": self._api_calls,
            "/api/call": self._api_call,
            "/api/system": self._api_system,
            "/api/timeline": self._api_timeline,
            "/api/streams": self.api.list_streams,
            "/api/range": self.api.range,
            "/api/read": self.api.read,
            "/api/tail": self.api.tail,
        }
        for path, handler in routes.items():
            router.add("GET", path, self._guard(handler))
        router.websocket("/dashboard/live", gate=self._live_gate, handler=self._live)

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            refused = self.access.refuse(request)
            return refused if refused is not None else await handler(request)

        return guarded

    async def _static(self, request: Request) -> Response:
        # The page and its assets hold no call data; the data routes check the token.
        if not self.access.enabled:
            return text_response(404, "not found")
        name, content_type = _STATIC[request.path]
        return Response(200, _asset(name), content_type=content_type)

    async def ready(self) -> None:
        """Start the tail (first use) and wait until the backfill is folded in."""
        self._wanted.set()
        await self._loaded.wait()

    async def _api_calls(self, request: Request) -> Response:
        await self.ready()
        limit = query_int(request, "limit", 100)
        calls = self.calls.summaries(now_ms(), limit=limit)
        return json_response({"now_ms": now_ms(), "open": self.calls.open_calls(), "calls": calls})

    async def _api_call(self, request: Request) -> Response:
        await self.ready()
        sid = query(request).get("sid", "")
        view = self.calls.call(sid)
        if view is None:
            return json_response({"error": f"call {sid!r} is not in the recent calls"}, 404)
        return json_response(view.to_json(now_ms()))

    async def _api_timeline(self, request: Request) -> Response:
        sid = query(request).get("sid", "")
        entries = await call_timeline(self.bus, self.keys, sid)
        if entries is None:
            return json_response({"error": f"call {sid!r} is not on the streams"}, 404)
        return json_response({"call": sid, "entries": entries})

    async def _api_system(self, request: Request) -> Response:
        await self.ready()
        return json_response(await self.system())

    async def system(self) -> dict[str, object]:
        """Calls open, turn-latency percentiles, consumer-group backlog, live workers."""
        pending: dict[str, int | None] = {}
        workers: dict[str, list[str]] = {}
        groups = {
            GROUP_CONVERSATION: self.keys.all_calls(),
            GROUP_LLM: self.keys.llm_streams(),
            GROUP_TELEMETRY: self.keys.event_streams(),
        }
        with trio.move_on_after(SYSTEM_TIMEOUT_S):
            for group, streams in groups.items():
                pending[group] = await self._pending(group, streams)
            for role in ROLES:
                try:
                    workers[role] = await self.bus.live_members(self.keys.members(role))
                except BusError:
                    workers[role] = []
        return {
            "now_ms": now_ms(),
            "gateway": self.gateway_id,
            "calls_open": len(self.calls.open_calls()),
            "calls_open_here": len(self.local_calls()),
            "calls_recent": len(self.calls.calls),
            "latency": self.calls.latency(),
            "pending": pending,
            "workers": workers,
        }

    async def _pending(self, group: str, streams: Sequence[str]) -> int:
        total = 0
        for stream in streams:
            try:
                total += await self.bus.pending_count(stream, group)
            except BusError:
                continue  # no such group (yet)
        return total

    def streams(self) -> list[str]:
        """Every stream of this namespace the dashboard and the operator API read."""
        return [
            *self.keys.all_calls(),
            *self.keys.llm_streams(),
            self.keys.control,
            *self.keys.event_streams(),
            dead_letters(self.keys),
            *(self.keys.gateway(gw) for gw in sorted(self._gateways)),
        ]

    async def _live_gate(self, request: Request) -> Response | None:
        if request.header("sec-websocket-key") is None:
            return text_response(400, "not a websocket handshake")
        return self.access.refuse(request)

    async def _live(self, request: Request, stream: trio.abc.Stream) -> None:
        await serve_live(self, stream)

    # ------------------------------------------------------------------- tail

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wait for the first use, then fold the streams into the log for good."""
        task_status.started()
        if not self.access.enabled:
            return
        await self._wanted.wait()
        log.info("dashboard_tail_started", backfill_ms=BACKFILL_MS)
        backoff = Backoff("dashboard_backfill")
        while True:
            try:
                _, last = await load_call_log(
                    self.bus, self.keys, since_ms=now_ms() - BACKFILL_MS, calls=self.calls
                )
                break
            except BusError as exc:
                await backoff.failed(exc)
        self._gateways.update(
            gateway_of_stream(self.keys, s)
            for s in last
            if source_of(self.keys, s) == SOURCE_GATEWAY
        )
        self._bump(list(self.calls.calls))
        self._loaded.set()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for stream, after in last.items():
                self._follow(stream, after)
            for gw in self._gateways:
                self._follow(self.keys.gateway(gw), "0-0")

    def _follow(self, stream: str, after: str) -> None:
        if stream in self._tailing or self._nursery is None:
            return
        self._tailing.add(stream)
        self._nursery.start_soon(self._tail, stream, after)

    async def _tail(self, stream: str, after: str) -> None:
        backoff = Backoff("dashboard_tail", stream=stream)
        if after == "0-0":
            after = f"{now_ms() - BACKFILL_MS}-0"
        while True:
            try:
                entries = await self.bus.read(stream, after, count=PAGE, block_ms=READ_BLOCK_MS)
            except BusError as exc:
                await backoff.failed(exc)
                continue
            backoff.succeeded()
            changed: list[str] = []
            for entry in entries:
                after = entry.id
                call = apply_entry(self.calls, self.keys, entry)
                if call is not None:
                    changed.append(call)
                    self._found_gateway(call)
            if changed:
                self._bump(changed)
            if entries:
                await trio.sleep(TAIL_BATCH_S)

    def _found_gateway(self, call: str) -> None:
        """Follow the stream of a gateway a call names, the first time one shows up."""
        view = self.calls.call(call)
        if view is not None and view.gateway and view.gateway not in self._gateways:
            self._gateways.add(view.gateway)
            self._follow(self.keys.gateway(view.gateway), "0-0")

    def _bump(self, calls: Sequence[str]) -> None:
        self.version += 1
        for call in calls:
            self.changed_at[call] = self.version
        if len(self.changed_at) > 2 * self.calls.max_calls:
            # Forget calls the log no longer holds (now and then, not per batch).
            for call in [c for c in self.changed_at if c not in self.calls.calls]:
                del self.changed_at[call]
        self._changed.set()
        self._changed = trio.Event()
