"""Partition ownership on a MemoryBus with the autojump clock.

Rendezvous assignment (pure), then ``PartitionManager`` workers sharing one
bus: splitting, dying without releasing, losing a lease mid-handler, fenced
writes, and the graceful stop through ``serve_actor``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import pytest
import trio
import trio.testing

from actors.partitions import (
    PartitionManager,
    Process,
    assignment,
    current_lease,
    lease_lost,
    owner_of,
    targets_of,
)
from actors.runtime import Actor, serve_actor
from bus.base import Entry, Lease
from bus.envelope import Envelope
from bus.keys import Keys
from bus.memory import MemoryBus

KEYS = Keys(namespace="pt", partitions=8)
GROUP = "conversation"
TTL_MS = 5000


# -- rendezvous ---------------------------------------------------------------


def test_every_partition_has_exactly_one_owner_whatever_the_member_order() -> None:
    members = ["w-a", "w-b", "w-c"]
    plan = assignment(64, members)
    assert sorted(p for ps in plan.values() for p in ps) == list(range(64))
    assert assignment(64, list(reversed(members))) == plan
    for m in members:
        assert targets_of(m, 64, members) == plan[m]
    assert owner_of(3, []) is None


def test_spread_is_even() -> None:
    members = [f"worker-{i}" for i in range(4)]
    counts = [len(ps) for ps in assignment(1024, members).values()]
    assert all(0.8 * 256 <= c <= 1.2 * 256 for c in counts), counts
    small = [len(ps) for ps in assignment(32, ["w1", "w2", "w3"]).values()]
    assert all(c >= 5 for c in small), small


def test_leave_moves_only_the_leavers_partitions() -> None:
    members = [f"worker-{i}" for i in range(5)]
    before = assignment(256, members)
    after = assignment(256, [m for m in members if m != "worker-2"])
    for m in after:
        assert before[m] <= after[m]  # nobody loses anything
    gained = set().union(*(after[m] - before[m] for m in after))
    assert gained == before["worker-2"]


def test_join_moves_only_what_the_joiner_takes() -> None:
    members = [f"worker-{i}" for i in range(4)]
    before = assignment(256, members)
    after = assignment(256, [*members, "worker-new"])
    for m in members:
        assert after[m] <= before[m]  # only losses, and only to the joiner
    lost = set().union(*(before[m] - after[m] for m in members))
    assert lost == after["worker-new"]
    assert 256 / 5 * 0.6 <= len(lost) <= 256 / 5 * 1.4


# -- managers on a MemoryBus ----------------------------------------------------


class Handled:
    """What each worker handled: (worker, consumer, stream, n, epoch)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, int]] = []
        self.gates: dict[str, trio.Event] = {}  # n -> released when set
        self.cancelled: list[str] = []
        self.changed = trio.Event()

    def process_for(self, worker: str, bus: MemoryBus) -> Callable[[str], Process]:
        def make(consumer: str) -> Process:
            async def process(entry: Entry) -> None:
                n = entry.fields["n"]
                lease = current_lease()
                assert lease is not None
                try:
                    if n in self.gates:
                        await self.gates[n].wait()
                    state_key = entry.stream.replace(":calls", ":state:x")
                    if not await bus.set_if_lease(state_key, f"{worker}:{n}", lease):
                        await lease_lost()
                except trio.Cancelled:
                    self.cancelled.append(n)
                    raise
                await bus.ack(entry.stream, GROUP, [entry.id])
                self.rows.append((worker, consumer, entry.stream, n, lease.epoch))
                self.changed.set()
                self.changed = trio.Event()

            return process

        return make

    def by(self, n: str) -> tuple[str, str, str, str, int]:
        return next(r for r in self.rows if r[3] == n)


async def until(cond: Callable[[], bool], step: float = 0.05) -> None:
    """Wait for a condition on the virtual clock (callers bound it with fail_after)."""
    while True:
        if cond():
            return
        await trio.sleep(step)


