"""``switchboard.simulate`` end to end against the dev composition in this process.

The whole system (gateway + actors on a MemoryBus, real sockets on port 0)
takes a handful of signed calls with an interruption and DTMF; the run must
come back clean: every reply complete, no protocol violation, no lost,
misordered or leaked token, every planned prompt and key press sent.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import trio

from bus.memory import MemoryBus
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.simulate import run_simulation
from switchboard.twilio import report
from switchboard.twilio.results import SimulationConfig
from switchboard.twilio.scenario import load_scenario

TOKEN = "simulate-token"
SMOKE = Path(__file__).resolve().parents[2] / "bench" / "scenarios" / "smoke.json"


async def test_simulate_against_dev_is_clean() -> None:
    settings = Settings.from_env(
        {
            "TWILIO_AUTH_TOKEN": TOKEN,
            "SWITCHBOARD_PORT": "0",
            "SWITCHBOARD_PARTITIONS": "4",
            # Paced tokens, so the interruption lands mid-reply.
            "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "5",
        }
    )
    scenario = load_scenario(SMOKE)
    bus = MemoryBus()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            port = await start_dev(nursery, settings, bus)
            config = SimulationConfig(
                url=f"http://127.0.0.1:{port}", calls=6, concurrency=3, auth_token=TOKEN, seed=7
            )
            result = await run_simulation(config, scenario)
            nursery.cancel_scope.cancel()
    counts = result.counts()
    assert result.problems == 0, result.to_json()["violations"]
    assert counts["calls_completed"] == 6
    assert counts["prompts_sent"] == counts["prompts_planned"] == 6 * 4
    assert counts["interrupted"] == 6
    assert counts["replies_complete"] == 6 * 3
    assert counts["dtmf_sent"] == 6 * 3
    assert counts["peak_open_calls"] == 3  # the concurrency bound, reached
    for name in ("protocol_violations", "missing_last", "lost_tokens", "misordered_tokens"):
        assert counts[name] == 0
    assert counts["fenced_leaks"] == 0
    doc = result.to_json()
    assert doc["latency_ms"]["first_token"]["n"] == counts["prompts_sent"]
    assert doc["latency_ms"]["turn"]["n"] == counts["replies_complete"]
    json.dumps(doc)  # serialisable as is
    ET.fromstring(result.svg())
    assert "prompt -> first token" in report.render_table(doc)
