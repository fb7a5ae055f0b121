"""What an actor is: the ``Actor`` base class, reclaim opt-in, the dead-letter record."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from bus.base import Bus, Entry, Fields
from bus.envelope import Envelope, now_ms
from bus.keys import Keys


def dead_letter_stream(keys: Keys) -> str:
    """Where entries that could not be handled end up (one per namespace)."""
    return f"{keys.namespace}:{{dead}}"


def dead_letter_fields(
    entry: Entry, *, actor: Actor, consumer: str, error: str, attempts: int
) -> Fields:
    """The dead-letter record of ``entry``: its fields plus where and why."""
    fields = dict(entry.fields)
    fields.update(
        {
            "dead.stream": entry.stream,
            "dead.id": entry.id,
            "dead.group": actor.group,
            "dead.actor": actor.name,
            "dead.consumer": consumer,
            "dead.error": error,
            "dead.attempts": str(attempts),
            "dead.deliveries": str(entry.deliveries),
            "dead.ts": str(now_ms()),
        }
    )
    return fields


@dataclass(frozen=True, slots=True)
class Reclaim:
    """Take over entries pending longer than ``idle_ms``, looking every ``interval_s``."""

    idle_ms: int
    interval_s: float
    batch: int = 100  # at most this many entries claimed per look


class Actor(abc.ABC):
    """A behaviour that consumes bus streams as one consumer group.

    Subclasses set ``name`` (for logs), ``group`` (the consumer group),
    ``keys`` (the namespace; also names the dead-letter stream) and may raise
    ``concurrency`` above 1 when entries of one stream are independent.
    """

    name: str
    group: str
    keys: Keys
    concurrency: int = 1
    # The consumer name ``serve_actor`` runs the actor as (set before any
    # loop starts): background loops that claim or touch entries need it.
    consumer: str = ""
    # Opt-in: reclaim entries a dead consumer of the group left pending.
    reclaim: Reclaim | None = None
    # Opt-in bounds on one entry (None: unbounded). A handler still running
    # after ``handler_deadline_s`` is cancelled and the attempt counts as
    # failed. An entry delivered more than ``max_deliveries`` times (its
    # workers died, stalled or lost their lease while handling it) is not
    # handled again: it is dead-lettered and ``dead_lettered`` is told.
    handler_deadline_s: float | None = None
    max_deliveries: int | None = None
    _bus: Bus | None = None

    def attach(self, bus: Bus) -> None:
        """Give the actor its bus; ``serve_actor`` calls it before any ``handle``."""
        self._bus = bus

    @property
    def bus(self) -> Bus:
        """The bus the actor is served on (writes from ``handle`` go here)."""
        if self._bus is None:
            raise RuntimeError(f"actor {self.name!r} is not attached to a bus")
        return self._bus

    @abc.abstractmethod
    def streams(self) -> Sequence[str]:
        """The streams this actor reads as a member of ``group``."""

    @abc.abstractmethod
    async def handle(self, env: Envelope, entry: Entry) -> None:
        """Apply one entry. Raise to have it retried; return to have it acked.

        Must be idempotent: an entry can be delivered more than once.
        """

    async def background(
        self, bus: Bus, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Side loops that run as long as the actor (e.g. tailing a control stream).

        Started before any stream is read; no entry is handled until it calls
        ``task_status.started()``. The default has none and returns at once.
        """
        task_status.started()

    async def dead_lettered(self, env: Envelope, entry: Entry, error: str) -> None:
        """The runtime gave up on ``entry`` (recorded on the dead-letter stream).

        The place to tell whoever waits on it (the conversation: the caller
        hears an apology). Bounded by ``handler_deadline_s``; an error here is
        logged and the entry is acked all the same. The default does nothing.
        """
        await trio.lowlevel.checkpoint()

    async def dead_letter(self, entry: Entry, error: str, *, attempts: int) -> str:
        """Record ``entry`` on the dead-letter stream (an actor giving up on it); its id."""
        fields = dead_letter_fields(
            entry, actor=self, consumer=self.consumer, error=error, attempts=attempts
        )
        return await self.bus.append(dead_letter_stream(self.keys), fields)

    # A partitioned actor's streams are read one partition per owner, by
    # lease, instead of by every worker (see the module docstring).
    partitioned: bool = False

    def partition_stream(self, partition: int) -> str:
        """The stream of ``partition`` (partitioned actors; ``keys.partitions`` of them)."""
        return self.keys.calls(partition)

    # Set to True by a partitioned actor that overrides ``partition_task``.
    has_partition_task: bool = False

    async def partition_task(
        self, partition: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """A side task that runs while this worker holds ``partition``.

        Partitioned actors with ``has_partition_task = True`` only. Started
        before the partition's first entry is handled: call
        ``task_status.started()`` once ready (entries wait until then). It runs
        with the partition's ``current_lease()`` and is cancelled when the
        partition is drained, lost or abandoned. It should not return early
        (returning is allowed; an exception stops the worker's partitions).
        """
        task_status.started()
