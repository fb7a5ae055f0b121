"""Scenario files: the documented schema parses, bad files fail with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from switchboard.twilio.scenario import (
    Dtmf,
    Pause,
    Say,
    ScenarioError,
    load_scenario,
    parse_scenario,
)

SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "scenarios"


def test_full_json_scenario(tmp_path: Path) -> None:
    path = tmp_path / "book.json"
    path.write_text(
        json.dumps(
            {
                "name": "book",
                "wpm": 120,
                "think_ms": 500,
                "dtmf_gap_ms": 100,
                "jitter": 0.25,
                "partials": True,
                "repeat": 3,
                "lang": "en-GB",
                "turns": [
                    {"say": " Book a table. "},
                    {"say": "For four.", "interrupt_after": 2, "think_ms": 0, "speech_ms": 300},
                    {"dtmf": "12#*"},
                    {"pause_ms": 1500},
                ],
            }
        )
    )
    s = load_scenario(path)
    assert s.name == "book" and s.lang == "en-GB" and s.repeat == 3 and s.partials
    assert s.turns == (
        Say("Book a table."),
        Say("For four.", speech_ms=300, think_ms=0, interrupt_after=2),
        Dtmf("12#*"),
        Pause(1500),
    )
    assert s.prompts_per_call == 6
    # Three words at 120 words a minute take 1.5 s; an explicit speech_ms wins.
    assert s.speech_ms(s.turns[0]) == pytest.approx(1500)  # type: ignore[arg-type]
    assert s.speech_ms(s.turns[1]) == 300  # type: ignore[arg-type]


def test_toml_scenario_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "short.toml"
    path.write_text('[[turns]]\nsay = "Hello."\n\n[[turns]]\ndtmf = "5"\n')
    s = load_scenario(path)
    assert s.name == "short"  # from the file name
    assert s.turns == (Say("Hello."), Dtmf("5"))
    assert (s.wpm, s.think_ms, s.repeat, s.jitter, s.partials) == (160.0, 600.0, 1, 0.0, False)


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.json")), ids=lambda p: p.name)
def test_shipped_examples_parse(path: Path) -> None:
    assert load_scenario(path).prompts_per_call >= 1


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "top level must be an object"),
        ({"turns": []}, "'turns' must be a non-empty list"),
        ({"turns": [{"say": "hi"}], "colour": 1}, "unknown key(s) ['colour']"),
        ({"turns": [{"dtmf": "1"}]}, "has no 'say' turn"),
        ({"turns": [{"say": "hi", "dtmf": "1"}]}, "turns[0] needs exactly one of"),
        ({"turns": [{"wait": 3}]}, "turns[0] needs exactly one of"),
        ({"turns": [{"say": ""}]}, "turns[0].say must be a non-empty string"),
        ({"turns": [{"say": "a"}, {"dtmf": "12x"}]}, "turns[1].dtmf must be phone keys"),
        ({"turns": [{"say": "a", "interrupt_after": 0}]}, "interrupt_after must be a whole"),
        ({"turns": [{"say": "a", "speech_ms": -1}]}, "turns[0].speech_ms must be >= 0"),
        ({"turns": [{"say": "a", "speech_ms": "fast"}]}, "speech_ms must be a number"),
        ({"turns": [{"pause_ms": 5, "say": "a"}]}, "needs exactly one of"),
        ({"turns": [{"dtmf": "1", "think_ms": 3}, {"say": "a"}]}, "unknown key(s) ['think_ms']"),
        ({"turns": [{"say": "a"}], "repeat": 0}, "repeat must be a whole number >= 1"),
        ({"turns": [{"say": "a"}], "jitter": 1.5}, "jitter must be below 1"),
        ({"turns": [{"say": "a"}], "wpm": 0}, "wpm must be >= 1"),
        ({"turns": [{"say": "a"}], "partials": "yes"}, "partials must be true or false"),
    ],
)
def test_bad_scenarios_name_the_problem(doc: object, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(doc, source="bad.json")
    assert message in str(info.value)
    assert str(info.value).startswith("bad.json")


def test_bad_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ScenarioError, match=r"broken\.json: not valid json"):
        load_scenario(broken)
    bad_toml = tmp_path / "broken.toml"
    bad_toml.write_text("turns = [")
    with pytest.raises(ScenarioError, match=r"broken\.toml: not valid toml"):
        load_scenario(bad_toml)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.json")
