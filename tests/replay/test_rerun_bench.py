"""``replay --rerun`` tells the truth: an unchanged build re-says every recorded call.

The bench scenarios (``bench/scenarios``, sped up: same turns, barge-ins, key
presses and pauses, faster speech) plus a call that stays silent until the
agent re-prompts and one whose key press ends by the idle timer are run
against the dev composition with the demo's tools (the agent may hang up and
press keys). Every recorded call is then re-run through today's conversation
actor: 0 differences each, and the recorded timers fire in the re-run. A
changed re-prompt is found, and the command exits 1 on any difference.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from actors.telemetry import TelemetryActor, TelemetryConfig
from bus.envelope import Kind
from bus.memory import MemoryBus
from switchboard.ops.recording import load_call
from switchboard.ops.replay import run_replay
from switchboard.ops.rerun import format_rerun, rerun
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.simulate import run_simulation
from switchboard.twilio.results import SimulationConfig
from switchboard.twilio.scenario import parse_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "scenarios"
# The agent speaks this short greeting, so silence after it re-prompts soon.
SETTINGS = {
    "SWITCHBOARD_PORT": "0",
    "SWITCHBOARD_PARTITIONS": "4",
    "SWITCHBOARD_WELCOME_GREETING": "Hi.",
    "SWITCHBOARD_TOOLS": "end_call,send_digits",
    "SWITCHBOARD_SILENCE_REPROMPT_S": "0.1",
    # Speech is heard at once (instant playback reports it): a goodbye after
    # one re-prompt would end the call before the silent caller speaks.
    "SWITCHBOARD_SILENCE_MAX_REPROMPTS": "3",
    "SWITCHBOARD_DTMF_IDLE_S": "0.1",
}
SILENT = {"name": "silent", "turns": [{"pause_ms": 700}, {"say": "Sorry, I am here."}]}
KEYPAD = {"name": "keypad", "turns": [{"say": "Hello."}, {"dtmf": "5"}, {"pause_ms": 400}]}


def _sped_up(raw: dict[str, object]) -> dict[str, object]:
    """The scenario with fast speech and short pauses; its turns unchanged."""
    turns = [
        {
            k: (min(v, 50) if k == "speech_ms" and isinstance(v, int | float) else v)
            for k, v in t.items()
        }
        for t in raw["turns"]  # type: ignore[attr-defined]
    ]
    return {**raw, "wpm": 3000, "think_ms": 20, "jitter": 0, "turns": turns}


@asynccontextmanager
async def _dev(settings: Settings, bus: MemoryBus) -> AsyncIterator[tuple[int, TelemetryActor]]:
    telemetry = TelemetryActor(TelemetryConfig(keys=settings.keys))
    async with trio.open_nursery() as nursery:
        port = await start_dev(nursery, settings, bus, telemetry=telemetry)
        yield port, telemetry
        nursery.cancel_scope.cancel()


async def _record(settings: Settings, bus: MemoryBus) -> list[str]:
    """Run every scenario (two calls each) and return the recorded calls' sids."""
    scenarios = [_sped_up(json.loads(p.read_text())) for p in sorted(SCENARIOS.glob("*.json"))]
    scenarios += [SILENT, KEYPAD]
    sids: list[str] = []
    async with _dev(settings, bus) as (port, telemetry):
        config = SimulationConfig(url=f"http://127.0.0.1:{port}", calls=2, concurrency=2)
        async with trio.open_nursery() as nursery:

            async def one(raw: dict[str, object]) -> None:
                result = await run_simulation(config, parse_scenario(raw))
                sids.extend(c.call_sid for c in result.calls if c.call_sid)

            for raw in scenarios:
                nursery.start_soon(one, raw)
        for sid in sids:
            await telemetry.wait_summary(sid)  # everything of the call is on the bus
    assert len(sids) == 2 * len(scenarios)
    return sids


async def test_an_unchanged_build_re_says_every_recorded_call() -> None:
    settings = Settings.from_env(SETTINGS)
    bus = MemoryBus()
    with trio.fail_after(100):
        sids = await _record(settings, bus)
        fired: dict[str, int] = {}
        for sid in sids:
            rec = await load_call(bus, settings.keys, sid)
            fired[sid] = len(rec.of_kind(Kind.CONVERSATION_TIMER))
            report = await rerun(rec, settings.conversation_config())
            assert report.differences == [], format_rerun(report)
            out = io.StringIO()
            code = await run_replay(
                bus, settings.keys, sid, rerun_config=settings.conversation_config(), out=out
            )
            assert code == 0 and out.getvalue().rstrip().endswith("no differences")
    # The recording has timers (silence re-prompts, a key entry ended by the idle
    # timer, the wait for a superseded reply), so the re-run had to fire them.
    assert sum(fired.values()) >= 4


async def test_a_changed_re_prompt_is_a_difference_and_exits_1() -> None:
    settings = Settings.from_env(SETTINGS)
    bus = MemoryBus()
    with trio.fail_after(60):
        async with _dev(settings, bus) as (port, telemetry):
            config = SimulationConfig(url=f"http://127.0.0.1:{port}")
            result = await run_simulation(config, parse_scenario(SILENT))
            sid = result.calls[0].call_sid
            await telemetry.wait_summary(sid)
        rec = await load_call(bus, settings.keys, sid)
        changed = dataclasses.replace(settings.conversation_config(), reprompt_text="Hello?")
        report = await rerun(rec, changed)
        out = io.StringIO()
        code = await run_replay(bus, settings.keys, sid, rerun_config=changed, out=out)
    names = [c.name for c in report.differences]
    assert "said before the first turn" in names
    assert code == 1 and "DIFF  said before the first turn" in out.getvalue()
