"""The data of ``MemoryBus`` streams: ids, range bounds, entries and group PELs.

Plain data and the parsing Redis does on stream ids, with Redis' error
replies (``CommandError``), so :mod:`bus.memory` can hold the behaviour
(appends, group reads, claims) and nothing else. No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bus.base import CommandError, parse_id

__all__ = [
    "Group",
    "Pending",
    "Stream",
    "StreamId",
    "format_id",
    "parse_strict",
    "range_end",
    "range_start",
]


StreamId = tuple[int, int]
_MAX_SEQ = 2**64 - 1


def format_id(sid: StreamId) -> str:
    """Render a ``(ms, seq)`` pair as a stream id string."""
    return f"{sid[0]}-{sid[1]}"


def parse_strict(entry_id: str) -> StreamId:
    try:
        ms, seq = parse_id(entry_id)
    except ValueError as exc:
        raise CommandError(
            f"ERR Invalid stream ID specified as stream command argument: {entry_id!r}"
        ) from exc
    if ms < 0 or seq < 0:
        raise CommandError(f"ERR Invalid stream ID: {entry_id!r}")
    return ms, seq


def range_start(bound: str) -> tuple[StreamId, bool]:
    """A range start as (id, exclusive). ``"ms"`` alone means ``ms-0``."""
    if bound == "-":
        return (0, 0), False
    if bound.startswith("("):
        return parse_strict(bound[1:]), True
    return parse_strict(bound), False


def range_end(bound: str) -> tuple[StreamId, bool]:
    """A range end as (id, exclusive). ``"ms"`` alone means ``ms-<max>``."""
    if bound == "+":
        return (2**64 - 1, _MAX_SEQ), False
    exclusive = bound.startswith("(")
    raw = bound[1:] if exclusive else bound
    if "-" not in raw:
        try:
            return (int(raw), _MAX_SEQ), exclusive
        except ValueError as exc:
            raise CommandError(f"ERR Invalid stream ID: {bound!r}") from exc
    return parse_strict(raw), exclusive


@dataclass(slots=True)
class Pending:
    consumer: str
    delivered_at: float  # trio clock, seconds
    deliveries: int


@dataclass(slots=True)
class Group:
    last_delivered: StreamId
    # Keyed by id; kept sorted on demand (PELs are small and reads are rare).
    pending: dict[StreamId, Pending] = field(default_factory=dict)


@dataclass(slots=True)
class Stream:
    # Parallel lists, append-only at the end, trimmed at the front: ids sorted.
    ids: list[StreamId] = field(default_factory=list)
    entries: dict[StreamId, dict[str, str]] = field(default_factory=dict)
    last_generated: StreamId = (0, 0)
    groups: dict[str, Group] = field(default_factory=dict)

    def after(self, sid: StreamId, count: int) -> list[StreamId]:
        """Up to ``count`` ids strictly greater than ``sid``."""
        # Binary search: streams can hold a day of entries.
        lo, hi = 0, len(self.ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.ids[mid] <= sid:
                lo = mid + 1
            else:
                hi = mid
        return self.ids[lo : lo + count]
