"""``switchboard tail``: follow live entries on every stream, with filters.

A plain ``XREAD`` tail (no consumer group: it changes nothing for anyone)
over the partition streams, LLM requests, control, events and every gateway
stream (found with ``SCAN`` and looked for again every few seconds, as
gateways come and go). An administrative path: redis-py in a worker thread,
as DESIGN.md §3 allows, one blocking ``XREAD`` over all streams at a time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TextIO

import redis
import trio

from bus.base import MalformedEntry
from bus.envelope import Envelope, Kind
from bus.keys import Keys
from switchboard.replay import describe

BLOCK_MS = 1000
RESCAN_S = 5.0


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


def _streams(client: redis.Redis, keys: Keys) -> list[str]:
    fixed = [*keys.all_calls(), *keys.llm_streams(), keys.control, *keys.event_streams()]
    pattern = keys.gateway("*")
    gateways = sorted(str(k) for k in client.scan_iter(match=pattern, count=1000))
    return fixed + gateways


def _newest_id(client: redis.Redis, stream: str) -> str:
    newest: Any = client.xrevrange(stream, count=1)
    return str(newest[0][0]) if newest else "0-0"


def _xread(client: redis.Redis, last: dict[str, str]) -> Any:
    streams: dict[Any, Any] = dict(last)
    return client.xread(streams, block=BLOCK_MS, count=500)


async def tail(
    redis_url: str,
    keys: Keys,
    *,
    call: str | None = None,
    kind: str | None = None,
    from_start: bool = False,
) -> AsyncIterator[TailLine]:
    """Yield entries appended from now on (``from_start``: all) that pass the filters."""
    initial = "0-0" if from_start else "$"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        last: dict[str, str] = {}
        next_scan = 0.0
        while True:
            if trio.current_time() >= next_scan:
                for stream in await trio.to_thread.run_sync(_streams, client, keys):
                    last.setdefault(stream, initial)
                next_scan = trio.current_time() + RESCAN_S
                # "$" is resolved per XREAD call; pin it to the current last id so
                # entries appended between two reads are not missed.
                for stream, after in list(last.items()):
                    if after == "$":
                        last[stream] = await trio.to_thread.run_sync(_newest_id, client, stream)
            reply: Any = await trio.to_thread.run_sync(
                _xread, client, dict(last), abandon_on_cancel=True
            )
            for stream, entries in reply or []:
                for entry_id, fields in entries:
                    last[stream] = entry_id
                    try:
                        env = Envelope.decode(fields)
                    except MalformedEntry:
                        continue
                    line = TailLine(stream, entry_id, env)
                    if matches(line, call=call, kind=kind):
                        yield line
    finally:
        client.close()  # synchronous: returns the pool's sockets at once


async def run_tail(
    redis_url: str,
    keys: Keys,
    *,
    call: str | None = None,
    kind: str | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """What ``switchboard tail`` does: print matching entries until interrupted."""
    async for line in tail(redis_url, keys, call=call, kind=kind):
        out.write(line.format() + "\n")
        out.flush()
