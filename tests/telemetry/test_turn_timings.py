"""Per-turn timings of a simulated call in the dev composition (memory bus, one process).

Real sockets, so real time: the test waits for the call's summary, never
sleeps, and asserts order (each stage at or after the previous), not durations.
"""

from __future__ import annotations

import trio
from prometheus_client.parser import text_string_to_metric_families

from actors.telemetry import TIMELINE, TelemetryActor, TelemetryConfig
from bus.memory import MemoryBus
from switchboard.metrics_http import fetch, serve_metrics
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.twilio import open_call

PROMPTS = ["Hello there.", "Tell me more.", "Thanks, bye."]


def _settings() -> Settings:
    return Settings.from_env({"SWITCHBOARD_PORT": "0", "SWITCHBOARD_PARTITIONS": "4"})


async def test_turn_timings_are_complete_ordered_and_exposed() -> None:
    settings = _settings()
    bus = MemoryBus()
    telemetry = TelemetryActor(TelemetryConfig(keys=settings.keys))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await start_dev(nursery, settings, bus, telemetry=telemetry)
            async with open_call(f"http://127.0.0.1:{port}") as call:
                for text in PROMPTS:
                    await call.prompt(text)
                    await call.reply()
                call_sid = call.call_sid
            summary = await telemetry.wait_summary(call_sid)
            status, text = await fetch("127.0.0.1", port, "/metrics")
            nursery.cancel_scope.cancel()

    turns = sorted(summary.turns.values(), key=lambda t: t.reply_to)
    assert [t.turn for t in turns] == [1, 2, 3]
    for turn in turns:
        assert turn.complete, f"turn {turn.turn} misses {set(TIMELINE) - set(turn.t_ms)}"
        times = [turn.t_ms[name] for name in TIMELINE]
        assert times == sorted(times), f"turn {turn.turn} out of order: {turn.offsets_ms()}"
        assert turn.usage is not None and turn.usage.output_tokens > 0
    fields = summary.fields()
    assert fields["outcome"] == "completed"
    assert fields["turns"] == fields["turns_complete"] == 3
    assert fields["interruptions"] == 0
    assert fields["duration_s"] is not None and fields["duration_s"] >= 0

    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("switchboard_turn_first_token_seconds_count", ())] == 3
    for stage in ("gateway_to_conversation", "llm_queue", "provider_first_token", "reply_playout"):
        assert samples[("switchboard_turn_stage_seconds_count", (("stage", stage),))] == 3
    assert samples[("switchboard_calls_total", (("outcome", "completed"),))] == 1
    # The gateway's own metrics are on the same page.
    assert samples[("switchboard_gateway_frames_in_total", (("type", "prompt"),))] == 3
    assert ("switchboard_bus_pending", (("group", "conversation"),)) in samples


async def test_interrupt_is_counted_and_the_call_still_summarised() -> None:
    settings = _settings()
    bus = MemoryBus()
    telemetry = TelemetryActor(TelemetryConfig(keys=settings.keys))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await start_dev(nursery, settings, bus, telemetry=telemetry)
            async with open_call(f"http://127.0.0.1:{port}") as call:
                await call.prompt("Say something long.")
                await call.reply()
                await call.interrupt("Say", 120.0)
                await call.prompt("Never mind.")
                await call.reply()
                call_sid = call.call_sid
            summary = await telemetry.wait_summary(call_sid)
            nursery.cancel_scope.cancel()
    assert summary.interruptions == 1
    assert summary.fields()["turns"] == 2


async def test_actor_metrics_server_serves_metrics_and_health() -> None:
    telemetry = TelemetryActor(TelemetryConfig())
    telemetry.metrics.interruptions.inc()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_metrics, "127.0.0.1", 0, [telemetry.registry])
            status, body = await fetch("127.0.0.1", port, "/metrics")
            health = await fetch("127.0.0.1", port, "/healthz")
            missing = await fetch("127.0.0.1", port, "/nope")
            nursery.cancel_scope.cancel()
    assert status == 200
    assert "switchboard_interruptions_total 1.0" in body
    assert health == (200, "ok\n")
    assert missing[0] == 404
