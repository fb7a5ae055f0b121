"""The actor runtime on a MemoryBus: acks, redelivery, retries, dead letters.

Every test is bounded by ``trio.fail_after``; waits are on events (a handler
signalling, a blocking read of the dead-letter stream, ``wait_all_tasks_blocked``),
never on sleeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import pytest
import structlog
import trio
import trio.testing
from structlog.testing import capture_logs

from actors.runtime import Actor, Reclaim, dead_letter_stream, serve_actor
from bus.base import Bus, ConnectionLost, Entry
from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.memory import MemoryBus
from bus.messages import CallDtmf
from switchboard.testing import FaultyBus

KEYS = Keys(namespace="rt", partitions=2)
STREAM = "rt:{test}:in"
GROUP = "testers"


def envelope(n: int, call: str = "CA1") -> dict[str, str]:
    return Envelope(kind=Kind.CALL_DTMF, call=call, seq=n, turn=n, body={"n": n}).encode()


class Recorder(Actor):
    """Records what it handles; behaviour is set per test."""

    name = "recorder"
    group = GROUP
    keys = KEYS

    def __init__(self, concurrency: int = 1) -> None:
        self.concurrency = concurrency
        self.handled: list[tuple[Envelope, Entry, dict[str, Any]]] = []
        self.attempts = 0
        self.fail_first = 0  # raise on this many calls before succeeding
        self.gates: dict[int, trio.Event] = {}  # seq -> release, when gated
        self.started: list[int] = []
        self.started_event = trio.Event()

    def streams(self) -> Sequence[str]:
        return [STREAM]

    async def handle(self, env: Envelope, entry: Entry) -> None:
        self.attempts += 1
        self.started.append(env.seq)
        self.started_event.set()
        if self.attempts <= self.fail_first:
            raise RuntimeError(f"boom {self.attempts}")
        gate = self.gates.get(env.seq)
        if gate is not None:
            await gate.wait()
        self.handled.append((env, entry, structlog.contextvars.get_contextvars()))


async def test_entry_acked_only_after_handler_returns() -> None:
    bus = MemoryBus()
    actor = Recorder()
    actor.gates[1] = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="c1"))
            await bus.append(STREAM, envelope(1))
            await actor.started_event.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert await bus.pending_count(STREAM, GROUP) == 1
            actor.gates[1].set()
            await trio.testing.wait_all_tasks_blocked()
            assert await bus.pending_count(STREAM, GROUP) == 0
            nursery.cancel_scope.cancel()
    env, entry, context = actor.handled[0]
    assert env.seq == 1
    assert entry.stream == STREAM
    assert context == {"call_sid": "CA1", "actor": "recorder", "turn": 1}


async def test_pending_entries_are_reread_after_restart() -> None:
    bus = MemoryBus()
    first = Recorder()
    first.gates[1] = trio.Event()  # never set: the first incarnation dies mid-handle
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, first, consumer="worker-a"))
            await bus.append(STREAM, envelope(1))
            await first.started_event.wait()
            nursery.cancel_scope.cancel()
        assert first.handled == []
        assert await bus.pending_count(STREAM, GROUP) == 1

        second = Recorder()
        async with trio.open_nursery() as nursery:
            # Same consumer name: it owns the pending entry and re-reads it
            # before anything new.
            await nursery.start(partial(serve_actor, bus, second, consumer="worker-a"))
            await bus.append(STREAM, envelope(2))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert [env.seq for env, _, _ in second.handled] == [1, 2]
    assert second.handled[0][1].deliveries >= 2
    assert await bus.pending_count(STREAM, GROUP) == 0


async def test_malformed_entry_is_dead_lettered_and_acked() -> None:
    bus = MemoryBus()
    actor = Recorder()
    dead = dead_letter_stream(KEYS)
    assert dead == "rt:{dead}"
    with trio.fail_after(5), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="c1"))
            bad_id = await bus.append(STREAM, {"garbage": "yes"})
            await bus.append(STREAM, envelope(7))
            letters = await bus.read(dead, "0", block_ms=0)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert len(letters) == 1
    fields = letters[0].fields
    assert fields["garbage"] == "yes"
    assert fields["dead.id"] == bad_id
    assert fields["dead.stream"] == STREAM
    assert fields["dead.actor"] == "recorder"
    assert "not an envelope" in fields["dead.error"]
    assert await bus.pending_count(STREAM, GROUP) == 0
    # The good entry behind it is still handled.
    assert [env.seq for env, _, _ in actor.handled] == [7]
    malformed = [e for e in logs if e["event"] == "entry_malformed"]
    assert malformed and malformed[0]["entry_id"] == bad_id


async def test_failing_handler_is_retried_then_dead_lettered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    actor = Recorder()
    actor.fail_first = 100
    dead = dead_letter_stream(KEYS)
    with trio.fail_after(30), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="c1"))
            entry_id = await bus.append(STREAM, envelope(3))
            letters = await bus.read(dead, "0", block_ms=0)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert actor.attempts == 3
    assert len(letters) == 1
    fields = letters[0].fields
    assert fields["dead.id"] == entry_id
    assert fields["dead.error"] == "RuntimeError: boom 3"
    assert fields["dead.attempts"] == "3"
    assert Envelope.decode(fields).seq == 3  # original fields kept
    assert await bus.pending_count(STREAM, GROUP) == 0
    failures = [e for e in logs if e["event"] == "handler_failed"]
    assert [e["attempt"] for e in failures] == [1, 2, 3]
    assert all(e["exc_info"] for e in failures)  # logged with the traceback


async def test_handler_that_recovers_is_acked_without_dead_letter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    actor = Recorder()
    actor.fail_first = 2
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="c1"))
            await bus.append(STREAM, envelope(4))
            while not actor.handled:
                await actor.started_event.wait()
                actor.started_event = trio.Event()
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert actor.attempts == 3
    assert [env.seq for env, _, _ in actor.handled] == [4]
    assert await bus.last_id(dead_letter_stream(KEYS)) == "0-0"
    assert await bus.pending_count(STREAM, GROUP) == 0


async def test_concurrent_handlers_are_bounded_and_acked_one_by_one() -> None:
    bus = MemoryBus()
    actor = Recorder(concurrency=3)
    for seq in range(1, 6):
        actor.gates[seq] = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="c1"))
            # One batch, so one read takes all five and they all go pending.
            await bus.append_many([(STREAM, envelope(seq)) for seq in range(1, 6)])
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(actor.started) == [1, 2, 3]
            assert await bus.pending_count(STREAM, GROUP) == 5

            actor.gates[2].set()
            await trio.testing.wait_all_tasks_blocked()
            assert [env.seq for env, _, _ in actor.handled] == [2]
            assert await bus.pending_count(STREAM, GROUP) == 4
            assert sorted(actor.started) == [1, 2, 3, 4]  # the freed slot was taken

            for gate in actor.gates.values():
                gate.set()
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert sorted(env.seq for env, _, _ in actor.handled) == [1, 2, 3, 4, 5]
    assert await bus.pending_count(STREAM, GROUP) == 0


async def test_background_runs_with_the_actor() -> None:
    class WithBackground(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.bus_seen: Bus | None = None
            self.ran = trio.Event()

        async def background(
            self, bus: Bus, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            self.bus_seen = bus
            self.ran.set()
            task_status.started()
            await trio.sleep_forever()

    bus = MemoryBus()
    actor = WithBackground()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="c1"))
            await actor.ran.wait()
            nursery.cancel_scope.cancel()
    assert actor.bus_seen is bus
    assert actor.bus is bus


async def test_graceful_stop_finishes_handlers_in_flight_and_takes_nothing_new() -> None:
    bus = MemoryBus()
    actor = Recorder(concurrency=4)
    actor.gates[1] = trio.Event()
    stop = trio.Event()
    returned = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def run(task_status: trio.TaskStatus[None]) -> None:
                await serve_actor(bus, actor, consumer="c1", stop=stop, task_status=task_status)
                returned.set()

            await nursery.start(run)
            await bus.append(STREAM, envelope(1))
            await actor.started_event.wait()
            stop.set()
            await trio.testing.wait_all_tasks_blocked()
            # Still draining: the handler in flight holds the actor open.
            assert not returned.is_set()
            await bus.append(STREAM, envelope(2))
            await trio.testing.wait_all_tasks_blocked()
            assert actor.started == [1], "no new entry is taken after stop"
            actor.gates[1].set()
            await returned.wait()
    assert [env.seq for env, _, _ in actor.handled] == [1]
    # The finished entry is acked and the new one was never handed out: it
    # waits in the stream for another consumer.
    assert await bus.pending_count(STREAM, GROUP) == 0
    assert len(await bus.range(STREAM)) == 2


async def test_graceful_stop_is_bounded_by_the_drain_timeout(autojump_clock: object) -> None:
    bus = MemoryBus()
    actor = Recorder(concurrency=2)
    actor.gates[1] = trio.Event()  # never set: a handler stuck for good
    stop = trio.Event()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(serve_actor, bus, actor, consumer="c1", stop=stop, drain_timeout_s=3.0)
            )
            await bus.append(STREAM, envelope(1))
            await actor.started_event.wait()
            stopped_at = trio.current_time()
            stop.set()
        assert trio.current_time() - stopped_at >= 3.0
    # Cancelled past the bound: not acked, so another worker gets it.
    assert await bus.pending_count(STREAM, GROUP) == 1


class Reclaiming(Recorder):
    """A recorder that opted in to reclaiming a dead consumer's entries."""

    reclaim = Reclaim(idle_ms=3000, interval_s=1.0)


