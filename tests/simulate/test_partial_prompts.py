"""The simulator sends partial prompts as Twilio does.

``plan_partials`` (pure): interim prompts on 250 ms ticks with the words
spoken so far (when they changed), the last one when speech ends, the final 500 ms
later; the last interim text equals the final unless its last word was
misheard. End to end, a load run with partials against the dev
composition: the app receives the interim prompts, cumulative, before each
final, both kinds of utterance occur, and the run is clean.
"""

from __future__ import annotations

import itertools

import trio

from bus.envelope import Envelope
from bus.memory import MemoryBus
from bus.messages import CallPrompt, decode
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.simulate import run_simulation
from switchboard.twilio.partials import misheard, plan_partials
from switchboard.twilio.results import SimulationConfig
from switchboard.twilio.scenario import Say, Scenario, ScenarioError, parse_scenario

TOKEN = "partials-token"
TEXT = "I would like to book a table for four people tonight."


def test_interim_prompts_every_250_ms_and_the_final_500_ms_after_the_last() -> None:
    plan = plan_partials(TEXT, 3000.0)
    times = [t for t, _ in plan.partials]
    # On the 250 ms ticks at which a new word was heard.
    assert all(t % 250.0 == 0 for t in times[:-1]) and times == sorted(set(times))
    assert len(times) >= 3000 / 250 * 0.75
    assert times[-1] == 3000.0 and times[-2] < 3000.0
    assert plan.final_at_ms == 3500.0
    texts = [text for _, text in plan.partials]
    # Cumulative: each one the start of the utterance, growing, never empty.
    for earlier, later in itertools.pairwise(texts):
        assert later.startswith(earlier) and len(later) > len(earlier)
    assert texts[0] and TEXT.startswith(texts[0])
    assert texts[-1] == plan.final == TEXT


def test_a_changed_last_word_is_corrected_by_the_final() -> None:
    plan = plan_partials(TEXT, 3000.0, changed=True)
    last = plan.partials[-1][1]
    assert last != TEXT and plan.final == TEXT
    assert last.split()[:-1] == TEXT.split()[:-1]
    assert last.split()[-1] == "tonights."
    assert misheard("tables") == "table" and misheard("?") == "?s"


def test_a_short_utterance_still_gets_one_interim_prompt() -> None:
    plan = plan_partials("Yes.", 200.0)
    assert plan.partials == ((200.0, "Yes."),) and plan.final_at_ms == 700.0


def test_partial_changes_is_a_share() -> None:
    base = {"turns": [{"say": "a b"}], "partials": True}
    assert parse_scenario({**base, "partial_changes": 0.25}).partial_changes == 0.25
    for bad in (1.5, -0.1, "some"):
        try:
            parse_scenario({**base, "partial_changes": bad})
        except ScenarioError as exc:
            assert "partial_changes" in str(exc)
        else:
            raise AssertionError(f"accepted partial_changes={bad!r}")


async def test_a_load_run_sends_twilio_like_partials_and_stays_clean() -> None:
    settings = Settings.from_env(
        {
            "TWILIO_AUTH_TOKEN": TOKEN,
            "SWITCHBOARD_PORT": "0",
            "SWITCHBOARD_PARTITIONS": "2",
            "SWITCHBOARD_PARTIAL_PROMPTS": "true",
            # About speculation itself: a loaded test machine must not shed it.
            "SWITCHBOARD_SPECULATION_MAX_LAG_MS": "0",
        }
    )
    scenario = Scenario(
        turns=(Say("When do you open on Sunday?", speech_ms=600), Say("Thanks a lot.")),
        partials=True,
        partial_changes=0.5,
        think_ms=0,
        repeat=3,
    )
    bus = MemoryBus()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            port = await start_dev(nursery, settings, bus)
            config = SimulationConfig(
                url=f"http://127.0.0.1:{port}", calls=4, concurrency=4, auth_token=TOKEN, seed=3
            )
            result = await run_simulation(config, scenario)
            prompts: list[tuple[str, CallPrompt]] = []
            for p in range(2):
                for entry in await bus.range(settings.keys.calls(p)):
                    env = Envelope.decode(entry.fields)
                    message = decode(env)
                    if isinstance(message, CallPrompt):
                        prompts.append((env.call, message))
            nursery.cancel_scope.cancel()
    assert result.problems == 0, result.to_json()["violations"]
    assert result.counts()["replies_complete"] == 4 * 6
    same = changed = 0
    calls = {call for call, _ in prompts}
    assert len(calls) == 4
    for call in calls:
        interim: list[str] = []
        for _, prompt in [(c, m) for c, m in prompts if c == call]:
            if not prompt.last:
                interim.append(prompt.voice_prompt)
                continue
            assert interim, "a final prompt without interim prompts before it"
            words = prompt.voice_prompt.split()
            for earlier in interim[:-1]:
                assert prompt.voice_prompt.startswith(earlier)
            last = interim[-1]
            if last == prompt.voice_prompt:
                same += 1
            else:
                assert last.split()[:-1] == words[:-1]
                changed += 1
            interim = []
    assert same + changed == 4 * 6
    assert same > 0 and changed > 0
