"""Interim prompts on their way to the bus (gateway/interim.py, gateway/publish.py).

The rules are pure and tested synchronously; the publisher is tested on a
memory bus whose appends a test can hold (``FaultyBus.stall``), so "an append
is in flight" is a state the test reaches, not a race it hopes to win.
"""

from __future__ import annotations

from typing import Any

import trio
from trio.testing import wait_all_tasks_blocked

from bus.envelope import Envelope
from bus.facts import FactPublisher
from bus.memory import MemoryBus
from gateway.config import GatewayConfig
from gateway.context import GatewayContext
from gateway.interim import InterimGate, InterimOutcome
from gateway.metrics import GatewayMetrics
from gateway.publish import CallerEvents
from gateway.session import Outgoing, Session
from relay import Dtmf, InboundMessage, Interrupt, Prompt, RelayConnection, Setup
from switchboard.testing import FaultyBus

Q, R, S = InterimOutcome.QUEUED, InterimOutcome.REPLACED, InterimOutcome.SUPERSEDED


def test_kept_interims_wait_and_the_newest_replaces_the_waiting_one() -> None:
    gate: InterimGate[str] = InterimGate()
    assert gate.interim("hello", "e1") == [Q]
    assert gate.interim("hello there", "e2") == [Q, R]
    assert gate.take() == "e2"
    assert gate.take() is None


def test_the_same_words_twice_are_published_once() -> None:
    gate: InterimGate[str] = InterimGate()
    assert gate.interim("hello  there", "e1") == [Q]
    assert gate.take() == "e1"
    assert gate.interim(" hello there ", "e2") == [InterimOutcome.REPEATED]
    assert gate.waiting is None


def test_a_final_prompt_drops_the_waiting_interim_and_ends_the_utterance() -> None:
    gate: InterimGate[str] = InterimGate()
    gate.interim("hello", "e1")
    assert gate.final() == [S]
    assert gate.waiting is None
    assert gate.final() == []  # nothing waits
    # A new utterance may repeat the last words of the previous one.
    assert gate.interim("hello", "e2") == [Q]


def test_an_interrupt_or_key_keeps_the_waiting_interim_but_forgets_the_words() -> None:
    gate: InterimGate[str] = InterimGate()
    gate.interim("hello", "e1")
    gate.broken()
    assert gate.waiting == "e1"  # still published, before the event
    assert gate.take() == "e1"
    assert gate.interim("hello", "e2") == [Q]  # the conversation forgot them


def test_unused_interims_are_never_published() -> None:
    gate: InterimGate[str] = InterimGate(enabled=False)
    assert gate.interim("hello", "e1") == [InterimOutcome.UNUSED]
    assert gate.waiting is None


# -- the publisher ------------------------------------------------------------------


def _is_interim(stream: str, fields: Any) -> bool:
    env = Envelope.decode(fields)
    return env.kind == "call.prompt" and env.body["last"] is False


class Caller:
    """One session's reader, played by the test: stamps each frame and publishes it."""

    def __init__(self, bus: FaultyBus, *, interim_prompts: bool = True) -> None:
        config = GatewayConfig(gateway_id="gw-t", interim_prompts=interim_prompts)
        self.ctx = GatewayContext(bus, config, GatewayMetrics(), FactPublisher(bus, config.keys))
        outbox, _ = trio.open_memory_channel[Outgoing](1)
        self.session = Session(None, RelayConnection(), outbox)  # type: ignore[arg-type]
        self.session.call_sid, self.session.session_id = "CA1", "VX1"
        self.events = CallerEvents(self.ctx, self.session, interim_prompts=interim_prompts)
        self.stream = config.keys.calls_for("CA1")

    async def say(self, msg: InboundMessage) -> None:
        self.session.seq += 1
        await self.events.publish(msg)

    def count(self, outcome: str) -> float:
        value = self.ctx.metrics.registry.get_sample_value(
            "switchboard_gateway_interim_prompts_total", {"outcome": outcome}
        )
        return value or 0.0


