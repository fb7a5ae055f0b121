"""What a load run found: per turn, per call, and the whole run's report document.

Every call is checked for protocol violations (any invalid app frame),
replies that never end with ``last: true``, and, with ``content="scripted"``,
lost or misordered tokens inside a reply and tokens of a fenced turn that
arrive after a newer prompt was sent; and measured per turn: first-token
latency (final prompt sent -> first ``text`` frame off the socket) and turn
latency (-> the ``last: true`` frame). ``overhead`` is first-token latency
minus the provider's configured time to first token
(``SimulationConfig.provider_ttft_ms``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from switchboard.twilio import report
from switchboard.twilio.scenario import Scenario

MAX_EXAMPLES: Final = 20


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

    def _problems(self) -> tuple[list[str], list[dict[str, Any]]]:
        """Every problem as an example line, and the calls that had any."""
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
        return examples, problem_calls

    def to_json(self, *, samples: bool = True) -> dict[str, Any]:
        """The report document (``switchboard.twilio.report`` module docstring)."""
        turns = self.turns()
        firsts = self.first_token_ms()
        ttft = self.config.provider_ttft_ms
        errors = Counter(c.error.split(":", 1)[0] for c in self.calls if c.error)
        examples, problem_calls = self._problems()
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


def encode_calls(result: SimulationResult) -> list[dict[str, Any]]:
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


def decode_calls(raw: list[dict[str, Any]]) -> list[CallResult]:
    calls = []
    for c in raw:
        turns = [TurnResult(**t) for t in c.pop("turns")]
        calls.append(CallResult(**c, turns=turns))
    return calls
