"""``MemoryBus``: the in-process bus with Redis Streams semantics.

It is the embedded default (``switchboard dev``) and the fast test double, so
it is honest in the places where a lenient fake would hide bugs:

- Ids are ``"<ms>-<seq>"`` from the wall clock (injectable), strictly
  increasing per stream, exactly as ``XADD key * ...`` makes them.
- Every ``append`` trims the stream by age. Redis' ``MINID ~`` may keep a few
  extra old entries; this bus trims exactly, which is within the contract
  ("entries older than the retention *may* vanish").
- Consumer groups keep a pending list (PEL) per group with the owning
  consumer, a delivery count and the time of the last delivery. Nothing leaves
  the PEL but ``ack``; a consumer that never acks gets its entries re-read with
  ``start="0"`` (each re-read counts as a delivery) or claimed by another
  consumer with ``claim_idle`` once idle long enough.
- Idle times, key TTLs and lease expiry use ``trio.current_time()``, so tests
  drive them with ``autojump_clock``.
- Pending entries whose entry was trimmed away are dropped from the PEL when
  met (like ``XAUTOCLAIM`` on Redis 7) and logged, never returned.
- Blocking reads park on a per-stream ``ParkingLot`` that every append to that
  stream wakes; nothing polls.

``block_ms=0`` means "block until something arrives", as in Redis.

Streams and consumer groups are here; their data types are in
:mod:`bus.memory_streams`, and the key/value half (TTLs, leases, liveness) is
:class:`bus.memory_kv.MemoryKeyValue`, which this class extends.

All state lives in the instance: two ``MemoryBus`` objects share nothing.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

import structlog
import trio

from bus.base import BusError, CommandError, Entry, Fields
from bus.envelope import now_ms
from bus.memory_kv import MemoryKeyValue
from bus.memory_streams import (
    Group,
    Pending,
    Stream,
    StreamId,
    format_id,
    parse_strict,
    range_end,
    range_start,
)

__all__ = ["DEFAULT_RETENTION_MS", "MemoryBus", "format_id"]

log = structlog.get_logger()


DEFAULT_RETENTION_MS = 24 * 3600 * 1000


class MemoryBus(MemoryKeyValue):
    """In-process implementation of ``bus.base.Bus``.

    ``retention_ms`` bounds stream age (trimmed on append); ``clock_ms`` is
    the wall clock used for ids and trimming (tests may pass their own).
    """

    def __init__(
        self,
        retention_ms: int = DEFAULT_RETENTION_MS,
        *,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        super().__init__()
        self.retention_ms = retention_ms
        self._clock_ms = clock_ms
        self._streams: dict[str, Stream] = {}
        self._lots: dict[str, trio.lowlevel.ParkingLot] = {}
        self._stream_expiry: dict[str, float] = {}  # stream -> expires_at (trio clock)

    # -- helpers -----------------------------------------------------------

    def _group(self, stream: str, group: str) -> tuple[Stream, Group]:
        s = self._streams.get(stream)
        g = s.groups.get(group) if s is not None else None
        if s is None or g is None:
            raise CommandError(f"NOGROUP No such key '{stream}' or consumer group '{group}'")
        return s, g

    def _wake(self, stream: str) -> None:
        lot = self._lots.get(stream)
        if lot is not None:
            lot.unpark_all()

    async def _park(self, stream: str, deadline: float) -> None:
        """Wait for the next append to ``stream`` or the deadline."""
        lot = self._lots.get(stream)
        if lot is None:
            lot = self._lots[stream] = trio.lowlevel.ParkingLot()
        try:
            with trio.move_on_at(deadline):
                await lot.park()
        finally:
            if not lot and self._lots.get(stream) is lot:
                del self._lots[stream]
        if self._closed:
            raise BusError("bus is closed")

    @staticmethod
    def _deadline(block_ms: int) -> float:
        if block_ms == 0:
            return math.inf
        return trio.current_time() + block_ms / 1000

    def _next_id(self, s: Stream) -> StreamId:
        ms = self._clock_ms()
        last_ms, last_seq = s.last_generated
        if ms > last_ms:
            return ms, 0
        # The clock went backwards or we are within the same millisecond.
        return last_ms, last_seq + 1

    def _add(self, stream: str, sid: StreamId, fields: Fields) -> None:
        s = self._streams.setdefault(stream, Stream())
        s.ids.append(sid)
        s.entries[sid] = dict(fields)
        s.last_generated = sid

    def _trim(self, stream: str) -> None:
        s = self._streams[stream]
        min_id = (self._clock_ms() - self.retention_ms, 0)
        cut = 0
        while cut < len(s.ids) and s.ids[cut] < min_id:
            del s.entries[s.ids[cut]]
            cut += 1
        if cut:
            del s.ids[:cut]

    def _entry(self, stream: str, s: Stream, sid: StreamId, deliveries: int = 1) -> Entry:
        return Entry(stream, format_id(sid), dict(s.entries[sid]), deliveries)

    def _reap(self, stream: str) -> None:
        # An expired stream goes at its next append or trim (not at the exact
        # moment, as on Redis): nothing here depends on the moment.
        expires = self._stream_expiry.get(stream)
        if expires is not None and trio.current_time() >= expires:
            del self._stream_expiry[stream]
            self._streams.pop(stream, None)

    def _append_now(self, stream: str, fields: Fields) -> str:
        if not fields:
            raise CommandError("ERR wrong number of arguments for 'xadd' command")
        self._reap(stream)
        s = self._streams.setdefault(stream, Stream())
        sid = self._next_id(s)
        self._add(stream, sid, fields)
        self._trim(stream)
        self._wake(stream)
        return format_id(sid)

    # -- streams -----------------------------------------------------------

    async def append(self, stream: str, fields: Fields) -> str:
        """Append one entry (trimming by retention); return its id."""
        await self._enter()
        return self._append_now(stream, fields)

    append_replicated = append  # no replicas: nothing to wait for

    async def append_many(self, items: Sequence[tuple[str, Fields]]) -> list[str]:
        """Append several entries at once; ids in order."""
        await self._enter()
        return [self._append_now(stream, fields) for stream, fields in items]

    async def append_with_id(self, stream: str, entry_id: str, fields: Fields) -> str:
        """Append with an explicit id (imports and tests); no trimming.

        The id must be greater than the stream's last id, as with ``XADD``.
        """
        await self._enter()
        sid = parse_strict(entry_id)
        s = self._streams.setdefault(stream, Stream())
        if sid <= s.last_generated:
            raise CommandError(
                "ERR The ID specified in XADD is equal or smaller than the target stream top item"
            )
        self._add(stream, sid, fields)
        self._wake(stream)
        return format_id(sid)

    async def trim(self, stream: str, *, max_len: int) -> int:
        """Drop entries older than the retention, then all but the newest ``max_len``."""
        await self._enter()
        self._reap(stream)
        s = self._streams.get(stream)
        if s is None:
            return 0
        before = len(s.ids)
        self._trim(stream)
        cut = max(0, len(s.ids) - max(0, max_len))
        for sid in s.ids[:cut]:
            del s.entries[sid]
        del s.ids[:cut]
        return before - len(s.ids)

    async def expire(self, key: str, ttl_ms: int) -> None:
        """Give a stream or key/value entry ``ttl_ms`` more to live."""
        await self._enter()
        expires = trio.current_time() + ttl_ms / 1000
        if key in self._streams:
            self._stream_expiry[key] = expires
        elif key in self._kv:
            self._kv[key] = (self._kv[key][0], expires)

    async def ensure_group(self, stream: str, group: str, start: str = "0") -> None:
        """Create the consumer group (and the stream) if missing; idempotent."""
        await self._enter()
        s = self._streams.setdefault(stream, Stream())
        if group in s.groups:
            return
        last = s.last_generated if start == "$" else parse_strict(start)
        s.groups[group] = Group(last_delivered=last)

    async def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        start: str = ">",
        count: int = 100,
        block_ms: int | None = None,
    ) -> list[Entry]:
        """Read as ``consumer`` of ``group``; ``start="0"`` re-reads own pending."""
        await self._enter()
        if start != ">":
            return self._reread_pending(stream, group, consumer, parse_strict(start), count)
        deadline = None if block_ms is None else self._deadline(block_ms)
        while True:
            s, g = self._group(stream, group)
            ids = s.after(g.last_delivered, count)
            if ids:
                now = trio.current_time()
                for sid in ids:
                    g.pending[sid] = Pending(consumer, now, 1)
                g.last_delivered = ids[-1]
                return [self._entry(stream, s, sid) for sid in ids]
            if deadline is None or trio.current_time() >= deadline:
                return []
            await self._park(stream, deadline)

    def _reread_pending(
        self, stream: str, group: str, consumer: str, after: StreamId, count: int
    ) -> list[Entry]:
        s, g = self._group(stream, group)
        now = trio.current_time()
        out: list[Entry] = []
        for sid in sorted(g.pending):
            if len(out) >= count:
                break
            p = g.pending[sid]
            if sid <= after or p.consumer != consumer:
                continue
            if sid not in s.entries:
                self._drop_trimmed(stream, group, g, sid)
                continue
            p.deliveries += 1
            p.delivered_at = now
            out.append(self._entry(stream, s, sid, p.deliveries))
        return out

    @staticmethod
    def _drop_trimmed(stream: str, group: str, g: Group, sid: StreamId) -> None:
        p = g.pending.pop(sid)
        log.warning(
            "bus.pending_entry_trimmed",
            stream=stream,
            group=group,
            consumer=p.consumer,
            id=format_id(sid),
        )

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge entries; returns how many were pending."""
        await self._enter()
        s = self._streams.get(stream)
        g = s.groups.get(group) if s is not None else None
        if g is None:
            return 0
        done = 0
        for entry_id in ids:
            if g.pending.pop(parse_strict(entry_id), None) is not None:
                done += 1
        return done

    async def claim_idle(
        self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100
    ) -> list[Entry]:
        """Take over entries pending (on any consumer) for at least ``min_idle_ms``."""
        await self._enter()
        s, g = self._group(stream, group)
        now = trio.current_time()
        out: list[Entry] = []
        for sid in sorted(g.pending):
            if len(out) >= count:
                break
            p = g.pending[sid]
            if (now - p.delivered_at) * 1000 < min_idle_ms:
                continue
            if sid not in s.entries:
                self._drop_trimmed(stream, group, g, sid)
                continue
            p.consumer = consumer
            p.deliveries += 1
            p.delivered_at = now
            out.append(self._entry(stream, s, sid, p.deliveries))
        return out

    async def touch(self, stream: str, group: str, consumer: str, ids: Sequence[str]) -> None:
        """Reset the idle time of ``ids`` pending on ``consumer``; deliveries unchanged."""
        await self._enter()
        _, g = self._group(stream, group)
        now = trio.current_time()
        for entry_id in ids:
            p = g.pending.get(parse_strict(entry_id))
            if p is not None and p.consumer == consumer:
                p.delivered_at = now

    async def pending_count(self, stream: str, group: str) -> int:
        """How many entries of the group are delivered but not acked."""
        await self._enter()
        _, g = self._group(stream, group)
        return len(g.pending)

    async def group_lag(self, stream: str, group: str) -> int | None:
        """How many entries of ``stream`` the group has not been delivered yet."""
        await self._enter()
        s, g = self._group(stream, group)
        return len(s.ids) - bisect.bisect_right(s.ids, g.last_delivered)

    async def read(
        self, stream: str, after: str, *, count: int = 100, block_ms: int | None = None
    ) -> list[Entry]:
        """Plain tail read of entries with id > ``after`` (``"$"``: only new ones)."""
        await self._enter()
        if after == "$":
            s = self._streams.get(stream)
            since = s.last_generated if s is not None else (0, 0)
        else:
            since = parse_strict(after)
        deadline = None if block_ms is None else self._deadline(block_ms)
        while True:
            s = self._streams.get(stream)
            if s is not None:
                ids = s.after(since, count)
                if ids:
                    return [self._entry(stream, s, sid) for sid in ids]
            if deadline is None or trio.current_time() >= deadline:
                return []
            await self._park(stream, deadline)

    async def last_id(self, stream: str) -> str:
        """The id of the newest entry, ``"0-0"`` when the stream is empty or missing."""
        await self._enter()
        s = self._streams.get(stream)
        if s is None or not s.ids:
            return "0-0"
        return format_id(s.ids[-1])

    async def range(
        self, stream: str, start: str = "-", end: str = "+", count: int | None = None
    ) -> list[Entry]:
        """Entries between two ids inclusive (``(`` makes a bound exclusive)."""
        await self._enter()
        lo, lo_ex = range_start(start)
        hi, hi_ex = range_end(end)
        s = self._streams.get(stream)
        if s is None or count == 0:
            return []
        out: list[Entry] = []
        for sid in s.ids:
            if sid < lo or (lo_ex and sid == lo):
                continue
            if sid > hi or (hi_ex and sid == hi):
                break
            out.append(self._entry(stream, s, sid))
            if count is not None and len(out) >= count:
                break
        return out

    async def aclose(self) -> None:
        """Close the bus: later calls fail, blocked readers wake and fail. Idempotent."""
        if not self._closed:
            self._closed = True
            for lot in list(self._lots.values()):
                lot.unpark_all()
        await trio.lowlevel.checkpoint()