async def test_an_opted_in_actor_takes_over_entries_a_dead_consumer_left_pending(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    dead = Reclaiming()
    dead.gates[1] = trio.Event()  # never set: this worker dies mid-handle
    with trio.fail_after(60), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            dying = trio.CancelScope()

            async def doomed(task_status: trio.TaskStatus[None]) -> None:
                with dying:
                    await serve_actor(bus, dead, consumer="worker-a", task_status=task_status)

            await nursery.start(doomed)
            await bus.append(STREAM, envelope(1))
            await dead.started_event.wait()
            dying.cancel()
            alive = Reclaiming()
            await nursery.start(partial(serve_actor, bus, alive, consumer="worker-b"))
            await alive.started_event.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert await bus.pending_count(STREAM, GROUP) == 0
            nursery.cancel_scope.cancel()
    [(env, entry, _)] = alive.handled
    assert env.seq == 1 and entry.deliveries == 2
    [reclaimed] = [e for e in logs if e["event"] == "entry_reclaimed"]
    assert reclaimed["actor"] == "recorder" and reclaimed["entry_id"] == entry.id


async def test_a_long_handler_keeps_its_entry_from_being_reclaimed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    slow = Reclaiming()
    slow.gates[1] = trio.Event()
    other = Reclaiming()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, slow, consumer="worker-a"))
            await bus.append(STREAM, envelope(1))
            await slow.started_event.wait()
            # A second worker, looking for idle entries all along.
            await nursery.start(partial(serve_actor, bus, other, consumer="worker-b"))
            # Ten times the idle time: touches keep the entry worker-a's.
            await trio.sleep(30)
            slow.gates[1].set()
            await trio.testing.wait_all_tasks_blocked()
            assert await bus.pending_count(STREAM, GROUP) == 0
            nursery.cancel_scope.cancel()
    assert other.started == []
    assert [env.seq for env, _, _ in slow.handled] == [1]


