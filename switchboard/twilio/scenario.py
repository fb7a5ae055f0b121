"""Scenarios: what a simulated caller does, read from a file (the one reader).

``switchboard simulate`` plays one on many calls, ``switchboard replay
--export`` writes one from a recorded call, and :func:`play_scenario` plays
one on a single call. Files are JSON, or TOML with the same keys:


Scenario files (JSON, or TOML with the same keys)::

    {
      "name": "booking",            # optional, for the report
      "wpm": 160,                   # caller speaking rate: speech time per utterance
      "think_ms": 600,              # pause after a reply before the caller speaks
      "dtmf_gap_ms": 250,           # between two key presses
      "jitter": 0.2,                # +-20 % random spread on every pause (seeded)
      "partials": false,            # send interim prompts while the caller speaks
                                    # (every ~250 ms; the final ~500 ms after the last)
      "partial_changes": 0.0,       # share of utterances whose last interim prompt
                                    # had the last word wrong (the final corrects it)
      "repeat": 1,                  # play the turn list this many times per call
      "lang": "en-US",
      "strict_turns": false,        # true: app text outside a turn is a violation
      "turns": [                    # each turn has exactly one of say / dtmf / pause_ms
        {"say": "I would like to book a table."},
        {"say": "For four people.", "interrupt_after": 2},   # barge in after 2 text frames
        {"dtmf": "12#"},
        {"pause_ms": 1500},
        {"say": "Thanks.", "think_ms": 0, "speech_ms": 400}   # per-turn overrides
      ]
    }

An interrupted reply is fenced: the caller sends ``interrupt`` with the last
words received so far, and the next ``say`` follows after its speech time (the
caller is already talking, so no think time). Frames that arrive between the
interrupt and that prompt were in flight and are counted, not faulted.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from relay import Text, dtmf
from switchboard.twilio.call import SimulatedCall
from switchboard.twilio.reply import Reply


class ScenarioError(ValueError):
    """A scenario file is not usable; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class Say:
    """The caller says ``text`` (a final prompt after its speech time)."""

    text: str
    speech_ms: float | None = None  # None: words / wpm
    think_ms: float | None = None  # None: the scenario's think_ms
    interrupt_after: int | None = None  # barge in after this many text frames
    partials: bool | None = None


@dataclass(frozen=True, slots=True)
class Dtmf:
    """The caller presses ``digits``, one key at a time."""

    digits: str


@dataclass(frozen=True, slots=True)
class Pause:
    """The caller stays silent for ``ms``."""

    ms: float


Turn = Say | Dtmf | Pause


@dataclass(frozen=True, slots=True)
class Scenario:
    """What every simulated call does (see the module docstring for the file form)."""

    turns: tuple[Turn, ...]
    name: str = "scenario"
    wpm: float = 160.0
    think_ms: float = 600.0
    dtmf_gap_ms: float = 250.0
    jitter: float = 0.0
    partials: bool = False
    partial_changes: float = 0.0
    repeat: int = 1
    lang: str = "en-US"
    # Text the app sends outside any turn (a silence re-prompt, a tool's goodbye)
    # is normal in ConversationRelay; with strict_turns it is a violation.
    strict_turns: bool = False

    @property
    def prompts_per_call(self) -> int:
        return self.repeat * sum(1 for t in self.turns if isinstance(t, Say))

    def speech_ms(self, turn: Say) -> float:
        """How long the caller speaks ``turn`` (words at ``wpm``, unless set)."""
        if turn.speech_ms is not None:
            return turn.speech_ms
        return len(turn.text.split()) * 60_000 / self.wpm


_TOP_KEYS: Final = {
    "name", "wpm", "think_ms", "dtmf_gap_ms", "jitter", "partials", "repeat", "lang", "turns",
    "strict_turns", "partial_changes",
}  # fmt: skip
_SAY_KEYS: Final = {"say", "speech_ms", "think_ms", "interrupt_after", "partials"}


