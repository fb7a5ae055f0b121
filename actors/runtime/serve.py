"""``serve_actor``: run one actor as one consumer until cancelled or stopped."""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Protocol

import structlog
import trio

from actors.partitions import DEFAULT_LEASE_TTL_MS, PartitionManager
from actors.runtime.actor import Actor
from actors.runtime.worker import StreamWorker
from bus.base import Bus, BusError
from bus.retry import retry_bus

log = structlog.get_logger()


async def serve_actor(
    bus: Bus,
    actor: Actor,
    *,
    consumer: str,
    block_ms: int = 1000,
    max_attempts: int = 3,
    lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS,
    stop: trio.Event | None = None,
    drain_timeout_s: float = 5.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``actor`` as ``consumer`` of its group until cancelled or ``stop`` is set.

    Creates the consumer group on every stream, then reports readiness with
    ``task_status.started()``; from then on every entry appended to one of the
    actor's streams is handled. A partitioned actor is ready once its first
    ownership round is done (a lone worker then holds every partition). See
    the module docstring for the delivery rules and the two ways to stop.
    """
    actor.consumer = consumer
    actor.attach(bus)
    streams = list(actor.streams())
    for stream in streams:
        # A bus outage at start-up (Redis restarting, a cluster failover under
        # way: CLUSTERDOWN) is waited out as every loop waits it out later.
        group = partial(bus.ensure_group, stream, actor.group)
        await retry_bus("ensure_group", group, actor=actor.name, stream=stream)
    log.info(
        "actor_started",
        actor=actor.name,
        group=actor.group,
        consumer=consumer,
        streams=len(streams),
        concurrency=actor.concurrency,
    )
    if actor.partitioned:
        loops: _Loops = _Partitions(bus, actor, consumer, block_ms, max_attempts, lease_ttl_ms)
    else:
        loops = _Streams(StreamWorker(bus, actor, consumer, block_ms, max_attempts), streams)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.background, bus)
        await nursery.start(loops.serve)
        if not actor.partitioned:
            # Partitioned actors heartbeat through their PartitionManager.
            registry = actor.keys.members(actor.group)
            nursery.start_soon(_heartbeat, bus, registry, consumer, lease_ttl_ms)
        task_status.started()
        if stop is not None:
            await stop.wait()
            log.info("actor_stopping", actor=actor.name, consumer=consumer)
            # Bounded: a handler stuck past the bound is cancelled, its entry
            # stays pending (reclaimed by another worker; a partition's lease
            # expires on its own).
            with trio.move_on_after(drain_timeout_s):
                await loops.drain()
            nursery.cancel_scope.cancel()
    if stop is not None and stop.is_set():
        log.info("actor_stopped", actor=actor.name, consumer=consumer)


async def _heartbeat(bus: Bus, registry: str, member: str, ttl_ms: int) -> None:
    """Keep ``member`` in its role's liveness registry while it runs (who is up, per role:
    the dashboard's live workers); leave it at once on the way out. A failed
    heartbeat is left to expire: the read loops report the outage."""
    try:
        while True:
            with contextlib.suppress(BusError):
                await bus.heartbeat(registry, member, ttl_ms)
            await trio.sleep(ttl_ms / 3000)
    finally:
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(1.0),
            contextlib.suppress(BusError),
        ):
            await bus.leave(registry, member)


class _Loops(Protocol):
    async def serve(self, *, task_status: trio.TaskStatus[None]) -> None: ...

    async def drain(self) -> None:
        """Take nothing new; return once the entries in flight are done."""


class _Streams:
    """A plain actor: one read loop per stream (and a reclaimer, if it opted in)."""

    def __init__(self, worker: StreamWorker, streams: list[str]) -> None:
        self.worker = worker
        self.streams = streams
        self.done = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        reclaim = self.worker.actor.reclaim
        async with trio.open_nursery() as nursery:
            if reclaim is not None:
                for stream in self.streams:
                    nursery.start_soon(self.worker.reclaim, stream, reclaim)
            task_status.started()
            async with trio.open_nursery() as loops:
                for stream in self.streams:
                    loops.start_soon(self.worker.serve, stream)
            self.done.set()
            nursery.cancel_scope.cancel()

    async def drain(self) -> None:
        self.worker.stop_reading()
        await self.done.wait()


class _Partitions:
    """A partitioned actor: the partitions this worker holds by lease."""

    def __init__(
        self,
        bus: Bus,
        actor: Actor,
        consumer: str,
        block_ms: int,
        max_attempts: int,
        lease_ttl_ms: int,
    ) -> None:
        self.manager = PartitionManager(
            bus,
            keys=actor.keys,
            group=actor.group,
            member=consumer,
            stream_of=actor.partition_stream,
            process_for=lambda name: StreamWorker(bus, actor, name, block_ms, max_attempts).process,
            lease_ttl_ms=lease_ttl_ms,
            block_ms=block_ms,
            actor=actor.name,
            partition_task=actor.partition_task if actor.has_partition_task else None,
        )

    async def serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        await self.manager.serve(task_status=task_status)

    async def drain(self) -> None:
        self.manager.stop()
        await self.manager.stopped.wait()