def _setup() -> Setup:
    return Setup(session_id="VX1", call_sid="CA1", account_sid="AC1")


async def _published(bus: FaultyBus, stream: str) -> list[tuple[int, str]]:
    out = []
    for entry in await bus.range(stream, "-", "+"):
        env = Envelope.decode(entry.fields)
        out.append((env.seq, str(env.body.get("voicePrompt", env.body.get("type")))))
    return out


async def test_while_an_interim_is_in_flight_only_the_latest_waits_and_a_final_drops_it(
    nursery: trio.Nursery,
) -> None:
    bus = FaultyBus(MemoryBus())
    caller = Caller(bus)
    nursery.start_soon(caller.events.run)
    with trio.fail_after(5):
        await caller.say(_setup())
        held = bus.stall("append", when=_is_interim)
        await caller.say(Prompt("I want", "en-US", False))
        await held.reached.wait()  # its append is in flight
        await caller.say(Prompt("I want to", "en-US", False))
        await caller.say(Prompt("I want to pay", "en-US", False))  # replaces "I want to"
        final_sent = trio.Event()

        async def final() -> None:
            await caller.say(Prompt("I want to pay.", "en-US", True))
            final_sent.set()

        nursery.start_soon(final)
        await wait_all_tasks_blocked()
        assert not final_sent.is_set()  # behind the interim in flight
        held.release()
        await final_sent.wait()
    assert await _published(bus, caller.stream) == [
        (1, "setup"),
        (2, "I want"),
        (5, "I want to pay."),
    ]
    assert (caller.count("published"), caller.count("replaced")) == (1, 1)
    assert caller.count("superseded") == 1


async def test_an_interrupt_or_key_follows_the_waiting_interim(nursery: trio.Nursery) -> None:
    bus = FaultyBus(MemoryBus())
    caller = Caller(bus)
    nursery.start_soon(caller.events.run)
    with trio.fail_after(5):
        await caller.say(_setup())
        held = bus.stall("append", when=_is_interim)
        await caller.say(Prompt("wait", "en-US", False))
        await held.reached.wait()
        await caller.say(Prompt("wait a", "en-US", False))
        async with trio.open_nursery() as inner:
            inner.start_soon(caller.say, Interrupt("Your order", 400))
            await wait_all_tasks_blocked()
            held.release()
        await caller.say(Dtmf("5"))
        await caller.say(Prompt("wait a", "en-US", False))  # the interrupt reset the words
        await wait_all_tasks_blocked()  # appended
        await caller.say(Prompt("wait a second", "en-US", True))
    assert await _published(bus, caller.stream) == [
        (1, "setup"),
        (2, "wait"),
        (3, "wait a"),
        (4, "interrupt"),
        (5, "dtmf"),
        (6, "wait a"),
        (7, "wait a second"),
    ]


async def test_repeated_interims_cost_one_append(nursery: trio.Nursery) -> None:
    bus = FaultyBus(MemoryBus())
    caller = Caller(bus)
    nursery.start_soon(caller.events.run)
    with trio.fail_after(5):
        await caller.say(_setup())
        await caller.say(Prompt("yes", "en-US", False))
        await wait_all_tasks_blocked()  # appended
        await caller.say(Prompt(" yes", "en-US", False))
        await caller.say(Prompt("yes", "en-US", True))
    assert await _published(bus, caller.stream) == [(1, "setup"), (2, "yes"), (4, "yes")]
    assert (caller.count("published"), caller.count("repeated")) == (1, 1)


async def test_unused_interims_cost_no_append(nursery: trio.Nursery) -> None:
    bus = FaultyBus(MemoryBus())
    caller = Caller(bus, interim_prompts=False)
    nursery.start_soon(caller.events.run)
    with trio.fail_after(5):
        await caller.say(_setup())
        await caller.say(Prompt("yes", "en-US", False))
        await caller.say(Prompt("yes please", "en-US", False))
        await caller.say(Prompt("yes please", "en-US", True))
    assert await _published(bus, caller.stream) == [(1, "setup"), (4, "yes please")]
    assert caller.count("unused") == 2
