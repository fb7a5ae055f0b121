"""``switchboard tail``: follow live entries on every stream, with filters.

Plain tail reads (``Bus.read``, no consumer group: it changes nothing for
anyone) of the partition streams, LLM requests, control and events, one
blocking reader per stream. Gateway streams are found from what goes by: every
caller event and LLM request names the gateway holding the call's socket
(``Envelope.gateway``), and the first time a gateway is named its stream is
followed too, from where the tail started (or from the beginning with
``from_start``), so its entries since then are not missed.

``open_tail`` yields a receive channel of ``TailLine``; ``run_tail`` prints
them. The first bus error of any reader stops the tail and is raised as is.
Everything goes through the ``Bus``: Redis from the CLI (one connection
per blocking reader), a ``MemoryBus`` in tests.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TextIO

import trio

from bus.base import Bus, BusError, MalformedEntry, parse_id
from bus.envelope import Envelope, Kind
from bus.keys import Keys
from switchboard.ops.timeline import describe

BLOCK_MS = 1000
COUNT = 500


@dataclass(frozen=True, slots=True)
class TailLine:
    """One entry seen by the tail."""

    stream: str
    entry_id: str
    env: Envelope

    @property
    def label(self) -> str:
        if self.env.kind == Kind.EVENT:
            return f"event:{self.env.body.get('fact', '?')}"
        return self.env.kind

    def format(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.env.ts / 1000))
        ms = self.env.ts % 1000
        return (
            f"{stamp}.{ms:03d} {self.env.call or '-':<34} t{self.env.turn:<3} "
            f"{self.label:<28} {describe(self.env)}"
        )


def matches(line: TailLine, *, call: str | None, kind: str | None) -> bool:
    """``--call`` is exact; ``--kind`` matches a kind or fact, or a prefix before . or :."""
    if call is not None and line.env.call != call:
        return False
    if kind is None:
        return True
    label = line.label
    return label == kind or label.startswith((f"{kind}.", f"{kind}:")) or label == f"event:{kind}"


@dataclass
class _Tail:
    bus: Bus
    keys: Keys
    nursery: trio.Nursery
    out: trio.MemorySendChannel[TailLine]
    call: str | None
    kind: str | None
    since: str  # where a newly found gateway stream is read from
    gateways: set[str] = field(default_factory=set)
    failed: BusError | None = None  # the first reader's bus error: it stops the tail

    def follow(self, stream: str, after: str) -> None:
        self.nursery.start_soon(self._follow, stream, after)

    async def _follow(self, stream: str, after: str) -> None:
        try:
            await self._read(stream, after)
        except BusError as exc:
            self.failed = self.failed or exc
            self.nursery.cancel_scope.cancel()

    async def _read(self, stream: str, after: str) -> None:
        while True:
            entries = await self.bus.read(stream, after, count=COUNT, block_ms=BLOCK_MS)
            for entry in entries:
                after = entry.id
                try:
                    env = Envelope.decode(entry.fields)
                except MalformedEntry:
                    continue
                if env.gateway and env.gateway not in self.gateways:
                    self.gateways.add(env.gateway)
                    self.follow(self.keys.gateway(env.gateway), self.since)
                line = TailLine(stream, entry.id, env)
                if matches(line, call=self.call, kind=self.kind):
                    await self.out.send(line)


@asynccontextmanager
async def open_tail(
    bus: Bus,
    keys: Keys,
    *,
    call: str | None = None,
    kind: str | None = None,
    from_start: bool = False,
) -> AsyncIterator[trio.MemoryReceiveChannel[TailLine]]:
    """Entries appended from now on (``from_start``: all) that pass the filters."""
    fixed = [*keys.all_calls(), *keys.llm_streams(), keys.control, *keys.event_streams()]
    starts = {s: "0-0" if from_start else await bus.last_id(s) for s in fixed}
    since = _same_ms_included(max(starts.values(), key=parse_id))
    send, receive = trio.open_memory_channel[TailLine](0)
    try:
        async with trio.open_nursery() as nursery:
            tail = _Tail(bus, keys, nursery, send, call, kind, since)
            for stream, after in starts.items():
                tail.follow(stream, after)
            try:
                yield receive
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # What the caller's block raised (Ctrl-C) comes back as it was raised.
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            raise group.exceptions[0] from None
        raise
    if tail.failed is not None:
        raise tail.failed


def _same_ms_included(entry_id: str) -> str:
    """Where to read a gateway stream found later: after everything before ``entry_id``'s ms.

    Ids of different streams made within one millisecond do not say which came
    first, so a gateway entry appended just after the tail started may carry a
    smaller id than the newest entry of another stream. Better to show a line
    from that millisecond that came just before the start than to miss a
    reply's tokens.
    """
    ms, _ = parse_id(entry_id)
    return "0-0" if ms == 0 else f"{ms - 1}-{2**64 - 1}"


async def run_tail(
    bus: Bus,
    keys: Keys,
    *,
    call: str | None = None,
    kind: str | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """What ``switchboard tail`` does: print matching entries until interrupted."""
    async with open_tail(bus, keys, call=call, kind=kind) as lines:
        async for line in lines:
            out.write(line.format() + "\n")
            out.flush()
