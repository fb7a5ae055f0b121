"""The live dashboard and the operator API, served on the gateway's port.

Routes (all on the gateway's one port, next to the webhooks):

- ``GET /dashboard`` and its static files (``gateway/static/dashboard/``,
  shipped as package data: plain HTML, CSS and JavaScript, no build step);
- ``GET /dashboard/live``: a WebSocket that pushes changes as they happen
  (the call list, the watched call's transcript and turn timings, the system
  view). The client sends ``{"watch": CALLSID}`` to pick a call;
- ``GET /api/calls``, ``/api/call?sid=``, ``/api/system``: the same data as
  JSON for ``switchboard calls`` and tools;
- ``GET /api/streams``, ``/api/range``, ``/api/read``: raw entries of this
  namespace's streams, so ``switchboard replay`` and ``tail`` work against a
  ``dev`` process (whose bus lives in its memory) exactly as against Redis.

Access (:class:`DashboardAccess`): with ``SWITCHBOARD_DASHBOARD_TOKEN`` set,
every route needs it, as ``Authorization: Bearer TOKEN`` or ``?token=TOKEN``
(a browser's WebSocket cannot set headers); a wrong or missing token gets 401.
Without a token the routes are open on ``switchboard dev`` and on a gateway
that checks no Twilio signatures (anyone can open calls there anyway), and
absent (404) on a signed, production gateway.

Data: the gateway is an edge and must not import the actors, so everything
comes from the bus (:mod:`gateway.calllog` folds the streams) plus what this
gateway knows locally (its open sockets). The tail that feeds the log starts
on the first request, so a gateway whose dashboard nobody opens pays nothing.
It reads each stream with its own blocking read (on Redis, one connection
each while the dashboard is in use).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
import structlog
import trio
import trio_websocket

from bus.base import Bus, BusError, Entry, MalformedEntry, parse_id
from bus.envelope import Envelope, now_ms
from bus.keys import GROUP_CONVERSATION, GROUP_LLM, GROUP_TELEMETRY, Keys
from bus.retry import Backoff
from gateway.calllog import (
    SOURCE_CALLS,
    SOURCE_DEAD,
    SOURCE_EVENTS,
    SOURCE_GATEWAY,
    CallLog,
)
from gateway.http import Request, Response, Router, text_response

log = structlog.get_logger()

BACKFILL_MS = 3_600_000  # on start the log reads the last hour of the streams
READ_BLOCK_MS = 1000
PAGE = 1000
# Changes within this window go out as one message: a person reads a few
# updates a second, and every push costs the process that serves calls.
PUSH_COALESCE_S = 0.2
# After a read that found entries the tail waits this long before reading
# again, so a busy stream is folded in batches rather than entry by entry.
TAIL_BATCH_S = 0.1
SYSTEM_EVERY_S = 2.0  # the system view is refreshed at least this often
HANDSHAKE_TIMEOUT_S = 10.0
MAX_RANGE = 10_000  # entries one /api/range or /api/read answers at most
ROLES = (GROUP_CONVERSATION, GROUP_LLM, GROUP_TELEMETRY)
_STATIC = {
    "/dashboard": ("index.html", "text/html; charset=utf-8"),
    "/dashboard/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/dashboard/app.css": ("app.css", "text/css; charset=utf-8"),
}


@dataclass(frozen=True, slots=True)
class DashboardAccess:
    """Who may use the dashboard: see the module docstring."""

    token: str | None = None
    open_without_token: bool = False

    @property
    def enabled(self) -> bool:
        return self.token is not None or self.open_without_token

    def refuse(self, request: Request) -> Response | None:
        """None when ``request`` may proceed, else the answer (404 off, 401 bad token)."""
        if not self.enabled:
            return text_response(404, "not found")
        if self.token is None:
            return None
        given = _bearer(request) or _query(request).get("token", "")
        if given and hmac.compare_digest(given.encode(), self.token.encode()):
            return None
        log.warning("dashboard_refused", path=request.path, had_token=bool(given))
        return Response(
            401,
            b"dashboard token required: Authorization: Bearer TOKEN or ?token=TOKEN "
            b"(SWITCHBOARD_DASHBOARD_TOKEN)",
            headers=(("WWW-Authenticate", 'Bearer realm="switchboard"'),),
        )


STATIC_DIR = Path(__file__).parent / "static" / "dashboard"


@cache
def _asset(name: str) -> bytes:
    """A static file of the page, read once (they ship inside the package)."""
    return (STATIC_DIR / name).read_bytes()


def _bearer(request: Request) -> str:
    value = request.header("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _query(request: Request) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(request.query, keep_blank_values=True).items()}


def json_response(data: Any, status: int = 200) -> Response:
    return Response(
        status,
        orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        content_type="application/json",
        headers=(("Cache-Control", "no-store"),),
    )


def dead_letters(keys: Keys) -> str:
    """The dead-letter stream of ``keys``' namespace (written by the actor runtime)."""
    return f"{keys.namespace}:{{dead}}"