def _number(where: str, value: object, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScenarioError(f"{where} must be a number, got {value!r}")
    if value < minimum:
        raise ScenarioError(f"{where} must be >= {minimum:g}, got {value!r}")
    return float(value)


def _bool(where: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(f"{where} must be true or false, got {value!r}")
    return value


def _turn(where: str, raw: object) -> Turn:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where} must be an object, got {type(raw).__name__}")
    actions = [k for k in ("say", "dtmf", "pause_ms") if k in raw]
    if len(actions) != 1:
        raise ScenarioError(f"{where} needs exactly one of say, dtmf, pause_ms; got {actions}")
    action = actions[0]
    allowed = _SAY_KEYS if action == "say" else {action}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {unknown} for a {action} turn")
    if action == "pause_ms":
        return Pause(_number(f"{where}.pause_ms", raw["pause_ms"]))
    if action == "dtmf":
        digits = raw["dtmf"]
        if not isinstance(digits, str) or not dtmf.is_keys(digits):
            raise ScenarioError(f"{where}.dtmf must be phone keys (0-9 * #), got {digits!r}")
        return Dtmf(digits)
    text = raw["say"]
    if not isinstance(text, str) or not text.strip():
        raise ScenarioError(f"{where}.say must be a non-empty string, got {text!r}")
    interrupt_after = raw.get("interrupt_after")
    if interrupt_after is not None and (
        isinstance(interrupt_after, bool)
        or not isinstance(interrupt_after, int)
        or interrupt_after < 1
    ):
        raise ScenarioError(
            f"{where}.interrupt_after must be a whole number >= 1, got {interrupt_after!r}"
        )
    return Say(
        text=text.strip(),
        speech_ms=_number(f"{where}.speech_ms", raw["speech_ms"]) if "speech_ms" in raw else None,
        think_ms=_number(f"{where}.think_ms", raw["think_ms"]) if "think_ms" in raw else None,
        interrupt_after=interrupt_after,
        partials=_bool(f"{where}.partials", raw["partials"]) if "partials" in raw else None,
    )


def parse_scenario(data: object, *, source: str = "scenario") -> Scenario:
    """Validate a decoded scenario document. Raises :class:`ScenarioError`."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: the top level must be an object")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ScenarioError(f"{source}: unknown key(s) {unknown}")
    turns_raw = data.get("turns")
    if not isinstance(turns_raw, list) or not turns_raw:
        raise ScenarioError(f"{source}: 'turns' must be a non-empty list")
    turns = tuple(_turn(f"{source}: turns[{i}]", t) for i, t in enumerate(turns_raw))
    if not any(isinstance(t, Say) for t in turns):
        raise ScenarioError(f"{source}: 'turns' has no 'say' turn, so nothing is measured")
    repeat = data.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ScenarioError(f"{source}: repeat must be a whole number >= 1, got {repeat!r}")
    jitter = _number(f"{source}: jitter", data.get("jitter", 0.0))
    if jitter >= 1:
        raise ScenarioError(f"{source}: jitter must be below 1, got {jitter!r}")
    name = data.get("name", Path(source).stem)
    lang = data.get("lang", "en-US")
    if not isinstance(name, str) or not isinstance(lang, str) or not lang:
        raise ScenarioError(f"{source}: name and lang must be strings")
    wpm = _number(f"{source}: wpm", data.get("wpm", 160.0), minimum=1.0)
    partial_changes = _number(f"{source}: partial_changes", data.get("partial_changes", 0.0))
    if partial_changes > 1:
        raise ScenarioError(
            f"{source}: partial_changes must be between 0 and 1, got {partial_changes!r}"
        )
    return Scenario(
        turns=turns,
        name=name,
        wpm=wpm,
        think_ms=_number(f"{source}: think_ms", data.get("think_ms", 600.0)),
        dtmf_gap_ms=_number(f"{source}: dtmf_gap_ms", data.get("dtmf_gap_ms", 250.0)),
        jitter=jitter,
        partials=_bool(f"{source}: partials", data.get("partials", False)),
        partial_changes=partial_changes,
        repeat=repeat,
        lang=lang,
        strict_turns=_bool(f"{source}: strict_turns", data.get("strict_turns", False)),
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario from a ``.json`` or ``.toml`` file. Raises :class:`ScenarioError`."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        if p.suffix.lower() == ".toml":
            data: object = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{p}: not valid {p.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    return parse_scenario(data, source=str(p))


def scenario_to_data(scenario: Scenario) -> dict[str, Any]:
    """The file form of ``scenario`` (what ``parse_scenario`` reads back); defaults left out."""
    data: dict[str, Any] = {"name": scenario.name}
    defaults = Scenario(turns=())
    for key in (
        "wpm",
        "think_ms",
        "dtmf_gap_ms",
        "jitter",
        "partials",
        "partial_changes",
        "repeat",
        "strict_turns",
    ):
        if getattr(scenario, key) != getattr(defaults, key):
            data[key] = getattr(scenario, key)
    data["lang"] = scenario.lang
    data["turns"] = [_turn_to_data(turn) for turn in scenario.turns]
    return data


def _turn_to_data(turn: Turn) -> dict[str, Any]:
    if isinstance(turn, Dtmf):
        return {"dtmf": turn.digits}
    if isinstance(turn, Pause):
        return {"pause_ms": _plain(turn.ms)}
    data: dict[str, Any] = {"say": turn.text}
    for key in ("think_ms", "speech_ms", "interrupt_after", "partials"):
        value = getattr(turn, key)
        if value is not None:
            data[key] = _plain(value)
    return data


def _plain(value: object) -> object:
    """A whole number of milliseconds as an int (``250``, not ``250.0``)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


async def play_scenario(
    call: SimulatedCall, scenario: Scenario, *, pace: bool = False
) -> list[Reply]:
    """Play ``scenario``'s turns once on ``call``; every reply received (partial if cut).

    A ``say`` prompts and waits for the whole reply, or, with
    ``interrupt_after: N``, for N ``text`` frames and then barges in with the
    words received so far; a ``dtmf`` presses each key. With ``pace`` the
    pauses are kept (think and speech time before a ``say``, ``pause_ms``):
    sleeping is what pacing means here, not a way to wait for something.
    """
    replies: list[Reply] = []
    for turn in scenario.turns:
        if isinstance(turn, Say):
            if pace:
                think = scenario.think_ms if turn.think_ms is None else turn.think_ms
                await trio.sleep((think + scenario.speech_ms(turn)) / 1000)
            await call.prompt(turn.text, lang=scenario.lang)
            if turn.interrupt_after is None:
                replies.append(await call.reply())
                continue
            frames: list[Text] = []
            while len(frames) < turn.interrupt_after:
                msg = await call.next_message()
                if isinstance(msg, Text):
                    frames.append(msg)
                    if msg.last:
                        break
            replies.append(Reply(tuple(frames)))
            await call.interrupt("".join(f.token for f in frames), 0.0)
        elif isinstance(turn, Dtmf):
            for digit in turn.digits:
                await call.dtmf(digit)
        elif pace:
            await trio.sleep(turn.ms / 1000)
    return replies
