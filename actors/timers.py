"""One Trio deadline for many waiters.

``trio.sleep`` and ``trio.move_on_at`` arm a cancel scope each, and a scope
that expires wakes its task by raising and catching ``Cancelled``. An LLM
worker streaming hundreds of replies does that thousands of times a second
(a reply's coalescing wait, the scripted provider's word gaps): profiled at
1,000 calls, that machinery was a quarter of the worker's CPU. A
``SharedTimer`` keeps its waiters in a heap and one system task sleeps until
the earliest of them, then sets the events that are due.

With a ``grid_s`` the due times are rounded up to the grid, so waiters that
are due at nearly the same moment wake together: the LLM worker's token
entries of many replies then leave in the same scheduler pass and share one
Redis pipeline, and the gateway reads them in one batch.

Works under ``autojump_clock`` (the ticker's deadline is an ordinary Trio
deadline) and across separate ``trio.run`` calls (tests).
"""

from __future__ import annotations

import heapq
import itertools
import math

import trio


class SharedTimer:
    """Sets events at their due times (rounded up to ``grid_s``) with one timer."""

    def __init__(self, grid_s: float = 0.0) -> None:
        self.grid_s = max(0.0, grid_s)
        self._heap: list[tuple[float, int, trio.Event]] = []
        self._seq = itertools.count()
        self._ticker: trio.CancelScope | None = None
        self._token: trio.lowlevel.TrioToken | None = None

    def due(self, when: float) -> float:
        """When an event asked for at ``when`` is set (Trio time)."""
        if self.grid_s <= 0:
            return when
        # Never before ``when``: a waiter woken early would ask again, forever.
        return max(when, math.ceil(when / self.grid_s - 1e-9) * self.grid_s)

    def set_at(self, when: float, event: trio.Event) -> None:
        """Set ``event`` at ``due(when)``; an event nobody waits for costs nothing."""
        token = trio.lowlevel.current_trio_token()
        if token is not self._token:  # a new trio.run: the old ticker is gone
            self._token, self._ticker = token, None
            self._heap.clear()
        when = self.due(when)
        heapq.heappush(self._heap, (when, next(self._seq), event))
        if self._ticker is None:
            self._ticker = trio.CancelScope(deadline=when)
            trio.lowlevel.spawn_system_task(self._tick, self._ticker, name="shared-timer")
        elif when < self._ticker.deadline:
            self._ticker.deadline = when

    async def sleep_until(self, when: float) -> None:
        """``trio.sleep_until``, on this timer (cancellable as usual)."""
        if when <= trio.current_time():
            await trio.lowlevel.checkpoint()
            return
        event = trio.Event()
        self.set_at(when, event)
        await event.wait()

    async def _tick(self, scope: trio.CancelScope) -> None:
        heap = self._heap
        while True:
            with scope:
                await trio.sleep_forever()
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                heapq.heappop(heap)[2].set()
            # A fresh scope for the next due time (a used scope cannot re-enter).
            scope = self._ticker = trio.CancelScope(deadline=heap[0][0] if heap else math.inf)