def _source_of(keys: Keys, stream: str) -> str | None:
    if stream in keys.event_streams():
        return SOURCE_EVENTS
    if stream == dead_letters(keys):
        return SOURCE_DEAD
    if stream.startswith(f"{keys.namespace}:{{gw:"):
        return SOURCE_GATEWAY
    if stream.startswith(f"{keys.namespace}:{{p") and stream.endswith("}:calls"):
        return SOURCE_CALLS
    return None


def apply_entry(calls: CallLog, keys: Keys, entry: Entry) -> str | None:
    """Fold one raw entry into ``calls``; the call it changed, or None."""
    source = _source_of(keys, entry.stream)
    if source is None:
        return None
    try:
        env = Envelope.decode(entry.fields)
    except MalformedEntry:
        return None
    if not env.ts:
        env = Envelope(env.kind, env.call, env.body, env.session, env.gateway, env.seq, env.turn)
    return calls.apply(source, env, dead_error=entry.fields.get("dead.error"))


async def range_all(bus: Bus, stream: str, start: str = "-", end: str = "+") -> list[Entry]:
    """Every entry between two ids, read in pages."""
    out: list[Entry] = []
    while True:
        page = await bus.range(stream, start, end, count=PAGE)
        out.extend(page)
        if len(page) < PAGE:
            return out
        start = f"({page[-1].id}"


def gateways_named(entries: Sequence[Entry]) -> set[str]:
    """The gateway ids the envelopes of ``entries`` name."""
    out: set[str] = set()
    for entry in entries:
        try:
            gw = Envelope.decode(entry.fields).gateway
        except MalformedEntry:
            continue
        if gw:
            out.add(gw)
    return out


async def load_call_log(
    bus: Bus, keys: Keys, *, since_ms: int, calls: CallLog | None = None
) -> tuple[CallLog, dict[str, str]]:
    """Fold the streams from ``since_ms`` into a call log.

    Returns the log and, per stream read, the last id seen (where a tail
    picks up). Partition streams first (they create calls), then the gateway
    streams the entries name, the events and the dead letters.
    """
    calls = calls if calls is not None else CallLog()
    start = f"{since_ms}-0"
    last: dict[str, str] = {}
    partition: list[Entry] = []
    for stream in keys.all_calls():
        entries = await range_all(bus, stream, start)
        partition.extend(entries)
        last[stream] = entries[-1].id if entries else await bus.last_id(stream)
    events: list[Entry] = []
    for stream in keys.event_streams():
        entries = await range_all(bus, stream, start)
        events.extend(entries)
        last[stream] = entries[-1].id if entries else await bus.last_id(stream)
    by_time = sorted(partition, key=lambda e: parse_id(e.id))
    gateway_entries: list[Entry] = []
    for gw in sorted(gateways_named(by_time) | gateways_named(events)):
        stream = keys.gateway(gw)
        entries = await range_all(bus, stream, start)
        gateway_entries.extend(entries)
        last[stream] = entries[-1].id if entries else await bus.last_id(stream)
    dead = await range_all(bus, dead_letters(keys), start)
    last[dead_letters(keys)] = dead[-1].id if dead else await bus.last_id(dead_letters(keys))
    # In time order, as they happened; a call's setup comes first and creates it.
    everything = [*by_time, *gateway_entries, *events, *dead]
    for entry in sorted(everything, key=lambda e: parse_id(e.id)):
        apply_entry(calls, keys, entry)
    return calls, last


