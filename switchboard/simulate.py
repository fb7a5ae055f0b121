"""``switchboard simulate``: many Twilio-faithful calls at once, checked and measured.

Each call is a :func:`switchboard.simulator.open_call` (signed webhook and
upgrade when an auth token is given, every app frame validated like Twilio
does) driven by a *scenario*: what the caller says, how fast, when they press
keys and when they barge in. Every call is checked for:

- protocol violations: any invalid app frame (the simulator's own validation);
- replies that never end with ``last: true`` (the turn times out or the session
  closes first);
- with ``content="scripted"`` (the default; the scripted provider's reply is
  known from the prompt): lost or misordered tokens inside a reply, and tokens
  of a fenced turn that arrive after a newer prompt was sent.

and measured per turn: first-token latency (final prompt sent -> first
``text`` frame off the socket) and turn latency (-> the ``last: true`` frame).
``overhead`` is first-token latency minus the provider's configured time to
first token (``SimulationConfig.provider_ttft_ms``).

Scenario files (JSON, or TOML with the same keys)::

    {
      "name": "booking",            # optional, for the report
      "wpm": 160,                   # caller speaking rate: speech time per utterance
      "think_ms": 600,              # pause after a reply before the caller speaks
      "dtmf_gap_ms": 250,           # between two key presses
      "jitter": 0.2,                # +-20 % random spread on every pause (seeded)
      "partials": false,            # send interim prompts while the caller speaks
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

import dataclasses
import json
import math
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import tomllib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import structlog
import trio

from actors.providers.scripted import TOOL_LEAD_IN, scripted_tool_use
from relay import Prompt, Text, dtmf
from relay.twiml import TwimlError
from switchboard import gcpause, report
from switchboard.outfile import is_stdout
from switchboard.simulator import (
    SessionClosed,
    SimulatedCall,
    SimulatorError,
    open_call,
)

__all__ = [
    "CallResult",
    "Dtmf",
    "Pause",
    "Say",
    "Scenario",
    "ScenarioError",
    "SimulationConfig",
    "SimulationResult",
    "TurnResult",
    "check_scripted_reply",
    "load_scenario",
    "parse_scenario",
    "run_simulation",
    "run_simulation_processes",
]

log = structlog.get_logger()

MAX_EXAMPLES: Final = 20


# --------------------------------------------------------------------------- scenarios


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
    "strict_turns",
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
    return Scenario(
        turns=turns,
        name=name,
        wpm=wpm,
        think_ms=_number(f"{source}: think_ms", data.get("think_ms", 600.0)),
        dtmf_gap_ms=_number(f"{source}: dtmf_gap_ms", data.get("dtmf_gap_ms", 250.0)),
        jitter=jitter,
        partials=_bool(f"{source}: partials", data.get("partials", False)),
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


# --------------------------------------------------------------------------- checks

_SCRIPTED: Final = re.compile(
    r"You said: (?P<said>.*)\. That was message (?P<n>\d+) from you\.", re.DOTALL
)


_BUILT_IN_TOOLS = [{"name": name} for name in TOOL_LEAD_IN]


def check_scripted_reply(prompt: str, reply: str, *, complete: bool = True) -> str | None:
    """None if ``reply`` is what the scripted provider answers to ``prompt``, else
    the kind of fault: ``fenced`` (another turn's tokens first), ``misordered``
    (the right words in the wrong order) or ``lost`` (words missing or extra).

    The conversation may join an unanswered prompt with the next one, so the
    echoed words need only *end* with ``prompt``. An interrupted reply
    (``complete=False``) must be a prefix of such a reply.
    """
    said = prompt.strip().rstrip(".!?").strip() or "nothing"
    if not complete:
        expected_start = "You said: "
        if reply.startswith(expected_start) or expected_start.startswith(reply):
            return None
        return "fenced" if expected_start in reply else "lost"
    match = _SCRIPTED.fullmatch(reply)
    if match is not None and match["said"].endswith(said):
        return None
    # Words that ask for a tool (when the agent has it) get its lead-in instead.
    tool = scripted_tool_use([{"role": "user", "content": prompt}], _BUILT_IN_TOOLS)
    if tool is not None and reply.startswith(TOOL_LEAD_IN[tool[0]]):
        return None
    if match is None and _SCRIPTED.search(reply) is not None:
        found = _SCRIPTED.search(reply)
        assert found is not None
        if found.start() > 0 and found["said"].endswith(said):
            return "fenced"
    number = re.search(r"message (\d+) from", reply)
    expected = f"You said: {said}. That was message {number[1] if number else 1} from you."
    if Counter(re.findall(r"\w+", reply)) == Counter(re.findall(r"\w+", expected)):
        return "misordered"
    return "lost"


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class TurnResult:
    """One prompt and its reply, as the caller saw it (times in trio seconds)."""

    call: int
    index: int
    prompt: str
    sent_at: float
    first_at: float | None = None
    last_at: float | None = None
    frames: list[str] = field(default_factory=list)
    interrupted: bool = False
    fault: str | None = None

    @property
    def complete(self) -> bool:
        return self.last_at is not None

    @property
    def first_token_ms(self) -> float | None:
        return None if self.first_at is None else (self.first_at - self.sent_at) * 1000

    @property
    def turn_ms(self) -> float | None:
        return None if self.last_at is None else (self.last_at - self.sent_at) * 1000


@dataclass(slots=True)
class CallResult:
    """One call: its turns, and what went wrong."""

    index: int
    call_sid: str = ""
    turns: list[TurnResult] = field(default_factory=list)
    dtmf_sent: int = 0
    interrupts: int = 0
    frames_after_interrupt: int = 0
    dtmf_reply_frames: int = 0  # the agent answering a keypad entry (not a fault)
    stray_frames: int = 0
    app_text_frames: int = 0  # text the app sent outside any turn (allowed)
    violations: list[str] = field(default_factory=list)
    error: str | None = None
    session_status: str | None = None
    # When the call's WebSocket was open (trio time; relative in raw results).
    opened_at: float | None = None
    closed_at: float | None = None


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """How to run: where, how many, how fast, and how to judge replies."""

    url: str
    calls: int = 1
    concurrency: int = 1
    public_url: str | None = None
    auth_token: str | None = None
    seed: int = 0
    # Spread the first ``concurrency`` call starts over this many seconds.
    ramp_s: float = 0.0
    # A reply must end (last: true) within this long of its prompt.
    turn_timeout_s: float = 30.0
    # "scripted": check reply content against the scripted provider; "any": don't.
    content: str = "scripted"
    # The provider's configured time to first token, subtracted for "overhead".
    provider_ttft_ms: float = 0.0
    # TwiML to use instead of the voice webhook (bare WebSocket servers).
    twiml: str | None = None
    label: str = ""
    # The first call's index (a client process running a share of a run):
    # call i's pacing seed depends on its index, so a share plays exactly
    # the calls it would have played in one process.
    index_offset: int = 0


@dataclass(slots=True)
class SimulationResult:
    """Everything a run produced; :meth:`to_json` is the report document."""

    config: SimulationConfig
    scenario: Scenario
    calls: list[CallResult] = field(default_factory=list)
    started_at: float = 0.0
    duration_s: float = 0.0
    # CPU seconds (user + system) of each client process (run_simulation_processes).
    client_cpu_s: list[float] = field(default_factory=list)

    def turns(self) -> list[TurnResult]:
        return [t for c in self.calls for t in c.turns]

    def counts(self) -> dict[str, int]:
        turns = self.turns()
        faults = Counter(t.fault for t in turns if t.fault)
        # A reply still streaming is not missing its ``last`` yet: only calls
        # that ended count (the progress line runs while replies are in flight).
        missing_last = sum(
            1
            for c in self.calls
            if c.closed_at is not None or c.error is not None
            for t in c.turns
            if not t.complete and not t.interrupted
        )
        return {
            "calls_planned": self.config.calls,
            "calls_completed": sum(1 for c in self.calls if c.error is None),
            "calls_failed": sum(1 for c in self.calls if c.error is not None),
            "prompts_planned": self.config.calls * self.scenario.prompts_per_call,
            "prompts_sent": len(turns),
            "replies_complete": sum(1 for t in turns if t.complete and not t.interrupted),
            "interrupted": sum(1 for t in turns if t.interrupted),
            "dtmf_sent": sum(c.dtmf_sent for c in self.calls),
            "protocol_violations": sum(len(c.violations) for c in self.calls),
            "missing_last": missing_last,
            "lost_tokens": faults.get("lost", 0),
            "misordered_tokens": faults.get("misordered", 0),
            "fenced_leaks": faults.get("fenced", 0),
            "stray_frames": sum(c.stray_frames for c in self.calls),
            "app_text_frames": sum(c.app_text_frames for c in self.calls),
            "frames_after_interrupt": sum(c.frames_after_interrupt for c in self.calls),
            "dtmf_reply_frames": sum(c.dtmf_reply_frames for c in self.calls),
            "peak_open_calls": self.peak_open_calls(),
        }

    def peak_open_calls(self) -> int:
        """The most calls whose WebSockets were open at the same moment."""
        edges = sorted(
            [(c.opened_at, 1) for c in self.calls if c.opened_at is not None]
            + [(c.closed_at, -1) for c in self.calls if c.closed_at is not None]
        )  # at a tie, a close (-1) sorts first: back to back is not at once
        peak = open_now = 0
        for _, step in edges:
            open_now += step
            peak = max(peak, open_now)
        return peak

    @property
    def problems(self) -> int:
        """Calls failed, protocol violations, missing ``last`` and bad token streams."""
        c = self.counts()
        return (
            c["calls_failed"]
            + c["protocol_violations"]
            + c["missing_last"]
            + c["lost_tokens"]
            + c["misordered_tokens"]
            + c["fenced_leaks"]
            + c["stray_frames"]
        )

    def first_token_ms(self) -> list[float]:
        return [t.first_token_ms for t in self.turns() if t.first_token_ms is not None]

    def to_json(self, *, samples: bool = True) -> dict[str, Any]:
        """The report document (``switchboard.report`` module docstring)."""
        turns = self.turns()
        firsts = self.first_token_ms()
        ttft = self.config.provider_ttft_ms
        errors = Counter(c.error.split(":", 1)[0] for c in self.calls if c.error)
        examples: list[str] = []
        problem_calls: list[dict[str, Any]] = []
        for c in self.calls:
            # Every problem names the CallSid: `switchboard replay CALLSID` shows it.
            who = f"call {c.index} {c.call_sid or '(no CallSid)'}"
            problems = [*c.violations, *([c.error] if c.error else [])]
            problems += [
                f"turn {t.index}: {t.fault} reply {''.join(t.frames)[:120]!r}"
                for t in c.turns
                if t.fault
            ]
            examples += [f"{who}: {p}" for p in problems]
            if problems:
                problem_calls.append(
                    {"call": c.index, "call_sid": c.call_sid, "problems": problems}
                )
        doc: dict[str, Any] = {
            "schema": report.SCHEMA,
            "label": self.config.label or self.scenario.name,
            "config": {
                "url": self.config.url,
                "calls": self.config.calls,
                "concurrency": self.config.concurrency,
                "scenario": self.scenario.name,
                "seed": self.config.seed,
                "content": self.config.content,
                "provider_ttft_ms": ttft,
                "signed": self.config.auth_token is not None,
                "duration_s": round(self.duration_s, 3),
                "client_processes": max(1, len(self.client_cpu_s)),
                "client_cpu_s": [round(c, 3) for c in self.client_cpu_s],
            },
            "counts": self.counts(),
            "latency_ms": {
                "first_token": report.summarize(firsts).to_json(),
                "turn": report.summarize(
                    [t.turn_ms for t in turns if t.turn_ms is not None and not t.interrupted]
                ).to_json(),
                "overhead": report.summarize([f - ttft for f in firsts]).to_json(),
            },
            "errors": dict(errors),
            "violations": examples[:MAX_EXAMPLES],
            "problem_calls": problem_calls[:MAX_EXAMPLES],
        }
        if samples:
            doc["samples"] = [
                [
                    round(t.sent_at - self.started_at, 3),
                    round(t.first_token_ms, 3),
                    None if t.turn_ms is None else round(t.turn_ms, 3),
                ]
                for t in sorted(turns, key=lambda t: t.sent_at)
                if t.first_token_ms is not None
            ]
        return doc

    def svg(self) -> str:
        """Overhead and whole-turn latency over time with problems marked, the
        overhead histogram, and the calls open over time."""
        ttft = self.config.provider_ttft_ms
        t0 = self.started_at
        points = [
            (t.sent_at - t0, t.first_token_ms - ttft)
            for t in self.turns()
            if t.first_token_ms is not None
        ]
        turn_points = [
            (t.sent_at - t0, t.turn_ms)
            for t in self.turns()
            if t.turn_ms is not None and not t.interrupted
        ]
        problems = [t.sent_at - t0 for t in self.turns() if t.fault]
        for c in self.calls:
            if c.violations or c.error:
                at = c.closed_at if c.closed_at is not None else c.opened_at
                problems += [(at if at is not None else t0) - t0] * (
                    len(c.violations) + (1 if c.error else 0)
                )
        edges = sorted(
            [(c.opened_at - t0, 1) for c in self.calls if c.opened_at is not None]
            + [(c.closed_at - t0, -1) for c in self.calls if c.closed_at is not None]
        )
        open_calls: list[tuple[float, int]] = [(0.0, 0)]
        for at, step in edges:
            open_calls.append((at, open_calls[-1][1] + step))
        values = [v for _, v in points]
        marks = (
            {"p50": report.percentile(values, 50), "p99": report.percentile(values, 99)}
            if values
            else {}
        )
        return report.render_svg(
            points,
            title=f"{self.config.label or self.scenario.name}: {self.config.calls} calls, "
            f"{self.config.concurrency} at once",
            value_label="overhead: first token - provider TTFT (ms)",
            marks=marks,
            turn_samples=turn_points,
            problems=problems,
            open_calls=open_calls,
        )


# --------------------------------------------------------------------------- one call


class _CallDriver:
    """Plays a scenario on one call; a reader task attributes frames to turns."""

    def __init__(
        self,
        call: SimulatedCall,
        result: CallResult,
        scenario: Scenario,
        config: SimulationConfig,
        rng: random.Random,
    ) -> None:
        self.call = call
        self.result = result
        self.scenario = scenario
        self.config = config
        self.rng = rng
        self.current: TurnResult | None = None
        self.after_interrupt = False
        self.after_dtmf = False
        self.closed = False
        self.changed = trio.Event()  # set whenever a frame was attributed

    async def sleep_ms(self, ms: float) -> None:
        if ms <= 0:
            return
        j = self.scenario.jitter
        await trio.sleep(ms / 1000 * (1 + self.rng.uniform(-j, j) if j else 1))

    async def read(self) -> None:
        """Attribute every app frame to the turn awaiting it (until the session ends)."""
        index = 0
        while True:
            try:
                msg = await self.call.next_message()
            except SessionClosed:
                self.closed = True
                self._wake()
                return
            at = self.call.received_at[index]
            index += 1
            if not isinstance(msg, Text):
                continue
            turn = self.current
            if turn is None:
                if self.after_interrupt:
                    # Sent before the gateway saw the interrupt: in flight, not a fault.
                    self.result.frames_after_interrupt += 1
                elif self.after_dtmf:
                    # A keypad entry ('#' or the idle timeout) is a turn: this is
                    # its reply, until the next prompt supersedes it.
                    self.result.dtmf_reply_frames += 1
                elif self.scenario.strict_turns:
                    self.result.stray_frames += 1
                    self.result.violations.append(f"text frame outside any turn: {msg.token!r}")
                else:
                    # ConversationRelay lets the app speak at any time: a silence
                    # re-prompt, a tool's goodbye. Counted, not a fault.
                    self.result.app_text_frames += 1
                continue
            if turn.first_at is None:
                turn.first_at = at
            turn.frames.append(msg.token)
            if msg.last:
                turn.last_at = at
                self.current = None
            self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def _wait_for(self, turn: TurnResult, frames: int | None) -> None:
        """Until ``turn`` completes (or has ``frames`` frames), within the turn timeout."""
        with trio.fail_after(self.config.turn_timeout_s):
            while not turn.complete and (frames is None or len(turn.frames) < frames):
                if self.closed:
                    raise SessionClosed(f"session over ({self.call.session_status})")
                await self.changed.wait()

    async def say(self, turn: Say, index: int, *, thinking: bool) -> None:
        if thinking:
            await self.sleep_ms(self.scenario.think_ms if turn.think_ms is None else turn.think_ms)
        speech = self.scenario.speech_ms(turn)
        partials = self.scenario.partials if turn.partials is None else turn.partials
        words = turn.text.split()
        if partials and len(words) > 1:
            for n in range(1, len(words)):
                await self.sleep_ms(speech / len(words))
                interim = Prompt(" ".join(words[:n]), self.scenario.lang, False)
                await self.call.send_raw(self.call.side.send(interim))
            await self.sleep_ms(speech / len(words))
        else:
            await self.sleep_ms(speech)
        record = TurnResult(
            call=self.result.index, index=index, prompt=turn.text, sent_at=trio.current_time()
        )
        self.result.turns.append(record)
        # Attribution starts before the send, so an instant reply is not missed.
        self.after_interrupt = False
        self.after_dtmf = False
        self.current = record
        await self.call.prompt(turn.text, lang=self.scenario.lang)
        await self._wait_for(record, turn.interrupt_after)
        if turn.interrupt_after is not None:
            # The caller barges in, having heard the last few words received so far
            # (Twilio reports the chunk that was playing, not the whole reply).
            heard = " ".join("".join(record.frames).split()[-5:])
            record.interrupted = True
            self.current = None
            self.after_interrupt = True
            self.result.interrupts += 1
            elapsed = (trio.current_time() - record.sent_at) * 1000
            await self.call.interrupt(heard, round(elapsed))
        self._check(record)

    def _check(self, record: TurnResult) -> None:
        if self.config.content != "scripted":
            return
        record.fault = check_scripted_reply(
            record.prompt, "".join(record.frames), complete=not record.interrupted
        )

    async def run(self) -> None:
        index = 0
        thinking = True
        for _ in range(self.scenario.repeat):
            for turn in self.scenario.turns:
                if isinstance(turn, Say):
                    await self.say(turn, index, thinking=thinking)
                    index += 1
                    # After a barge-in the caller is already speaking the next turn.
                    thinking = turn.interrupt_after is None
                elif isinstance(turn, Dtmf):
                    self.after_dtmf = True
                    for i, digit in enumerate(turn.digits):
                        if i:
                            await self.sleep_ms(self.scenario.dtmf_gap_ms)
                        if await self.call.dtmf(digit):
                            self.result.dtmf_sent += 1
                else:
                    await self.sleep_ms(turn.ms)


async def _run_one(
    index: int, scenario: Scenario, config: SimulationConfig, result: CallResult
) -> None:
    rng = random.Random(config.seed * 1_000_003 + index)
    try:
        async with open_call(
            config.url,
            public_url=config.public_url,
            auth_token=config.auth_token,
            twiml=config.twiml,
        ) as call:
            result.call_sid = call.call_sid
            result.opened_at = trio.current_time()
            driver = _CallDriver(call, result, scenario, config, rng)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(driver.read)
                    try:
                        await driver.run()
                    finally:
                        # Hang up (the context's exit) once the reader has seen
                        # everything already here; it stops at the session's end.
                        nursery.cancel_scope.cancel()
            finally:
                result.closed_at = trio.current_time()
            result.violations += [str(v) for v in call.violations]
        result.session_status = call.session_status
    except trio.TooSlowError:
        result.error = f"reply_timeout: no last:true within {config.turn_timeout_s:g} s"
    except SessionClosed as exc:
        result.error = f"session_closed: {exc}"
    except (SimulatorError, TwimlError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    except (OSError, trio.BrokenResourceError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    if result.error:
        log.warning(
            "simulated_call_failed", call=index, call_sid=result.call_sid, error=result.error
        )


# --------------------------------------------------------------------------- many calls


async def run_simulation(
    config: SimulationConfig,
    scenario: Scenario,
    *,
    progress: Callable[[SimulationResult, int], Awaitable[None]] | None = None,
) -> SimulationResult:
    """Run ``config.calls`` calls of ``scenario``, at most ``config.concurrency`` at once.

    ``progress(result, active)`` is awaited about once a second while it runs.
    Failures are recorded in the result, never raised (but cancellation is).
    """
    if config.calls < 1 or config.concurrency < 1:
        raise ValueError("calls and concurrency must be >= 1")
    result = SimulationResult(config=config, scenario=scenario)
    first = config.index_offset
    result.calls = [CallResult(index=first + i) for i in range(config.calls)]
    result.started_at = trio.current_time()
    slots = trio.Semaphore(config.concurrency)
    active = 0
    step = config.ramp_s / config.concurrency if config.ramp_s > 0 else 0.0

    async def one(i: int) -> None:
        nonlocal active
        active += 1
        try:
            await _run_one(first + i, scenario, config, result.calls[i])
        finally:
            active -= 1
            slots.release()

    async with trio.open_nursery() as outer:
        if progress is not None:

            async def tick() -> None:
                while True:
                    await trio.sleep(1)
                    await progress(result, active)

            outer.start_soon(tick)
        async with trio.open_nursery() as nursery:
            for i in range(config.calls):
                await slots.acquire()
                nursery.start_soon(one, i)
                if step and i < config.concurrency:
                    await trio.sleep(step)
        outer.cancel_scope.cancel()
    result.duration_s = trio.current_time() - result.started_at
    return result


# --------------------------------------------------------------------------- client processes


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def _encode_calls(result: SimulationResult) -> list[dict[str, Any]]:
    """Raw per-call results, times relative to the run's start (clocks differ per process)."""
    out = []
    t0 = result.started_at
    for call in result.calls:
        raw = dataclasses.asdict(call)
        for key in ("opened_at", "closed_at"):
            if raw[key] is not None:
                raw[key] -= t0
        for turn in raw["turns"]:
            for key in ("sent_at", "first_at", "last_at"):
                if turn[key] is not None:
                    turn[key] -= t0
            if turn["fault"] is None:
                turn["frames"] = []  # only a faulted reply's text goes in the report
        out.append(raw)
    return out


def _decode_calls(raw: list[dict[str, Any]]) -> list[CallResult]:
    calls = []
    for c in raw:
        turns = [TurnResult(**t) for t in c.pop("turns")]
        calls.append(CallResult(**c, turns=turns))
    return calls


async def run_simulation_processes(
    config: SimulationConfig, scenario_path: str | Path, processes: int
) -> SimulationResult:
    """``run_simulation`` driven from ``processes`` client processes, results merged.

    One Python process saturates before the servers do at about a thousand
    calls; each child runs an even share of the calls (and of the
    concurrency, over the same ramp) and hands back its raw per-turn results,
    so the merged percentiles come from every sample, never from averaged
    percentiles. ``client_cpu_s`` holds each child's CPU seconds.
    """
    scenario = load_scenario(scenario_path)
    processes = max(1, min(processes, config.calls))
    shares = _shares(config.calls, processes)
    conc = _shares(max(config.concurrency, processes), processes)
    result = SimulationResult(config=config, scenario=scenario)
    parts: list[dict[str, Any] | None] = [None] * processes
    with tempfile.TemporaryDirectory(prefix="switchboard-sim-") as tmp:

        async def child(i: int) -> None:
            out = Path(tmp) / f"client-{i}.json"
            share = dataclasses.replace(
                config,
                calls=shares[i],
                concurrency=max(1, conc[i]),
                index_offset=config.index_offset + sum(shares[:i]),
            )
            spec = {"config": dataclasses.asdict(share), "scenario": str(scenario_path),
                    "out": str(out)}  # fmt: skip
            argv = [sys.executable, "-m", "switchboard.simulate", json.dumps(spec)]
            env = {**os.environ, "SWITCHBOARD_LOG_LEVEL": "error"}
            await trio.run_process(argv, env=env, stdin=subprocess.DEVNULL)
            parts[i] = json.loads(out.read_text(encoding="utf-8"))

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(processes):
                nursery.start_soon(child, i)
        result.duration_s = trio.current_time() - started
    for part in parts:
        assert part is not None
        result.calls += _decode_calls(part["calls"])
        result.client_cpu_s.append(float(part["cpu_s"]))
    result.calls.sort(key=lambda c: c.index)
    result.started_at = 0.0
    return result


def _client_main(spec_json: str) -> int:
    """A client process of ``run_simulation_processes``: run a share, write raw results."""
    from switchboard.logging import configure_logging

    configure_logging(os.environ.get("SWITCHBOARD_LOG_LEVEL", "error"))
    spec = json.loads(spec_json)
    config = SimulationConfig(**spec["config"])
    scenario = load_scenario(spec["scenario"])
    gcpause.settle()  # the client's own pauses would be read as server latency
    result = trio.run(run_simulation, config, scenario)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    doc = {
        "calls": _encode_calls(result),
        "duration_s": result.duration_s,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }
    Path(spec["out"]).write_text(json.dumps(doc), encoding="utf-8")
    return 0


def progress_printer(stream: TextIO) -> Callable[[SimulationResult, int], Awaitable[None]]:
    """Progress to ``stream``: one rewritten line on a terminal, else a line a second."""
    tty = stream.isatty()

    async def show(result: SimulationResult, active: int) -> None:
        turns = result.turns()
        firsts = [t.first_token_ms for t in turns[-500:] if t.first_token_ms is not None]
        p50 = report.percentile(firsts, 50) if firsts else float("nan")
        done = sum(1 for c in result.calls if c.session_status or c.error)
        line = (
            f"{trio.current_time() - result.started_at:6.0f}s  calls {done}/{result.config.calls}"
            f"  active {active}  turns {len(turns)}  first-token p50 {p50:.1f} ms"
            f"  problems {result.problems}"
        )
        stream.write(("\r" + line + "\x1b[K") if tty else line + "\n")
        stream.flush()

    return show


def main(
    *,
    url: str,
    scenario_path: str,
    calls: int,
    concurrency: int,
    public_url: str | None,
    auth_token: str | None,
    json_out: str | None,
    plot_out: str | None,
    seed: int,
    ramp_s: float = 0.0,
    content: str = "scripted",
    provider_ttft_ms: float = 0.0,
    turn_timeout_s: float = 30.0,
    client_processes: int = 1,
) -> int:
    """``switchboard simulate``: run, print the table, write JSON/SVG; 1 on any problem."""
    try:
        scenario = load_scenario(scenario_path)
    except ScenarioError as exc:
        sys.stderr.write(f"switchboard simulate: {exc}\n")
        return 2
    if plot_out is not None and not (is_stdout(plot_out) or plot_out.lower().endswith(".svg")):
        sys.stderr.write("switchboard simulate: --plot writes SVG; name the file *.svg or -\n")
        return 2
    if is_stdout(json_out) and is_stdout(plot_out):
        sys.stderr.write("switchboard simulate: only one of --json and --plot can be -\n")
        return 2
    config = SimulationConfig(
        url=url,
        calls=calls,
        concurrency=concurrency,
        public_url=public_url,
        auth_token=auth_token,
        seed=seed,
        ramp_s=ramp_s,
        content=content,
        provider_ttft_ms=provider_ttft_ms,
        turn_timeout_s=turn_timeout_s,
    )
    gcpause.settle()  # the client's own pauses would be read as server latency
    if client_processes > 1:
        result = trio.run(run_simulation_processes, config, scenario_path, client_processes)
    else:
        result = trio.run(
            lambda: run_simulation(config, scenario, progress=progress_printer(sys.stderr))
        )
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    doc = result.to_json()
    # With a document on standard output, the table goes to stderr beside the log.
    table_to = sys.stderr if is_stdout(json_out) or is_stdout(plot_out) else sys.stdout
    table_to.write(report.render_table(doc) + "\n")
    if json_out:
        report.write_json(json_out, doc)
    if plot_out:
        report.write_svg(plot_out, result.svg())
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(_client_main(sys.argv[1]))
