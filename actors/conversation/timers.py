"""Durable timers: a per-partition index of the calls' deadlines, and its task.

Timers (silence re-prompt, DTMF entry idle, the request wait) are deadlines
in wall-clock ms in the call state and in a per-partition index
(``keys.timers(p)``, written with ``set_if_lease``). The partition owner runs
one timer task per held partition (the runtime's ``partition_task`` hook): it
loads the index on acquisition, sleeps until the earliest deadline and
appends a ``conversation.timer`` entry to the partition's stream, which is
applied in order like any event and acts only if the state's deadline still
equals the entry's (later input moved or cleared it). A new owner re-arms
every timer from the index: timers survive a failover. The index may hold
deadlines the states no longer have (they fire as no-ops), never fewer: it
is written before the state whenever a deadline is set or moved.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import structlog
import trio

from bus.base import Bus, BusError
from bus.messages import ConversationTimer, envelope
from bus.retry import Backoff

log = structlog.get_logger()


class PartitionTimers:
    """One partition's timer index in memory: ``{call: {timer: deadline_ms}}``."""

    def __init__(self, index: dict[str, dict[str, int]]) -> None:
        self.index = index
        self.changed = trio.Event()

    def update(self, call: str, timers: dict[str, int]) -> None:
        if timers:
            self.index[call] = dict(timers)
        else:
            self.index.pop(call, None)
        self.changed.set()

    def earliest(self) -> int | None:
        return min((d for t in self.index.values() for d in t.values()), default=None)

    def pop_due(self, at: int) -> list[tuple[str, str, int]]:
        due = [
            (call, name, d)
            for call, timers in self.index.items()
            for name, d in timers.items()
            if d <= at
        ]
        for call, name, _ in due:
            timers = self.index[call]
            del timers[name]
            if not timers:
                del self.index[call]
        return due

    def restore(self, due: list[tuple[str, str, int]]) -> None:
        """Put back timers whose entries could not be appended (a newer deadline wins)."""
        for call, name, deadline in due:
            merged = {**self.index.get(call, {})}
            merged.setdefault(name, deadline)
            self.index[call] = merged

    def encode(self) -> str:
        return json.dumps(self.index, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str | None) -> PartitionTimers:
        index: dict[str, dict[str, int]] = {}
        if raw:
            try:
                data = json.loads(raw)
                index = {str(c): {str(n): int(d) for n, d in t.items()} for c, t in data.items()}
            except (ValueError, TypeError, AttributeError) as exc:
                # A bad index loses timers, not calls: say so and start empty.
                log.error("timer_index_malformed", error=repr(exc))
        return cls(index)


async def fire_timers(
    bus: Bus,
    stream: str,
    timers: PartitionTimers,
    *,
    partition: int,
    clock: Callable[[], float],
    epoch: Callable[[], int],
) -> None:
    """Append a ``conversation.timer`` entry to ``stream`` for each deadline as it falls due.

    ``clock`` gives wall-clock ms (a test passes Trio's clock in ms). Runs
    until cancelled: the partition was released or lost. ``epoch`` gives the
    fencing epoch of the partition's lease, stamped on every entry.
    """
    backoff = Backoff("timer_fire", actor="conversation", partition=partition)
    while True:
        timers.changed = trio.Event()
        due_at = timers.earliest()
        if due_at is None:
            await timers.changed.wait()
            continue
        delay = (due_at - clock()) / 1000
        if delay > 0:
            with trio.move_on_after(delay):
                await timers.changed.wait()
            if timers.changed.is_set():
                continue
        # Everything due by the instant we slept to (not re-reading the
        # clock: the sleep is the authority, also under a test clock).
        due = timers.pop_due(due_at)
        items = [
            (
                stream,
                envelope(
                    ConversationTimer(timer=name, deadline_ms=deadline), call=call, epoch=epoch()
                ).encode(),
            )
            for call, name, deadline in due
        ]
        try:
            await bus.append_many(items)
        except BusError as exc:
            timers.restore(due)
            await backoff.failed(exc)
            continue
        backoff.succeeded()
        log.debug("timers_fired", partition=partition, count=len(due))
