"""Facts publishing and the telemetry join, on synthetic facts (no sockets)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from actors.telemetry import TIMELINE, TelemetryActor, TelemetryConfig
from bus.base import Entry
from bus.envelope import Envelope
from bus.facts import FactPublisher, fact_envelope
from bus.keys import Keys
from bus.memory import MemoryBus
from bus.messages import Fact
from switchboard.settings import Settings, SettingsError


async def test_publisher_never_blocks_and_counts_what_it_drops(autojump_clock: object) -> None:
    keys = Keys(namespace="facts")
    bus = MemoryBus()
    publisher = FactPublisher(bus, keys, capacity=3)
    for n in range(5):  # nobody drains yet: emit must not block
        publisher.emit("prompt_received", call="CA1", reply_to=n)
    assert publisher.dropped == 2
    async with trio.open_nursery() as nursery:
        await nursery.start(publisher.serve)
        await trio.testing.wait_all_tasks_blocked()  # the queue is drained
        nursery.cancel_scope.cancel()
    assert publisher.published == 3
    written = [Envelope.decode(e.fields) for e in await bus.range(keys.events)]
    assert [e.body["reply_to"] for e in written] == [0, 1, 2]
    assert all(e.kind == "event" and isinstance(e.body["t_ms"], float) for e in written)


def _feed(actor: TelemetryActor, env: Envelope) -> None:
    actor.apply(env, Fact.from_body(env.body))


def test_join_survives_out_of_order_and_duplicate_facts() -> None:
    actor = TelemetryActor(TelemetryConfig())
    ctx = {"call": "CA1", "session": "VX1"}
    _feed(actor, fact_envelope("call_started", t_ms=1000.0, **ctx))
    # The LLM's facts arrive with its result, after the gateway's first token.
    order = ["prompt_received", "prompt_applied", "first_token_sent", "request_taken"]
    order += ["provider_first_token", "prompt_applied", "last_token_sent"]
    times = {name: 1000.0 + 10 * i for i, name in enumerate(TIMELINE)}
    with capture_logs() as logs:
        for name in order:
            turn = 1 if name != "prompt_received" else 7  # the gateway's own count loses
            _feed(actor, fact_envelope(name, t_ms=times[name], turn=turn, reply_to=2, **ctx))
        _feed(actor, fact_envelope("call_ended", t_ms=2000.0, code=1000, **ctx))
        _feed(actor, fact_envelope("prompt_received", t_ms=3000.0, reply_to=9, **ctx))
    (summary,) = actor.summaries
    (turn,) = summary.turns.values()
    assert turn.complete and turn.turn == 1
    assert [turn.t_ms[n] for n in TIMELINE] == sorted(times.values())
    lines = [line for line in logs if line["event"] == "call_summary"]
    assert len(lines) == 1
    assert lines[0]["duration_s"] == 1.0 and lines[0]["outcome"] == "completed"
    assert lines[0]["turns"] == lines[0]["turns_complete"] == 1
    assert not actor.calls, "facts after the summary are ignored"


async def test_handle_reads_events_from_the_bus_entry() -> None:
    actor = TelemetryActor(TelemetryConfig(max_calls=1))
    for call in ("CA1", "CA2"):
        env = fact_envelope("call_started", call=call, t_ms=5.0)
        await actor.handle(env, Entry("s", "1-0", env.encode()))
    # Only one call is tracked at once: the oldest is summarised as evicted.
    assert [s.call for s in actor.summaries] == ["CA1"]
    assert actor.summaries[0].outcome == "evicted"


def test_metrics_port_setting() -> None:
    assert Settings.from_env({}).metrics_port is None
    assert Settings.from_env({"SWITCHBOARD_METRICS_PORT": "9100"}).metrics_port == 9100
    with pytest.raises(SettingsError, match="SWITCHBOARD_METRICS_PORT"):
        Settings.from_env({"SWITCHBOARD_METRICS_PORT": "nine"})