async def test_actors_without_reclaim_leave_a_dead_consumers_entries_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    await bus.ensure_group(STREAM, GROUP)
    await bus.append(STREAM, envelope(1))
    await bus.read_group(STREAM, GROUP, "worker-a")  # taken, then its worker died
    actor = Recorder()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="worker-b"))
            await trio.sleep(30)
            nursery.cancel_scope.cancel()
    assert actor.started == []
    assert await bus.pending_count(STREAM, GROUP) == 1


class BodyChecker(Recorder):
    """Reads its entries as typed ``call.dtmf`` messages."""

    async def handle(self, env: Envelope, entry: Entry) -> None:
        self.attempts += 1
        CallDtmf.from_body(env.body)
        await super().handle(env, entry)


async def test_a_malformed_body_is_dead_lettered_at_once_without_retries() -> None:
    bus = MemoryBus()
    actor = BodyChecker()
    bad = Envelope(kind=Kind.CALL_DTMF, call="CA1", seq=1, body={"digit": 7}).encode()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="c1"))
            bad_id = await bus.append(STREAM, bad)
            [dead] = await bus.read(dead_letter_stream(KEYS), "0", block_ms=5000)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert actor.attempts == 1
    assert dead.fields["dead.id"] == bad_id
    assert dead.fields["dead.attempts"] == "1"
    assert "'digit'" in dead.fields["dead.error"]
    assert await bus.pending_count(STREAM, GROUP) == 0


