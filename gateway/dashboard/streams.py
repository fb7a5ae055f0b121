"""Reading the dashboard's data off the bus: the call log's backfill and one call's timeline.

Everything comes from the streams (the gateway must not import the actors):
the partition streams, the gateway streams their envelopes name, the events
and the dead letters. ``switchboard calls`` uses :func:`load_call_log` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from bus.base import Bus, Entry, MalformedEntry, parse_id
from bus.envelope import Envelope
from bus.keys import Keys
from bus.messages import Fact, decode
from gateway.dashboard.access import dumps
from gateway.dashboard.calllog import (
    SOURCE_CALLS,
    SOURCE_DEAD,
    SOURCE_EVENTS,
    SOURCE_GATEWAY,
    CallLog,
)

PAGE = 1000
WINDOW_BEFORE_MS = 5_000  # other streams are read from the call's first entry minus this
WINDOW_AFTER_MS = 120_000  # ... to its last entry plus this (late tokens, facts)
DETAIL_CHARS = 240


class TimelineRow(TypedDict):
    at_ms: float
    rel_ms: float
    turn: int
    seq: int
    source: str
    stream: str
    id: str
    label: str
    detail: str


def dead_letters(keys: Keys) -> str:
    """The dead-letter stream of ``keys``' namespace (written by the actor runtime)."""
    return f"{keys.namespace}:{{dead}}"


def source_of(keys: Keys, stream: str) -> str | None:
    """Which kind of stream ``stream`` is, for :meth:`CallLog.apply`."""
    if stream in keys.event_streams():
        return SOURCE_EVENTS
    if stream == dead_letters(keys):
        return SOURCE_DEAD
    if stream.startswith(f"{keys.namespace}:{{gw:"):
        return SOURCE_GATEWAY
    if stream.startswith(f"{keys.namespace}:{{p") and stream.endswith("}:calls"):
        return SOURCE_CALLS
    return None


def gateway_of_stream(keys: Keys, stream: str) -> str:
    return stream.removeprefix(f"{keys.namespace}:{{gw:").removesuffix("}:out")


def apply_entry(calls: CallLog, keys: Keys, entry: Entry) -> str | None:
    """Fold one raw entry into ``calls``; the call it changed, or None."""
    source = source_of(keys, entry.stream)
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


async def _read_from(bus: Bus, stream: str, start: str, last: dict[str, str]) -> list[Entry]:
    entries = await range_all(bus, stream, start)
    last[stream] = entries[-1].id if entries else await bus.last_id(stream)
    return entries


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
        partition.extend(await _read_from(bus, stream, start, last))
    events: list[Entry] = []
    for stream in keys.event_streams():
        events.extend(await _read_from(bus, stream, start, last))
    by_time = sorted(partition, key=lambda e: parse_id(e.id))
    gateway_entries: list[Entry] = []
    for gw in sorted(gateways_named(by_time) | gateways_named(events)):
        gateway_entries.extend(await _read_from(bus, keys.gateway(gw), start, last))
    dead = await _read_from(bus, dead_letters(keys), start, last)
    # In time order, as they happened; a call's setup comes first and creates it.
    everything = [*by_time, *gateway_entries, *events, *dead]
    for entry in sorted(everything, key=lambda e: parse_id(e.id)):
        apply_entry(calls, keys, entry)
    return calls, last


async def call_timeline(bus: Bus, keys: Keys, call: str) -> list[TimelineRow] | None:
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
    others += [("events", keys.events_for(call)), ("dead", dead_letters(keys))]
    others += [("gateway", keys.gateway(gw)) for gw in sorted(gateways_named(partition))]
    for source, stream in others:
        sources += [
            (source, e) for e in await range_all(bus, stream, lo, hi) if e.fields.get("c") == call
        ]
    rows = [row for source, entry in sources if (row := _row(source, entry)) is not None]
    rows.sort(key=lambda r: (r["at_ms"], parse_id(r["id"])))
    start = rows[0]["at_ms"] if rows else 0.0
    for row in rows:
        row["rel_ms"] = round(row["at_ms"] - start, 3)
    return rows


def _row(source: str, entry: Entry) -> TimelineRow | None:
    """One entry as a timeline row: when, what, and its body in short."""
    try:
        env = Envelope.decode(entry.fields)
    except MalformedEntry:
        return None
    at = float(env.ts or parse_id(entry.id)[0])
    label = str(env.kind)
    shown: object = env.body
    try:
        message = decode(env)
    except MalformedEntry:
        message = None
    if isinstance(message, Fact):
        at, label, shown = message.t_ms, f"event:{message.name}", message.fields
    detail = dumps(shown)
    return {
        "at_ms": at,
        "rel_ms": 0.0,
        "turn": env.turn,
        "seq": env.seq,
        "source": source,
        "stream": entry.stream,
        "id": entry.id,
        "label": label,
        "detail": detail if len(detail) <= DETAIL_CHARS else detail[: DETAIL_CHARS - 1] + "…",
    }
