"""Partition ownership: which worker reads which partition stream, and fencing.

A *partitioned* actor (the conversation) must see each call's entries in
order, so a partition stream is read by exactly one worker at a time. The
worker proves it is that one by holding the partition's lease.

How a worker (``PartitionManager``) decides what to own:

- Every tick (``ttl/5``) it heartbeats into the role's liveness registry
  (``Keys.members(group)``, ``Bus.heartbeat``, expiring after ``ttl``) and
  reads the live members.
- Its *targets* are the partitions it wins by rendezvous hashing
  (highest random weight, ``owner_of``) over the live members: every worker
  computes the same assignment from the same member list, partitions spread
  evenly, and a join or leave moves only the partitions that must move.
- It acquires the lease of every target that is free (``SET NX PX``; each
  acquisition bumps the partition's fencing epoch) and lets go of every
  partition it holds that is no longer a target: stop reading, let the entry
  in flight finish, release the lease. The new owner takes it at its next tick.
- A worker that dies stops heartbeating and renewing: its registry entry and
  its leases expire after ``ttl``, the others recompute and take its
  partitions at their next tick (so within ``ttl + ttl/5`` plus a round trip).

While it holds partition ``p`` the worker:

- renews the lease every ``ttl/3``. A renewal that returns False, or that
  cannot get an answer before the lease would run out, cancels that
  partition's work *at once* (its cancel scope): the handler in flight is
  cancelled and its entry stays pending, unacknowledged, for the next owner.
- reads ``stream(p)`` in the actor's group as consumer ``p{p}`` (the
  consumer is the partition, not the worker), first its pending entries
  (``start="0"``, one at a time, so the delivery count an entry carries is
  the number of owners that started it, plus at most the one batch it was
  first read in), then new ones. A new owner therefore inherits the previous
  owner's pending list and resumes exactly where it stopped.
- exposes the lease to the handler (``current_lease``) so writes carry the
  epoch and state is persisted with ``Bus.set_if_lease``. A refused write
  means the lease is gone: the handler calls ``lease_lost()``, which stops
  the partition at once without acking.
- runs the actor's per-partition side task, if it has one
  (``partition_task(p, task_status=...)``, e.g. the conversation's timers):
  started before the first entry is read (so it can load what it needs
  first; it calls ``task_status.started()`` when ready), with the same
  ``current_lease()``, and cancelled with the partition's work when the
  partition is drained or lost.

Cancelling the manager abandons its leases (they expire, as if the process
had died); ``stop()`` is the graceful path: stop taking work, finish the
entries in flight, release every lease, leave the registry.
"""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import structlog
import trio

from bus.base import Bus, BusError, Entry, Lease
from bus.keys import Keys
from bus.retry import Backoff, missing_group

log = structlog.get_logger()

DEFAULT_LEASE_TTL_MS = 5000


# -- rendezvous hashing -------------------------------------------------------