WINDOW_BEFORE_MS = 5_000  # other streams are read from the call's first entry minus this
WINDOW_AFTER_MS = 120_000  # ... to its last entry plus this (late tokens, facts)


async def call_timeline(bus: Bus, keys: Keys, call: str) -> list[dict[str, Any]] | None:
    """Every entry of ``call`` on every stream, oldest first (None: not on the streams).

    The partition stream is read whole; the shared streams only in the call's
    time window, as ``switchboard replay`` does.
    """
    if not call:
        return None
    partition = [e for e in await range_all(bus, keys.calls_for(call)) if e.fields.get("c") == call]
    if not partition:
        return None
    first = parse_id(partition[0].id)[0]
    last = parse_id(partition[-1].id)[0]
    lo, hi = f"{max(0, first - WINDOW_BEFORE_MS)}-0", f"{last + WINDOW_AFTER_MS}-0"
    sources: list[tuple[str, Entry]] = [("calls", e) for e in partition]
    others = [("llm", keys.llm_for(call)), ("control", keys.control)]
    others += [("events", keys.events_for(call))]
    others += [("dead", dead_letters(keys))]
    others += [("gateway", keys.gateway(gw)) for gw in sorted(gateways_named(partition))]
    for source, stream in others:
        sources += [
            (source, e) for e in await range_all(bus, stream, lo, hi) if e.fields.get("c") == call
        ]
    rows: list[tuple[float, tuple[int, int], dict[str, Any]]] = []
    for source, entry in sources:
        try:
            env = Envelope.decode(entry.fields)
        except MalformedEntry:
            continue
        at = float(env.ts or parse_id(entry.id)[0])
        label = env.kind
        if env.kind == "event":
            t = env.body.get("t_ms")
            at = float(t) if isinstance(t, int | float) else at
            label = f"event:{env.body.get('fact', '?')}"
        rest = {k: v for k, v in env.body.items() if k not in ("fact", "t_ms")}
        detail = orjson.dumps(rest, option=orjson.OPT_NON_STR_KEYS).decode()
        row = {
            "at_ms": at,
            "turn": env.turn,
            "seq": env.seq,
            "source": source,
            "stream": entry.stream,
            "id": entry.id,
            "label": label,
            "detail": detail if len(detail) <= 240 else detail[:239] + "…",
        }
        rows.append((at, parse_id(entry.id), row))
    rows.sort(key=lambda r: (r[0], r[1]))
    start = rows[0][0] if rows else 0.0
    for at, _, row in rows:
        row["rel_ms"] = round(at - start, 3)
    return [row for _, _, row in rows]


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

    # ----------------------------------------------------------------- routes

    def add_routes(self, router: Router) -> None:
        for path in _STATIC:
            router.add("GET", path, self._static)
        router.add("GET", "/api/calls", self._guard(self._api_calls))
        router.add("GET", "/api/call", self._guard(self._api_call))
        router.add("GET", "/api/system", self._guard(self._api_system))
        router.add("GET", "/api/timeline", self._guard(self._api_timeline))
        router.add("GET", "/api/streams", self._guard(self._api_streams))
        router.add("GET", "/api/range", self._guard(self._api_range))
        router.add("GET", "/api/read", self._guard(self._api_read))
        router.add("GET", "/api/tail", self._guard(self._api_tail))
        router.websocket("/dashboard/live", gate=self._live_gate, handler=self._live)

    def _guard(self, handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def guarded(request: Request) -> Response:
            refused = self.access.refuse(request)
            if refused is not None:
                return refused
            response: Response = await handler(request)
            return response

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
        limit = _int(_query(request).get("limit"), 100)
        return json_response(
            {
                "now_ms": now_ms(),
                "open": self.calls.open_calls(),
                "calls": self.calls.summaries(now_ms(), limit=limit),
            }
        )

    async def _api_call(self, request: Request) -> Response:
        await self.ready()
        sid = _query(request).get("sid", "")
        view = self.calls.call(sid)
        if view is None:
            return json_response({"error": f"call {sid!r} is not in the recent calls"}, 404)
        return json_response(view.to_json(now_ms()))

    async def _api_timeline(self, request: Request) -> Response:
        sid = _query(request).get("sid", "")
        entries = await call_timeline(self.bus, self.keys, sid)
        if entries is None:
            return json_response({"error": f"call {sid!r} is not on the streams"}, 404)
        return json_response({"call": sid, "entries": entries})

    async def _api_system(self, request: Request) -> Response:
        await self.ready()
        return json_response(await self.system())

    async def system(self) -> dict[str, Any]:
        """Calls open, turn-latency percentiles, consumer-group backlog, live workers."""
        pending: dict[str, int | None] = {}
        workers: dict[str, list[str]] = {}
        groups = {
            GROUP_CONVERSATION: self.keys.all_calls(),
            GROUP_LLM: self.keys.llm_streams(),
            GROUP_TELEMETRY: self.keys.event_streams(),
        }
        with trio.move_on_after(1.0):
            for group, streams in groups.items():
                total: int | None = 0
                for stream in streams:
                    try:
                        total = (total or 0) + await self.bus.pending_count(stream, group)
                    except BusError:
                        continue  # no such group (yet)
                pending[group] = total
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

    def _streams(self) -> list[str]:
        return [
            *self.keys.all_calls(),
            *self.keys.llm_streams(),
            self.keys.control,
            *self.keys.event_streams(),
            dead_letters(self.keys),
            *(self.keys.gateway(gw) for gw in sorted(self._gateways)),
        ]

    def _known_stream(self, stream: str) -> bool:
        if stream in self._streams():
            return True
        prefix, suffix = f"{self.keys.namespace}:{{gw:", "}:out"
        return stream.startswith(prefix) and stream.endswith(suffix)

    async def _api_streams(self, request: Request) -> Response:
        await self.ready()
        return json_response(
            {
                "namespace": self.keys.namespace,
                "partitions": self.keys.partitions,
                "streams": self._streams(),
            }
        )

    async def _api_range(self, request: Request) -> Response:
        q = _query(request)
        stream = q.get("stream", "")
        if not self._known_stream(stream):
            return json_response({"error": f"not a stream of this namespace: {stream!r}"}, 400)
        count = min(_int(q.get("count"), PAGE), MAX_RANGE)
        try:
            entries = await self.bus.range(stream, q.get("start", "-"), q.get("end", "+"), count)
        except BusError as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response({"entries": [[e.id, e.fields] for e in entries]})

    async def _api_read(self, request: Request) -> Response:
        q = _query(request)
        stream = q.get("stream", "")
        if not self._known_stream(stream):
            return json_response({"error": f"not a stream of this namespace: {stream!r}"}, 400)
        count = min(_int(q.get("count"), PAGE), MAX_RANGE)
        block = min(_int(q.get("block_ms"), 0), 5_000)
        try:
            after = q.get("after", "$")
            if after == "$":
                after = await self.bus.last_id(stream)
            entries = await self.bus.read(stream, after, count=count, block_ms=block or None)
        except BusError as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response({"after": after, "entries": [[e.id, e.fields] for e in entries]})

    async def _api_tail(self, request: Request) -> Response:
        """New entries on every stream after the client's cursors (``switchboard tail --url``).

        ``after`` is the JSON ``{stream: id}`` the previous answer returned (a
        stream missing from it starts at its newest entry). Waits up to
        ``block_ms`` for something new, looking again every 50 ms: the bus
        has no blocking read over many streams, and this is an operator's
        terminal, not the caller's path.
        """
        q = _query(request)
        try:
            after = orjson.loads(q.get("after") or "{}")
        except orjson.JSONDecodeError:
            return json_response({"error": "after must be a JSON object of stream ids"}, 400)
        if not isinstance(after, dict):
            return json_response({"error": "after must be a JSON object of stream ids"}, 400)
        await self.ready()  # the gateway streams are known once the log is loaded
        block_s = min(_int(q.get("block_ms"), 1000), 5_000) / 1000
        cursors: dict[str, str] = {}
        try:
            for stream in self._streams():
                given = after.get(stream)
                cursors[stream] = str(given) if given else await self.bus.last_id(stream)
            deadline = trio.current_time() + block_s
            found: list[list[Any]] = []
            while True:
                for stream, cursor in cursors.items():
                    for entry in await self.bus.range(stream, f"({cursor}", "+", count=PAGE):
                        found.append([stream, entry.id, entry.fields])
                        cursors[stream] = entry.id
                if found or trio.current_time() >= deadline:
                    break
                await trio.sleep(0.05)
        except BusError as exc:
            return json_response({"error": str(exc)}, 503)
        return json_response({"after": cursors, "entries": found})

    # ------------------------------------------------------------------- live

    async def _live_gate(self, request: Request) -> Response | None:
        if request.header("sec-websocket-key") is None:
            return text_response(400, "not a websocket handshake")
        return self.access.refuse(request)

    async def _live(self, request: Request, stream: trio.abc.Stream) -> None:
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                    ws_request = await trio_websocket.wrap_server_stream(nursery, stream)
                    ws = await ws_request.accept()
                watch: list[str] = [""]
                woken = trio.Event()

                async def listen() -> None:
                    nonlocal woken
                    async for raw in _messages(ws):
                        try:
                            msg = orjson.loads(raw)
                        except orjson.JSONDecodeError:
                            continue
                        if isinstance(msg, dict) and isinstance(msg.get("watch"), str):
                            watch[0] = msg["watch"]
                            woken.set()
                    nursery.cancel_scope.cancel()

                async def push() -> None:
                    nonlocal woken
                    await self.ready()
                    await ws.send_message(self._snapshot())
                    seen = self.version
                    watched = ""
                    next_system = 0.0
                    while True:
                        if trio.current_time() >= next_system:
                            await ws.send_message(_dumps({"type": "system", **await self.system()}))
                            next_system = trio.current_time() + SYSTEM_EVERY_S
                        with trio.move_on_at(next_system):
                            changed = self._changed
                            if self.version == seen and watch[0] == watched:
                                await _either(changed, woken)
                            await trio.sleep(PUSH_COALESCE_S)
                        woken = trio.Event()
                        dirty = [c for c, v in self.changed_at.items() if v > seen]
                        seen = self.version
                        if dirty:
                            await ws.send_message(self._update(dirty))
                        if watch[0] and (watch[0] != watched or watch[0] in dirty):
                            view = self.calls.call(watch[0])
                            body = view.to_json(now_ms()) if view is not None else None
                            await ws.send_message(_dumps({"type": "call", "call": body}))
                        watched = watch[0]

                nursery.start_soon(listen)
                nursery.start_soon(push)
        except* (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.TooSlowError):
            pass  # the browser went away (or never finished its handshake)

    def _snapshot(self) -> str:
        return _dumps(
            {
                "type": "snapshot",
                "now_ms": now_ms(),
                "calls": self.calls.summaries(now_ms(), limit=200),
            }
        )

    def _update(self, dirty: Sequence[str]) -> str:
        now = now_ms()
        summaries = [v.summary(now) for c in dirty if (v := self.calls.call(c)) is not None]
        return _dumps({"type": "calls", "now_ms": now, "calls": summaries})

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
            s.removeprefix(f"{self.keys.namespace}:{{gw:").removesuffix("}:out")
            for s in last
            if _source_of(self.keys, s) == SOURCE_GATEWAY
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
                    view = self.calls.call(call)
                    if view is not None and view.gateway and view.gateway not in self._gateways:
                        self._gateways.add(view.gateway)
                        self._follow(self.keys.gateway(view.gateway), "0-0")
            if changed:
                self._bump(changed)
            if entries:
                await trio.sleep(TAIL_BATCH_S)

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


def _dumps(data: Any) -> str:
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode()


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


__all__ = [
    "Dashboard",
    "DashboardAccess",
    "apply_entry",
    "dead_letters",
    "load_call_log",
]
