"""``run_simulation_processes``: the calls driven from several client processes, merged.

Two real client processes against the dev composition served by this test
(gateway + actors on a MemoryBus, real sockets): every call of the run is
played once, by exactly one client, with the pacing of its index, and the
merged report holds every sample.
"""

from __future__ import annotations

from pathlib import Path

import trio

from bus.memory import MemoryBus
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.simulate import run_simulation_processes
from switchboard.testing.procs import HANG_GUARD_S
from switchboard.twilio.results import SimulationConfig

TOKEN = "simulate-token"
SMOKE = Path(__file__).resolve().parents[2] / "bench" / "scenarios" / "smoke.json"


async def test_two_client_processes_play_every_call_once_and_merge_every_sample() -> None:
    settings = Settings.from_env(
        {
            "TWILIO_AUTH_TOKEN": TOKEN,
            "SWITCHBOARD_PORT": "0",
            "SWITCHBOARD_PARTITIONS": "4",
            "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "5",
        }
    )
    bus = MemoryBus()
    with trio.fail_after(HANG_GUARD_S):
        async with trio.open_nursery() as nursery:
            port = await start_dev(nursery, settings, bus)
            config = SimulationConfig(
                url=f"http://127.0.0.1:{port}", calls=5, concurrency=4, auth_token=TOKEN, seed=7
            )
            result = await run_simulation_processes(config, SMOKE, 2)
            nursery.cancel_scope.cancel()
    assert result.problems == 0, result.to_json()["violations"]
    assert [c.index for c in result.calls] == [0, 1, 2, 3, 4]
    assert len({c.call_sid for c in result.calls}) == 5  # five distinct calls
    counts = result.counts()
    assert counts["calls_completed"] == 5
    assert counts["prompts_sent"] == counts["prompts_planned"] == 5 * 4
    assert counts["replies_complete"] == 5 * 3
    assert 2 <= counts["peak_open_calls"] <= 4  # two clients, two at once each
    assert counts["interrupted"] == 5
    doc = result.to_json()
    # Percentiles over the merged raw samples: one per prompt of every client.
    assert doc["latency_ms"]["first_token"]["n"] == counts["prompts_sent"]
    assert len(doc["samples"]) == counts["prompts_sent"]
    assert doc["config"]["client_processes"] == 2
    assert len(result.client_cpu_s) == 2 and all(c > 0 for c in result.client_cpu_s)
