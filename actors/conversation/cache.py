"""The state cache: the states this worker last wrote, by call.

While a worker holds a partition's lease it is the only writer of that
partition's states (writes are fenced), so it keeps the state it last wrote
per call in memory and skips the read. An entry is used only under the lease
epoch it was written with; a handler takes it out while it works and puts it
back only after the fenced write succeeded (a handler that fails, is
cancelled or loses the lease leaves nothing behind); a partition released or
lost drops its calls; a closed call is dropped; the cache is an LRU bounded
by ``state_cache_calls``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import trio

from actors.conversation.state import CallState
from bus.base import Lease


@dataclass(slots=True)
class _Cached:
    state: CallState
    lease: Lease  # the lease (name and epoch) it was written under
    partition: int
    expires_at: float  # trio time: the stored key's TTL runs out then


class StateCache:
    """The states this worker last wrote, by call (LRU); see the module docstring."""

    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls
        self._items: OrderedDict[str, _Cached] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def take(self, call: str, lease: Lease | None) -> CallState | None:
        """Remove and return ``call``'s state if written under ``lease``; else None."""
        cached = self._items.pop(call, None)
        if cached is None or lease is None or cached.lease != lease:
            return None
        if trio.current_time() >= cached.expires_at:
            return None  # the stored state has expired: do as a read would
        return cached.state

    def put(self, state: CallState, lease: Lease, partition: int, ttl_ms: int) -> None:
        if self.max_calls <= 0:
            return
        expires_at = trio.current_time() + ttl_ms / 1000
        self._items[state.call] = _Cached(state, lease, partition, expires_at)
        self._items.move_to_end(state.call)
        while len(self._items) > self.max_calls:
            self._items.popitem(last=False)

    def drop(self, call: str) -> None:
        self._items.pop(call, None)

    def drop_lease(self, lease: Lease) -> None:
        """Forget every state written under ``lease``'s partition (any epoch)."""
        for call in [c for c, v in self._items.items() if v.lease.name == lease.name]:
            del self._items[call]

    def drop_partition(self, partition: int) -> None:
        for call in [c for c, v in self._items.items() if v.partition == partition]:
            del self._items[call]
