"""Redis replies read back as bus values: entries from stream replies, XINFO records.

``RedisBus`` (:mod:`bus.redis`) sends the commands; this module turns what
comes back (RESP2 flat lists, ``XRANGE``/``XREAD``-shaped entries, the
entries the scripts return with their delivery counts) into ``Entry`` values,
and logs the pending entries a read found trimmed away.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from bus.base import Entry

__all__ = [
    "entries",
    "field_dict",
    "info_fields",
    "log_trimmed",
    "scripted_entries",
    "stream_reply",
]

log = structlog.get_logger()


def field_dict(raw: Sequence[str]) -> dict[str, str]:
    """A flat ``[name, value, ...]`` list of entry fields as a dict."""
    it = iter(raw)
    return dict(zip(it, it, strict=True))


def info_fields(raw: Sequence[Any]) -> dict[str, Any]:
    """An ``XINFO`` record (RESP2: a flat name/value list) as a dict."""
    it = iter(raw)
    return {str(name): value for name, value in zip(it, it, strict=True)}


def entries(stream: str, raw: Sequence[Any] | None) -> list[Entry]:
    """Entries from an ``XRANGE``-shaped reply, skipping trimmed (nil) ones."""
    out: list[Entry] = []
    for item in raw or ():
        entry_id, fields = item[0], item[1]
        if fields is None:
            log.warning("bus.entry_trimmed", stream=stream, id=entry_id)
            continue
        out.append(Entry(stream, entry_id, field_dict(fields)))
    return out


def stream_reply(stream: str, reply: Any) -> list[Entry]:
    """Entries from an ``XREAD``/``XREADGROUP`` reply for one stream (nil: none)."""
    if not reply:
        return []
    for key, raw in reply:
        if key == stream:
            return entries(stream, raw)
    return []


def scripted_entries(stream: str, raw: Sequence[Any]) -> list[Entry]:
    return [Entry(stream, i, field_dict(f), int(n)) for i, f, n in raw]


def log_trimmed(stream: str, group: str, trimmed: Sequence[str]) -> None:
    for entry_id in trimmed:
        log.warning("bus.pending_entry_trimmed", stream=stream, group=group, id=entry_id)