async def test_an_actor_giving_up_writes_the_runtimes_dead_letter_record() -> None:
    bus = MemoryBus()
    retried = Recorder()
    retried.fail_first = 99
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, retried, consumer="c1", max_attempts=1))
            await bus.append(STREAM, envelope(1))
            [by_runtime] = await bus.read(dead_letter_stream(KEYS), "0", block_ms=5000)
            nursery.cancel_scope.cancel()
    giving_up = Recorder()
    giving_up.attach(bus)
    giving_up.consumer = "c1"
    entry = Entry(STREAM, "1-1", envelope(1), deliveries=1)
    dead_id = await giving_up.dead_letter(entry, "RuntimeError: boom 1", attempts=1)
    [by_actor] = await bus.range(dead_letter_stream(KEYS), dead_id, dead_id)
    differing = {
        k
        for k in by_runtime.fields.keys() | by_actor.fields.keys()
        if by_runtime.fields.get(k) != by_actor.fields.get(k)
    }
    assert differing <= {"dead.id", "dead.ts", "d"}


async def test_the_actor_is_ready_only_once_its_background_is() -> None:
    class SlowStart(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.release = trio.Event()

        async def background(
            self, bus: Bus, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            await self.release.wait()
            task_status.started()
            await trio.sleep_forever()

    bus = MemoryBus()
    actor = SlowStart()
    ready = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                await nursery.start(partial(serve_actor, bus, actor, consumer="c1"))
                ready.set()

            nursery.start_soon(run)
            await bus.ensure_group(STREAM, GROUP)
            await bus.append(STREAM, envelope(1))
            await trio.testing.wait_all_tasks_blocked()
            assert not ready.is_set() and actor.started == []
            actor.release.set()
            await ready.wait()
            await actor.started_event.wait()
            nursery.cancel_scope.cancel()
    assert actor.started == [1]


class Outage(Recorder):
    """Fails its first calls the way a handler does while the bus is away."""

    def __init__(self, outages: int, grouped: bool) -> None:
        super().__init__()
        self.outages = outages
        self.grouped = grouped

    async def handle(self, env: Envelope, entry: Entry) -> None:
        if self.attempts < self.outages:
            self.attempts += 1
            lost = ConnectionLost("connection to redis lost")
            # A handler's own nursery wraps it in a group: same thing.
            raise ExceptionGroup("in a nursery", [lost]) if self.grouped else lost
        await super().handle(env, entry)


@pytest.mark.parametrize("grouped", [False, True])
async def test_a_bus_outage_uses_up_no_attempts(
    autojump_clock: trio.testing.MockClock, grouped: bool
) -> None:
    bus = MemoryBus()
    actor = Outage(outages=10, grouped=grouped)  # more outages than attempts
    with trio.fail_after(60), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="c1", max_attempts=2))
            await bus.append(STREAM, envelope(5))
            while not actor.handled:
                await actor.started_event.wait()
                actor.started_event = trio.Event()
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert [env.seq for env, _, _ in actor.handled] == [5]
    assert await bus.last_id(dead_letter_stream(KEYS)) == "0-0"
    assert await bus.pending_count(STREAM, GROUP) == 0
    assert not [e for e in logs if e["event"] == "handler_failed"]
    assert [e["event"] for e in logs if e["event"].startswith("bus_") and "loop" in e] == [
        "bus_unavailable",
        "bus_recovered",
    ]


async def test_a_bus_outage_at_start_up_is_waited_out(autojump_clock: object) -> None:
    # A cluster failover under way when a worker starts (CLUSTERDOWN on the
    # group's creation) must not end the process: it starts once the bus is back.
    bus = FaultyBus(MemoryBus())
    bus.fail_before("ensure_group", error=ConnectionLost("CLUSTERDOWN"), times=3)
    actor = Recorder()
    with trio.fail_after(60), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="c1"))
            await bus.append(STREAM, envelope(1))
            while not actor.handled:
                await actor.started_event.wait()
                await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert [env.seq for env, _, _ in actor.handled] == [1]
    events = [e["event"] for e in logs]
    assert events.count("bus_unavailable") == 1 and "bus_recovered" in events