def _weight(member: str, partition: int) -> int:
    # A stable hash (never Python's hash(): it is salted per process), so
    # every worker computes the same weights.
    digest = hashlib.blake2b(f"{member}\x00{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner_of(partition: int, members: Sequence[str]) -> str | None:
    """The member that should own ``partition``: the highest weight wins."""
    if not members:
        return None
    return max(members, key=lambda m: (_weight(m, partition), m))


def assignment(partitions: int, members: Sequence[str]) -> dict[str, set[int]]:
    """Every member's target partitions (members without any map to an empty set)."""
    out: dict[str, set[int]] = {m: set() for m in members}
    for p in range(partitions):
        owner = owner_of(p, members)
        if owner is not None:
            out[owner].add(p)
    return out


def targets_of(member: str, partitions: int, members: Sequence[str]) -> set[int]:
    """The partitions ``member`` should own given the live ``members``."""
    return {p for p in range(partitions) if owner_of(p, members) == member}


# -- the lease of the entry being handled --------------------------------------


@dataclass(slots=True)
class _Held:
    """One partition this worker holds, and the scopes that stop its work."""

    partition: int
    lease: Lease
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    read_scope: trio.CancelScope | None = None
    draining: bool = False
    lost: bool = False
    done: trio.Event = field(default_factory=trio.Event)

    def lose(self, reason: str) -> None:
        """Cancel all of the partition's work at once; nothing more is acked."""
        if not self.lost:
            self.lost = True
            log.warning(
                "partition_lost",
                partition=self.partition,
                epoch=self.lease.epoch,
                owner=self.lease.owner,
                reason=reason,
            )
        self.scope.cancel()

    def drain(self) -> None:
        """Stop taking entries; the one in flight finishes, then the lease goes."""
        self.draining = True
        if self.read_scope is not None:
            self.read_scope.cancel()


_current: contextvars.ContextVar[_Held | None] = contextvars.ContextVar(
    "switchboard_partition", default=None
)


def current_lease() -> Lease | None:
    """The lease of the partition whose entry is being handled; None outside one.

    Partitioned actors stamp ``lease.epoch`` on what they publish and persist
    with ``bus.set_if_lease(key, value, lease)``.
    """
    held = _current.get()
    return held.lease if held is not None else None


async def lease_lost() -> NoReturn:
    """Stop the current partition at once (a fenced write was refused).

    Cancels the partition's work, so this raises ``trio.Cancelled`` out of the
    handler: the entry is not acked and stays pending for the new owner.
    """
    held = _current.get()
    if held is None:
        raise RuntimeError("lease_lost() called outside a partition's handler")
    held.lose("fenced write refused")
    await trio.lowlevel.checkpoint()
    raise AssertionError("unreachable: the partition's scope was cancelled")


# -- the manager --------------------------------------------------------------

Process = Callable[[Entry], Awaitable[None]]
# A per-partition side task: ``task(partition, task_status=...)``.
PartitionTask = Callable[..., Awaitable[None]]


class PartitionManager:
    """Owns a fair share of a partitioned actor's partitions; see the module docstring.

    ``process_for(consumer)`` returns the function that handles one entry
    (retries, dead letters and the ack included) as ``consumer``; the runtime
    supplies it. ``stream_of(p)`` names partition ``p``'s stream.
    ``partition_task``, when given, runs beside each held partition's reads
    (see the module docstring).
    """

    def __init__(
        self,
        bus: Bus,
        *,
        keys: Keys,
        group: str,
        member: str,
        stream_of: Callable[[int], str],
        process_for: Callable[[str], Process],
        lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS,
        block_ms: int = 1000,
        actor: str = "",
        partition_task: PartitionTask | None = None,
    ) -> None:
        if lease_ttl_ms < 30:
            raise ValueError(f"lease_ttl_ms too small: {lease_ttl_ms}")
        self.bus = bus
        self.keys = keys
        self.group = group
        self.member = member
        self.stream_of = stream_of
        self.process_for = process_for
        self.ttl_ms = lease_ttl_ms
        self.block_ms = min(block_ms, lease_ttl_ms)
        self.actor = actor or group
        self.partition_task = partition_task
        self.registry = keys.members(group)
        self.held: dict[int, _Held] = {}
        self._stopping = False
        self._wake = trio.Event()
        self.stopped = trio.Event()  # set once a graceful stop has released everything
        self._tick_backoff = Backoff("partition_tick", actor=self.actor, member=member)

    @property
    def owned(self) -> set[int]:
        """Partitions held right now (including ones being let go)."""
        return set(self.held)

    def stop(self) -> None:
        """Graceful stop: finish in-flight entries, release leases, then ``serve`` returns."""
        self._stopping = True
        self._wake.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled (leases abandoned) or ``stop()`` (leases released).

        Reports readiness after the first tick, so a lone worker owns every
        partition before ``started()``.
        """
        async with trio.open_nursery() as nursery:
            await self._tick(nursery)
            task_status.started()
            while not self._stopping:
                with trio.move_on_after(self.ttl_ms / 5000):
                    await self._wake.wait()
                if self._stopping:
                    break
                await self._tick(nursery)
            log.info("partitions_stopping", member=self.member, held=sorted(self.held))
            for held in self.held.values():
                held.drain()
            try:
                await self.bus.leave(self.registry, self.member)
            except BusError as exc:
                if not exc.retriable:
                    raise
                # Our heartbeat expires on its own; others just wait longer.
                log.warning("registry_leave_failed", error=f"{type(exc).__name__}: {exc}")
        log.info("partitions_stopped", member=self.member)
        self.stopped.set()

    async def _tick(self, nursery: trio.Nursery) -> None:
        try:
            await self.bus.heartbeat(self.registry, self.member, self.ttl_ms)
            members = await self.bus.live_members(self.registry)
        except BusError as exc:
            if not exc.retriable:
                raise
            # Held partitions keep running on their own renewals meanwhile.
            await self._tick_backoff.failed(exc)
            return
        self._tick_backoff.succeeded()
        if self.member not in members:
            members = sorted([*members, self.member])
        targets = targets_of(self.member, self.keys.partitions, members)
        for p, held in self.held.items():
            if p not in targets and not held.draining:
                log.info("partition_releasing", partition=p, members=len(members))
                held.drain()
        for p in sorted(targets - set(self.held)):
            if self._stopping:
                return
            try:
                lease = await self.bus.acquire_lease(self.keys.lease(p), self.member, self.ttl_ms)
            except BusError as exc:
                if not exc.retriable:
                    raise
                log.warning("lease_acquire_failed", partition=p, error=str(exc))
                return
            if lease is None:
                continue  # still held by its previous owner: it lets go or expires
            # The lease runs from before the request was sent (our clock).
            valid_until = trio.current_time() + self.ttl_ms / 1000
            held = _Held(p, lease)
            self.held[p] = held
            nursery.start_soon(self._own, held, valid_until)

    async def _own(self, held: _Held, valid_until: float) -> None:
        p = held.partition
        log.info("partition_acquired", partition=p, epoch=held.lease.epoch, member=self.member)
        released = False
        try:
            with held.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._renew, held, valid_until)
                    if self.partition_task is not None:
                        await nursery.start(self._side, held)
                    await self._work(held)
                    nursery.cancel_scope.cancel()
                if not held.lost:
                    # Drained: the entry in flight finished; give the lease up
                    # so the new owner need not wait for it to expire.
                    with trio.move_on_after(self.ttl_ms / 1000):
                        await self.bus.release_lease(held.lease)
                        released = True
        except BusError as exc:
            if not exc.retriable:
                raise
            log.warning("lease_release_failed", partition=p, error=str(exc))
        finally:
            del self.held[p]
            held.done.set()
        if released:
            log.info("partition_released", partition=p, epoch=held.lease.epoch)

    async def _side(
        self, held: _Held, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        assert self.partition_task is not None
        _current.set(held)  # this task only: current_lease() works in it too
        await self.partition_task(held.partition, task_status=task_status)

    async def _renew(self, held: _Held, valid_until: float) -> None:
        interval = self.ttl_ms / 3000
        # Give up a little before the lease runs out by our clock: the server's
        # clock and ours drift, and the next owner must never overlap with us.
        margin = self.ttl_ms / 10_000
        next_at = trio.current_time() + interval
        while True:
            await trio.sleep_until(next_at)
            sent = trio.current_time()
            ok: bool | None = None
            with trio.move_on_at(valid_until - margin):
                try:
                    ok = await self.bus.renew_lease(held.lease, self.ttl_ms)
                except BusError as exc:
                    if not exc.retriable:
                        raise
                    log.warning("lease_renew_failed", partition=held.partition, error=str(exc))
            if ok is True:
                valid_until = sent + self.ttl_ms / 1000
                next_at = sent + interval
            elif ok is False:
                held.lose("renewal refused")
                return
            elif trio.current_time() >= valid_until - margin:
                held.lose("renewal timed out")
                return
            else:
                next_at = trio.current_time() + min(interval, 0.1)  # retry soon

    async def _work(self, held: _Held) -> None:
        p = held.partition
        stream = self.stream_of(p)
        consumer = f"p{p}"
        process = self.process_for(consumer)
        _current.set(held)  # this task only: the handler runs in it
        backoff = Backoff("partition_read", actor=self.actor, partition=p)
        start = "0"
        seen: set[str] = set()
        while not held.draining:
            entries: list[Entry] = []
            with trio.CancelScope() as held.read_scope:
                try:
                    if start == "0":
                        # One at a time: a re-read counts a delivery, and only
                        # the entry about to be handled may be charged one
                        # (a poison entry's next owners must not push the
                        # entries behind it over ``max_deliveries`` too).
                        entries = await self.bus.read_group(
                            stream, self.group, consumer, start="0", count=1
                        )
                        fresh = [e for e in entries if e.id not in seen]
                        if fresh:
                            log.info("pending_redelivered", partition=p, count=len(fresh))
                        else:
                            # Empty, or only entries whose ack failed: read new
                            # ones rather than spin on them.
                            start = ">"
                        seen.update(e.id for e in fresh)
                        entries = fresh
                    else:
                        entries = await self.bus.read_group(
                            stream, self.group, consumer, start=">", block_ms=self.block_ms
                        )
                    backoff.succeeded()
                except BusError as exc:
                    if missing_group(exc):
                        await self.bus.ensure_group(stream, self.group)
                    else:
                        await backoff.failed(exc)
            held.read_scope = None
            for entry in entries:
                if held.draining:
                    break  # the rest stay pending on p{p} for the next owner
                await process(entry)
