"""One call read back from the streams: ``load_call`` -> ``CallRecording``.

Reading a call is an administrative path (DESIGN.md §3): it uses the
``Bus.range`` API, paged, on whatever bus it is given (Redis from the CLI, a
``MemoryBus`` in tests). The call's partition stream (caller events and LLM
results) is read whole and filtered by call sid; the other streams (LLM
requests, the gateway streams the call's envelopes name, control, events) are
read in the call's time window only, since they hold every call's traffic.

A call that is not on the streams (never seen, or older than the retention)
raises ``CallNotFound``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from bus.base import Entry, MalformedEntry, parse_id
from bus.envelope import Envelope, Kind
from bus.keys import Keys

PAGE = 1000  # entries per range read
WINDOW_BEFORE_MS = 5_000  # other streams are read from the call's first entry minus this
WINDOW_AFTER_MS = 120_000  # ... to its last entry plus this (late tokens, facts)


class CallNotFound(LookupError):
    """No entry of the call is on the streams (unknown sid, or past retention)."""


@dataclass(frozen=True, slots=True)
class TimelineItem:
    """One entry of a call, placed on the call's timeline."""

    source: str  # "calls", "llm", "gateway", "control", "events"
    stream: str
    entry_id: str
    at_ms: float  # wall-clock ms: a fact's t_ms, else the envelope's ts
    env: Envelope

    @property
    def label(self) -> str:
        """The kind, or ``event:<fact>`` for facts."""
        if self.env.kind == Kind.EVENT:
            return f"event:{self.env.body.get('fact', '?')}"
        return self.env.kind


@dataclass(slots=True)
class CallRecording:
    """Everything the streams hold about one call, oldest first."""

    call: str
    items: list[TimelineItem] = field(default_factory=list)

    @property
    def start_ms(self) -> float:
        return self.items[0].at_ms if self.items else 0.0

    def of_kind(self, *kinds: str, source: str | None = None) -> list[TimelineItem]:
        return [
            i for i in self.items if i.env.kind in kinds and (source is None or i.source == source)
        ]

    def partition_entries(self) -> list[TimelineItem]:
        """The call's partition-stream entries in stream order (what the conversation saw)."""
        return sorted(
            (i for i in self.items if i.source == "calls"), key=lambda i: parse_id(i.entry_id)
        )


class StreamReader(Protocol):
    """What reading a recording needs of a bus: range reads. A ``Bus`` is one;
    so is ``switchboard.operator_api.HttpStreams`` (a ``dev`` process's streams)."""

    async def range(
        self, stream: str, start: str = "-", end: str = "+", count: int | None = None
    ) -> list[Entry]: ...


async def _range_all(
    bus: StreamReader, stream: str, start: str = "-", end: str = "+"
) -> list[Entry]:
    out: list[Entry] = []
    while True:
        page = await bus.range(stream, start, end, count=PAGE)
        out.extend(page)
        if len(page) < PAGE:
            return out
        start = f"({page[-1].id}"


def _decode(entries: Iterable[Entry], call: str) -> list[tuple[Entry, Envelope]]:
    out = []
    for entry in entries:
        if entry.fields.get("c") != call:
            continue
        try:
            out.append((entry, Envelope.decode(entry.fields)))
        except MalformedEntry:
            continue
    return out


def _at_ms(entry: Entry, env: Envelope) -> float:
    if env.kind == Kind.EVENT:
        t = env.body.get("t_ms")
        if isinstance(t, int | float):
            return float(t)
    return float(env.ts or parse_id(entry.id)[0])


async def load_call(bus: StreamReader, keys: Keys, call: str) -> CallRecording:
    """Read every entry of ``call`` from the streams; ``CallNotFound`` when none."""
    partition = _decode(await _range_all(bus, keys.calls_for(call)), call)
    if not partition:
        raise CallNotFound(
            f"call {call} is not on the streams of namespace {keys.namespace!r}: "
            "never seen here, or older than the retention (SWITCHBOARD_RETENTION_HOURS)"
        )
    first = min(parse_id(e.id)[0] for e, _ in partition)
    last = max(parse_id(e.id)[0] for e, _ in partition)
    lo, hi = f"{max(0, first - WINDOW_BEFORE_MS)}-0", f"{last + WINDOW_AFTER_MS}-0"
    sources: list[tuple[str, str, list[tuple[Entry, Envelope]]]] = [
        ("calls", keys.calls_for(call), partition)
    ]
    gateways = sorted({env.gateway for _, env in partition if env.gateway})
    # Every shard, not only the call's: the shard count may have changed since.
    others = [("llm", s) for s in keys.llm_streams()] + [("control", keys.control)]
    others += [("events", s) for s in keys.event_streams()]
    others += [("gateway", keys.gateway(gw)) for gw in gateways]
    for source, stream in others:
        sources.append((source, stream, _decode(await _range_all(bus, stream, lo, hi), call)))
    items = [
        TimelineItem(source, stream, entry.id, _at_ms(entry, env), env)
        for source, stream, pairs in sources
        for entry, env in pairs
    ]
    items.sort(key=lambda i: (i.at_ms, parse_id(i.entry_id)))
    return CallRecording(call=call, items=items)
