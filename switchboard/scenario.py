"""Play a scenario's caller turns on one simulated call.

The scenario format is the one ``switchboard simulate`` reads (its module
docstring has every key), and ``switchboard replay CALLSID --export FILE``
writes it from a recorded call::

    {"name": "booking", "lang": "en-US",
     "turns": [{"say": "I'd like a table.", "think_ms": 600},
               {"say": "For four.", "interrupt_after": 2},
               {"dtmf": "12#"},
               {"pause_ms": 1500}]}

``play_scenario`` drives one ``SimulatedCall`` through the turns: a ``say``
prompts and waits for the whole reply, or, with ``interrupt_after: N``, for
N ``text`` frames and then barges in with the words received so far; a
``dtmf`` presses each key. With ``pace=True`` the recorded pauses are kept
(``think_ms`` and ``speech_ms`` before a ``say``, ``pause_ms``): sleeping is
what pacing means here, not a way to wait for something.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from relay import Text
from switchboard.simulator import Reply, SimulatedCall


class ScenarioError(ValueError):
    """A scenario file that cannot be played."""


def read_scenario(path: str | Path) -> dict[str, Any]:
    """Read a JSON scenario file (as ``replay --export`` writes it)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("turns"), list):
        raise ScenarioError(f"{path} is not a scenario (no turns list)")
    return data


async def play_scenario(
    call: SimulatedCall, scenario: Mapping[str, Any], *, pace: bool = False
) -> list[Reply]:
    """Play ``scenario``'s turns on ``call``; every reply received (partial if cut)."""
    replies: list[Reply] = []
    lang = str(scenario.get("lang", "en-US"))
    for turn in scenario.get("turns", []):
        if "say" in turn:
            if pace:
                await trio.sleep((turn.get("think_ms", 0) + turn.get("speech_ms", 0)) / 1000)
            await call.prompt(str(turn["say"]), lang=lang)
            cut = turn.get("interrupt_after")
            if cut is None:
                replies.append(await call.reply())
                continue
            frames: list[Text] = []
            while len(frames) < int(cut):
                msg = await call.next_message()
                if isinstance(msg, Text):
                    frames.append(msg)
                    if msg.last:
                        break
            replies.append(Reply(tuple(frames)))
            await call.interrupt("".join(f.token for f in frames), 0.0)
        elif "dtmf" in turn:
            for digit in str(turn["dtmf"]):
                await call.dtmf(digit)
        elif "pause_ms" in turn:
            if pace:
                await trio.sleep(float(turn["pause_ms"]) / 1000)
        else:
            raise ScenarioError(f"a turn needs say, dtmf or pause_ms: {turn!r}")
    return replies
