"""The actor runtime: loops, acks, retries, dead letters and log context.

An ``Actor`` says what it reads (``streams()`` and its consumer ``group``) and
how to apply one entry (``handle``). ``serve_actor`` owns everything else.

Delivery, as the runtime implements it on top of ``bus.base``:

- On start, each stream loop first re-reads the consumer's *own* pending
  entries (``start="0"``): work a previous incarnation of this consumer took
  but never acked. Then it reads new entries (``">"``).
- An entry is acked only after its handler returned. A handler that raises is
  retried (``max_attempts`` in all, with a short backoff); if it still fails,
  the entry goes to the dead-letter stream with the error text and its original
  fields, and is then acked. A malformed entry (not an envelope) goes to the
  dead-letter stream at once. Nothing is dropped silently.
- Cancellation stops the loops where they are: an entry whose handler did not
  finish stays pending and is delivered again (to this consumer on restart, or
  to another one that claims it). Handlers are therefore idempotent.
- ``concurrency == 1`` handles the entries of one stream one after the other
  (per-stream order). With ``concurrency > 1`` up to that many handlers run at
  once per stream, and each entry is acked when its own handler finishes.

Writes: ``serve_actor`` attaches the bus to the actor (``actor.bus``) before
any loop starts, so handlers publish through ``self.bus``.

Partitioned actors (``partitioned = True``, the conversation) are served
differently: instead of one loop per stream, a ``PartitionManager``
(``actors.partitions``) takes a fair share of the partitions by lease and
runs one loop per *held* partition, reading ``partition_stream(p)`` as
consumer ``p{p}`` (so a new owner inherits the pending list). The handler
gets the partition's lease from ``current_lease()``: it stamps
``lease.epoch`` on what it publishes and persists with
``bus.set_if_lease``; if that returns False it calls ``await lease_lost()``,
which cancels the partition's work at once (nothing acked). ``consumer`` is
then the worker's member name in the liveness registry; ``lease_ttl_ms``
sets the lease TTL. A partitioned actor may also run a side task per held
partition (``partition_task``; the conversation's timers): it starts before
the partition's first entry is handled and is cancelled with the partition.

Stopping: cancelling ``serve_actor`` stops everything where it is (a
partitioned actor's leases are abandoned and expire, as if it had died).
Setting the ``stop`` event is the graceful path: the actor stops taking
entries and lets the ones in flight finish (at most ``drain_timeout_s``); a
partitioned actor then releases its leases and leaves the registry; then
``serve_actor`` returns.

Not done here yet: claiming entries left pending by a dead consumer of a
plain actor (``claim_idle``); a consumer that restarts under the same name
picks its own pending entries up.

The dead-letter stream is ``dead_letter_stream(actor.keys)``, i.e.
``"<namespace>:{dead}"``: the actor carries the ``Keys`` of its config, so the
composition root needs nothing beyond the actor to run it.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import structlog
import trio

from actors.partitions import (
    DEFAULT_LEASE_TTL_MS,
    PartitionManager,
    current_lease,
    lease_lost,
)
from bus.base import Bus, BusError, Entry, MalformedEntry
from bus.envelope import Envelope, now_ms
from bus.keys import Keys
from bus.retry import Backoff, missing_group

__all__ = [
    "Actor",
    "current_lease",
    "dead_letter_stream",
    "lease_lost",
    "serve_actor",
]

log = structlog.get_logger()

# Backoff between attempts of a failing handler, and after a bus error in a
# read loop; doubled each time up to the cap.
_RETRY_BASE_S = 0.05
_RETRY_CAP_S = 2.0


def dead_letter_stream(keys: Keys) -> str:
    """Where entries that could not be handled end up (one per namespace)."""
    return f"{keys.namespace}:{{dead}}"


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

    async def background(self, bus: Bus) -> None:
        """Side loops that run as long as the actor (e.g. tailing a control stream).

        The default has none and returns at once.
        """
        return None

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
        await bus.ensure_group(stream, actor.group)
    log.info(
        "actor_started",
        actor=actor.name,
        group=actor.group,
        consumer=consumer,
        streams=len(streams),
        concurrency=actor.concurrency,
    )
    worker = _StreamWorker(bus, actor, consumer, block_ms, max_attempts)
    manager: PartitionManager | None = None
    if actor.partitioned:
        manager = PartitionManager(
            bus,
            keys=actor.keys,
            group=actor.group,
            member=consumer,
            stream_of=actor.partition_stream,
            process_for=lambda name: (
                _StreamWorker(bus, actor, name, block_ms, max_attempts)._process
            ),
            lease_ttl_ms=lease_ttl_ms,
            block_ms=block_ms,
            actor=actor.name,
            partition_task=actor.partition_task if actor.has_partition_task else None,
        )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor.background, bus)
        streams_done = trio.Event()
        if manager is not None:
            await nursery.start(manager.serve)
        else:

            async def serve_streams() -> None:
                async with trio.open_nursery() as loops:
                    for stream in streams:
                        loops.start_soon(worker.serve, stream)
                streams_done.set()

            nursery.start_soon(serve_streams)
        task_status.started()
        if stop is not None:
            await stop.wait()
            log.info("actor_stopping", actor=actor.name, consumer=consumer)
            # Bounded: a handler stuck past the bound is cancelled, its entry
            # stays pending (reclaimed by another worker; a partition's lease
            # expires on its own).
            with trio.move_on_after(drain_timeout_s):
                if manager is not None:
                    manager.stop()
                    await manager.stopped.wait()
                else:
                    worker.stop_reading()
                    await streams_done.wait()
            nursery.cancel_scope.cancel()
    if stop is not None and stop.is_set():
        log.info("actor_stopped", actor=actor.name, consumer=consumer)


class _StreamWorker:
    """The loops of one actor: one ``serve`` task per stream."""

    def __init__(
        self, bus: Bus, actor: Actor, consumer: str, block_ms: int, max_attempts: int
    ) -> None:
        self.bus = bus
        self.actor = actor
        self.consumer = consumer
        self.block_ms = block_ms
        self.max_attempts = max(1, max_attempts)
        self.dead = dead_letter_stream(actor.keys)
        # Graceful stop: each stream's read loop runs in a scope of its own.
        self._reading: list[trio.CancelScope] = []
        self._stopped_reading = False

    def stop_reading(self) -> None:
        """Graceful stop: take no new entries; handlers in flight run to the end."""
        self._stopped_reading = True
        for scope in self._reading:
            scope.cancel()

    async def serve(self, stream: str) -> None:
        limiter = trio.CapacityLimiter(max(1, self.actor.concurrency))
        backoff = Backoff("actor_read", actor=self.actor.name, stream=stream)
        # The nursery outlives the read loop: after ``stop_reading`` the
        # handlers already started finish, then ``serve`` returns.
        reading = trio.CancelScope()
        self._reading.append(reading)
        if self._stopped_reading:
            reading.cancel()
        async with trio.open_nursery() as nursery:
            with reading:
                await self._drain_pending(stream, limiter)
                while True:
                    try:
                        entries = await self.bus.read_group(
                            stream,
                            self.actor.group,
                            self.consumer,
                            start=">",
                            block_ms=self.block_ms,
                        )
                    except BusError as exc:
                        await self._recover(stream, exc, backoff)
                        continue
                    backoff.succeeded()
                    for entry in entries:
                        await self._dispatch(nursery, limiter, entry)

    async def _drain_pending(self, stream: str, limiter: trio.CapacityLimiter) -> None:
        """Handle what this consumer took before (a restart) until none is left."""
        seen: set[str] = set()
        backoff = Backoff("actor_pending", actor=self.actor.name, stream=stream)
        while True:
            try:
                entries = await self.bus.read_group(
                    stream, self.actor.group, self.consumer, start="0"
                )
            except BusError as exc:
                await self._recover(stream, exc, backoff)
                continue
            backoff.succeeded()
            fresh = [e for e in entries if e.id not in seen]
            if not fresh:
                # Empty, or only entries whose ack failed: the ">" loop and a
                # later claim take it from here rather than spinning on them.
                return
            seen.update(e.id for e in fresh)
            log.info("pending_redelivered", stream=stream, count=len(fresh))
            # Wait for the whole batch before re-reading "0", or in-flight
            # entries would come back as still pending.
            async with trio.open_nursery() as batch:
                for entry in fresh:
                    await self._dispatch(batch, limiter, entry)

    async def _dispatch(
        self, nursery: trio.Nursery, limiter: trio.CapacityLimiter, entry: Entry
    ) -> None:
        if self.actor.concurrency <= 1:
            await self._process(entry)
            return
        # Acquire before spawning, so a full limiter stops the read loop too.
        # Entry holds a dict (unhashable), so a fresh token borrows the slot.
        token = object()
        await limiter.acquire_on_behalf_of(token)
        nursery.start_soon(self._process_and_release, limiter, token, entry)

    async def _process_and_release(
        self, limiter: trio.CapacityLimiter, token: object, entry: Entry
    ) -> None:
        try:
            await self._process(entry)
        finally:
            limiter.release_on_behalf_of(token)

    async def _process(self, entry: Entry) -> None:
        try:
            env = Envelope.decode(entry.fields)
        except MalformedEntry as exc:
            log.warning(
                "entry_malformed",
                actor=self.actor.name,
                stream=entry.stream,
                entry_id=entry.id,
                error=str(exc),
            )
            if await self._dead_letter(entry, str(exc), attempts=0):
                await self._ack(entry)
            return
        with structlog.contextvars.bound_contextvars(
            call_sid=env.call, actor=self.actor.name, turn=env.turn
        ):
            error = await self._handle_with_retries(env, entry)
            if error is not None and not await self._dead_letter(
                entry, error, attempts=self.max_attempts
            ):
                return  # not recorded anywhere: leave it pending for redelivery
            await self._ack(entry)

    async def _handle_with_retries(self, env: Envelope, entry: Entry) -> str | None:
        """Run the handler up to ``max_attempts`` times; the last error text, or None."""
        error = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                await self.actor.handle(env, entry)
                return None
            except Exception as exc:  # trio.Cancelled is a BaseException: never caught
                error = f"{type(exc).__name__}: {exc}"
                log.exception(
                    "handler_failed",
                    kind=env.kind,
                    stream=entry.stream,
                    entry_id=entry.id,
                    attempt=attempt,
                    max_attempts=self.max_attempts,
                )
            if attempt < self.max_attempts:
                await trio.sleep(min(_RETRY_CAP_S, _RETRY_BASE_S * 2 ** (attempt - 1)))
        return error

    async def _dead_letter(self, entry: Entry, error: str, *, attempts: int) -> bool:
        """Record ``entry`` on the dead-letter stream; False if the bus failed."""
        fields = dict(entry.fields)
        fields.update(
            {
                "dead.stream": entry.stream,
                "dead.id": entry.id,
                "dead.group": self.actor.group,
                "dead.actor": self.actor.name,
                "dead.consumer": self.consumer,
                "dead.error": error,
                "dead.attempts": str(attempts),
                "dead.deliveries": str(entry.deliveries),
                "dead.ts": str(now_ms()),
            }
        )
        try:
            dead_id = await self.bus.append(self.dead, fields)
        except BusError as exc:
            if not exc.retriable:
                raise
            log.error(
                "dead_letter_failed",
                stream=entry.stream,
                entry_id=entry.id,
                error=f"{type(exc).__name__}: {exc}",
            )
            return False
        log.error(
            "entry_dead_lettered",
            stream=entry.stream,
            entry_id=entry.id,
            dead_stream=self.dead,
            dead_id=dead_id,
            error=error,
        )
        return True

    async def _ack(self, entry: Entry) -> None:
        try:
            await self.bus.ack(entry.stream, self.actor.group, [entry.id])
        except BusError as exc:
            if not exc.retriable:
                raise
            # The entry stays pending and comes back; handlers are idempotent.
            log.warning(
                "ack_failed",
                stream=entry.stream,
                entry_id=entry.id,
                error=f"{type(exc).__name__}: {exc}",
            )

    async def _recover(self, stream: str, exc: BusError, backoff: Backoff) -> None:
        """After a failed read: re-create a lost group, else back off (jittered)."""
        if missing_group(exc):
            # Redis lost its data (a restart without persistence): the group
            # is gone with it. Re-create it and read on; nothing was pending.
            log.warning("consumer_group_recreated", actor=self.actor.name, stream=stream)
            try:
                await self.bus.ensure_group(stream, self.actor.group)
                return
            except BusError as again:
                exc = again
        await backoff.failed(exc)