class Cluster:
    def __init__(self, bus: MemoryBus, nursery: trio.Nursery, handled: Handled) -> None:
        self.bus = bus
        self.nursery = nursery
        self.handled = handled
        self.managers: dict[str, PartitionManager] = {}
        self.scopes: dict[str, trio.CancelScope] = {}

    async def start(self, worker: str) -> PartitionManager:
        manager = PartitionManager(
            self.bus,
            keys=KEYS,
            group=GROUP,
            member=worker,
            stream_of=KEYS.calls,
            process_for=self.handled.process_for(worker, self.bus),
            lease_ttl_ms=TTL_MS,
        )
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[None]) -> None:
            with scope:
                await manager.serve(task_status=task_status)

        await self.nursery.start(run)
        self.managers[worker] = manager
        self.scopes[worker] = scope
        return manager

    def kill(self, worker: str) -> None:
        """Die without releasing anything (as kill -9)."""
        self.scopes.pop(worker).cancel()
        self.managers.pop(worker)

    def settled(self) -> bool:
        members = sorted(self.managers)
        return all(
            m.owned == targets_of(name, KEYS.partitions, members)
            for name, m in self.managers.items()
        )


async def setup_streams(bus: MemoryBus) -> None:
    for stream in KEYS.all_calls():
        await bus.ensure_group(stream, GROUP)


async def append(bus: MemoryBus, partition: int, n: str) -> str:
    return await bus.append(KEYS.calls(partition), {"n": n})


async def test_two_then_three_workers_split_the_partitions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    await setup_streams(bus)
    handled = Handled()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            cluster = Cluster(bus, nursery, handled)
            first = await cluster.start("w1")
            assert first.owned == set(range(KEYS.partitions))  # alone: owns everything
            await cluster.start("w2")
            await until(cluster.settled)
            assert cluster.managers["w1"].owned.isdisjoint(cluster.managers["w2"].owned)
            await cluster.start("w3")
            await until(cluster.settled)
            for p in range(KEYS.partitions):
                await append(bus, p, f"e{p}")
            await until(lambda: len(handled.rows) == KEYS.partitions)
            members = sorted(cluster.managers)
            for p in range(KEYS.partitions):
                worker, consumer, stream, _, _ = handled.by(f"e{p}")
                assert (worker, consumer, stream) == (owner_of(p, members), f"p{p}", KEYS.calls(p))
            nursery.cancel_scope.cancel()


async def test_a_dead_workers_partitions_are_taken_after_the_ttl_with_their_pending_entries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    await setup_streams(bus)
    handled = Handled()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            cluster = Cluster(bus, nursery, handled)
            for w in ("w1", "w2", "w3"):
                await cluster.start(w)
            await until(cluster.settled)
            victim_parts = sorted(cluster.managers["w2"].owned)
            assert victim_parts
            p = victim_parts[0]
            handled.gates["stuck"] = trio.Event()
            await append(bus, p, "stuck")
            await until(lambda: bus_pending(bus, p) == 1)
            old_epoch = current_epoch(bus, p)
            killed_at = trio.current_time()
            cluster.kill("w2")
            handled.gates["stuck"].set()  # the new owner's handler may proceed
            await until(
                lambda: all(
                    any(q in m.owned for m in cluster.managers.values()) for q in victim_parts
                )
            )
            taken_after = trio.current_time() - killed_at
            assert taken_after <= TTL_MS / 1000 + 2
            # The entry the dead worker never acked is handled by the new owner
            # (same consumer p{p}: it inherited the pending list), under a new epoch.
            await until(lambda: any(r[3] == "stuck" for r in handled.rows))
            worker, consumer, _, _, epoch = handled.by("stuck")
            assert worker != "w2" and consumer == f"p{p}"
            assert epoch > old_epoch
            assert await bus.get(KEYS.calls(p).replace(":calls", ":state:x")) == f"{worker}:stuck"
            nursery.cancel_scope.cancel()


def bus_pending(bus: MemoryBus, partition: int) -> int:
    stream = bus._streams.get(KEYS.calls(partition))
    return len(stream.groups[GROUP].pending) if stream is not None else 0


def current_epoch(bus: MemoryBus, partition: int) -> int:
    return bus._epochs[KEYS.lease(partition)]


async def steal(bus: MemoryBus, partition: int, owner: str) -> Lease:
    """Take partition's lease away from ``owner`` (as if it had expired and been taken)."""
    await bus.release_lease(Lease(KEYS.lease(partition), owner, current_epoch(bus, partition)))
    thief = await bus.acquire_lease(KEYS.lease(partition), "thief", 60_000)
    assert thief is not None
    return thief


