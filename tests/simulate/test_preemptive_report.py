"""The simulator's response latency with preemptive replies on.

Twilio's frames carry no ``reply_to``, so the simulator measures a turn from
the final prompt it sent to the first ``text`` frame after it. An adopted
reply was started on an interim prompt (its ``reply_to`` is that one's seq)
and is held until the final prompt: the report must count it as the final's
reply, heard sooner than the model's time to first token, with no frame
outside its turn. When the final prompt's words differ (every utterance's
last interim word misheard), nothing held is heard and each reply waits
the model's full time. Dev composition, scripted provider, Trio's virtual
clock.
"""

from __future__ import annotations

import trio

from bus.memory import MemoryBus
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.simulate import run_simulation
from switchboard.twilio.results import SimulationConfig, SimulationResult
from switchboard.twilio.scenario import Say, Scenario

TOKEN = "preemptive-report-token"
TTFT_MS = 600.0


async def _simulate(partial_changes: float) -> SimulationResult:
    settings = Settings.from_env(
        {
            "TWILIO_AUTH_TOKEN": TOKEN,
            "SWITCHBOARD_PORT": "0",
            "SWITCHBOARD_PARTITIONS": "2",
            "SWITCHBOARD_PARTIAL_PROMPTS": "true",
            # About speculation itself: a loaded test machine must not shed it.
            "SWITCHBOARD_SPECULATION_MAX_LAG_MS": "0",
            "SWITCHBOARD_SILENCE_REPROMPT_S": "0",
            "SWITCHBOARD_FILLER_AFTER_S": "0",
            "SWITCHBOARD_WELCOME_GREETING": "",
            "SWITCHBOARD_SCRIPTED_FIRST_TOKEN_MS": str(TTFT_MS),
            "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "20",
        }
    )
    scenario = Scenario(
        turns=(Say("I would like a table for two tonight.", speech_ms=2000), Say("Thanks.")),
        partials=True,
        partial_changes=partial_changes,
        think_ms=500,
        strict_turns=True,
    )
    async with trio.open_nursery() as nursery:
        port = await start_dev(nursery, settings, MemoryBus())
        config = SimulationConfig(
            url=f"http://127.0.0.1:{port}",
            calls=3,
            concurrency=3,
            auth_token=TOKEN,
            seed=5,
            provider_ttft_ms=TTFT_MS,
        )
        result = await run_simulation(config, scenario)
        nursery.cancel_scope.cancel()
    return result


async def test_an_adopted_reply_counts_from_the_final_prompt(
    autojump_clock: trio.abc.Clock,
) -> None:
    result = await _simulate(partial_changes=0.0)
    assert result.problems == 0, result.to_json()["violations"]
    firsts = result.first_token_ms()
    assert len(firsts) == 6
    # 0 on the virtual clock: a reply held whole is released with the final prompt.
    assert all(0 <= ms < TTFT_MS - 100 for ms in firsts), firsts


async def test_a_changed_final_waits_the_models_time(autojump_clock: trio.abc.Clock) -> None:
    result = await _simulate(partial_changes=1.0)
    assert result.problems == 0, result.to_json()["violations"]
    firsts = result.first_token_ms()
    assert len(firsts) == 6
    assert all(ms > TTFT_MS - 0.001 for ms in firsts), firsts  # float sums of the clock