async def test_a_lost_lease_cancels_the_partitions_work_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    await setup_streams(bus)
    handled = Handled()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            cluster = Cluster(bus, nursery, handled)
            worker = await cluster.start("w1")
            handled.gates["slow"] = trio.Event()  # never set: the handler stays in flight
            await append(bus, 2, "slow")
            await until(lambda: bus_pending(bus, 2) == 1)
            lost_at = trio.current_time()
            await steal(bus, 2, "w1")
            # The next renewal (ttl/3) is refused and the handler is cancelled.
            await until(lambda: handled.cancelled == ["slow"])
            assert trio.current_time() - lost_at <= TTL_MS / 3000 + 0.1
            assert 2 not in worker.owned
            assert bus_pending(bus, 2) == 1  # not acked: the next owner gets it
            assert {0, 1, 3} <= worker.owned  # other partitions carry on
            nursery.cancel_scope.cancel()


async def test_a_fenced_write_stops_the_partition_without_acking(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    await setup_streams(bus)
    handled = Handled()
    state_key = KEYS.calls(5).replace(":calls", ":state:x")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            cluster = Cluster(bus, nursery, handled)
            worker = await cluster.start("w1")
            handled.gates["late"] = trio.Event()
            await append(bus, 5, "late")
            await until(lambda: bus_pending(bus, 5) == 1)
            # A stall: the lease moves on before the handler writes.
            thief = await steal(bus, 5, "w1")
            assert await bus.set_if_lease(state_key, "thief:new", thief)
            handled.gates["late"].set()
            await until(lambda: handled.cancelled == ["late"])
            assert await bus.get(state_key) == "thief:new"  # the late write was refused
            assert 5 not in worker.owned
            assert bus_pending(bus, 5) == 1
            assert handled.rows == []
            nursery.cancel_scope.cancel()


class Slow(Actor):
    """A partitioned actor whose handler waits for a gate, then writes fenced."""

    name = "slow"
    group = GROUP
    keys = KEYS
    partitioned = True

    def __init__(self, gate: trio.Event) -> None:
        self.gate = gate
        self.started = trio.Event()
        self.done: list[str] = []

    def streams(self) -> Sequence[str]:
        return self.keys.all_calls()

    async def handle(self, env: Envelope, entry: Entry) -> None:
        self.started.set()
        await self.gate.wait()
        lease = current_lease()
        assert lease is not None
        if not await self.bus.set_if_lease(self.keys.state(env.call), "done", lease):
            await lease_lost()
        self.done.append(entry.id)


async def test_graceful_stop_finishes_in_flight_releases_leases_and_leaves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    gate = trio.Event()
    actor = Slow(gate)
    stop = trio.Event()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(serve_actor, bus, actor, consumer="w1", lease_ttl_ms=TTL_MS, stop=stop)
            )
            assert await bus.live_members(KEYS.members(GROUP)) == ["w1"]
            call = "CA-graceful"
            entry_id = await bus.append(
                KEYS.calls_for(call), Envelope(kind="call.prompt", call=call).encode()
            )
            await actor.started.wait()
            stop.set()
            await trio.sleep(1)  # stopping waits for the handler in flight
            gate.set()
        # serve_actor returned on its own: the entry was acked, nothing pending.
        assert actor.done == [entry_id]
        assert await bus.pending_count(KEYS.calls_for(call), GROUP) == 0
        assert await bus.live_members(KEYS.members(GROUP)) == []
        # Every lease was released: another worker takes one at once.
        for p in range(KEYS.partitions):
            assert await bus.acquire_lease(KEYS.lease(p), "next", TTL_MS) is not None


@pytest.mark.parametrize("ttl", [0, 29])
def test_tiny_ttls_are_refused(ttl: int) -> None:
    with pytest.raises(ValueError):
        PartitionManager(
            MemoryBus(),
            keys=KEYS,
            group=GROUP,
            member="w",
            stream_of=KEYS.calls,
            process_for=lambda c: Handled().process_for("w", MemoryBus())(c),
            lease_ttl_ms=ttl,
        )
