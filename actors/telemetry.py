"""The telemetry actor: joins facts into per-turn timings and one summary per call.

It reads every event shard (``keys.event_streams()``) as its own consumer
group (``telemetry``), so it adds nothing to the hot path: the gateway,
conversation and LLM actors publish facts (``bus.facts``) whether or not anyone reads them.

Joining. A turn is identified by ``(call, session, reply_to)``: the ``seq`` of
the caller's final prompt, which every fact of that turn carries. (The turn
*number* is the conversation's; it is reported, not joined on, because the
gateway counts prompts per session while the conversation counts them per
call.) Every fact carries ``t_ms``, wall-clock milliseconds, so stages
measured in different processes share one time base. The first ``t_ms`` seen
for a fact wins: redelivered facts change nothing.

A turn's timeline, in the order a healthy turn runs::

    prompt_received -> prompt_applied -> request_taken -> provider_first_token
        -> first_token_sent -> last_token_sent

Once all six are in, the turn is *complete*: its stages are observed in the
histograms and logged as one ``turn_timings`` line. A turn still open when its
call ends (interrupted, failed) is flushed then with whatever it has.

Call summary: ``call_ended`` (the gateway closed the session) logs ONE
``call_summary`` line with the duration, turns, interruptions, tool calls,
errors and outcome, and forgets the call. Facts of a call that arrive after
its summary are ignored until a new session of it starts. State is in
memory: a restarted telemetry actor starts afresh (the facts stay on the
stream for replay). At most
``max_calls`` calls are tracked; the oldest is summarised as ``evicted``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio
from prometheus_client import CollectorRegistry

from actors.runtime import Actor
from actors.telemetry_metrics import TelemetryMetrics
from actors.telemetry_speculation import SPECULATION_FACTS, Speculations
from bus.base import Entry
from bus.envelope import Envelope, Kind
from bus.keys import GROUP_TELEMETRY, Keys
from bus.messages import Fact, Usage

log = structlog.get_logger()

# The facts of one turn, in the order they happen.
TIMELINE = (
    "prompt_received",
    "prompt_applied",
    "request_taken",
    "provider_first_token",
    "first_token_sent",
    "last_token_sent",
)
# Histogram stages: name -> (from fact, to fact).
STAGES: dict[str, tuple[str, str]] = {
    "gateway_to_conversation": ("prompt_received", "prompt_applied"),
    "llm_queue": ("llm_requested", "request_taken"),
    "provider_first_token": ("request_taken", "provider_first_token"),
    "first_token_delivery": ("provider_first_token", "first_token_sent"),
    "reply_playout": ("first_token_sent", "last_token_sent"),
}
_TURN_FACTS = frozenset(
    {*TIMELINE, "llm_requested", "completion_done", "provider_error", "tool_called"}
)


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """Configuration of the telemetry actor."""

    keys: Keys = field(default_factory=Keys)
    max_calls: int = 10_000  # calls tracked at once; the oldest is evicted past that
    keep_turns: int = 1_000  # finished turns kept in memory for inspection (``turns``)


@dataclass(slots=True)
class TurnTimings:
    """The facts of one turn: ``t_ms`` (wall-clock ms) of each, first seen wins."""

    call: str
    session: str
    reply_to: int
    turn: int = 0
    t_ms: dict[str, float] = field(default_factory=dict)
    usage: Usage | None = None  # from ``completion_done``
    error: str | None = None
    tools: list[str] = field(default_factory=list)
    done: bool = False

    @property
    def complete(self) -> bool:
        """Every fact of ``TIMELINE`` is in."""
        return all(name in self.t_ms for name in TIMELINE)

    def offsets_ms(self) -> dict[str, float]:
        """Each fact's time relative to ``prompt_received`` (or the earliest fact)."""
        if not self.t_ms:
            return {}
        origin = self.t_ms.get("prompt_received", min(self.t_ms.values()))
        return {name: round(t - origin, 3) for name, t in self.t_ms.items()}

    def stage_seconds(self) -> dict[str, float]:
        """The ``STAGES`` whose both ends are known, in seconds."""
        out: dict[str, float] = {}
        for stage, (start, end) in STAGES.items():
            if start in self.t_ms and end in self.t_ms:
                out[stage] = max(0.0, self.t_ms[end] - self.t_ms[start]) / 1000
        return out

    def first_token_seconds(self) -> float | None:
        """What the caller waited: prompt received to first token sent."""
        if "prompt_received" in self.t_ms and "first_token_sent" in self.t_ms:
            return max(0.0, self.t_ms["first_token_sent"] - self.t_ms["prompt_received"]) / 1000
        return None


@dataclass(slots=True)
class CallSummary:
    """What telemetry knows of one call; logged as ``call_summary`` when it ends."""

    call: str
    started_ms: float | None = None
    ended_ms: float | None = None
    turns: dict[tuple[str, int], TurnTimings] = field(default_factory=dict)
    interruptions: int = 0
    tools: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    frames_rejected: int = 0
    outcome: str = "open"
    close_code: int | None = None
    speculations: Speculations = field(default_factory=Speculations)

    def fields(self) -> dict[str, Any]:
        """The ``call_summary`` log fields."""
        first = [s for t in self.turns.values() if (s := t.first_token_seconds()) is not None]
        duration = (
            round((self.ended_ms - self.started_ms) / 1000, 3)
            if self.started_ms is not None and self.ended_ms is not None
            else None
        )
        usage = [t.usage for t in self.turns.values() if t.usage is not None]
        usage_in = sum(u.input_tokens for u in usage)
        usage_out = sum(u.output_tokens for u in usage)
        return {
            "outcome": self.outcome,
            "close_code": self.close_code,
            "duration_s": duration,
            "turns": len(self.turns),
            "turns_complete": sum(1 for t in self.turns.values() if t.complete),
            "interruptions": self.interruptions,
            "tool_calls": len(self.tools),
            "tools": sorted(set(self.tools)),
            "errors": len(self.errors),
            "frames_rejected": self.frames_rejected,
            "first_token_ms_max": round(max(first) * 1000, 3) if first else None,
            "first_token_ms_mean": round(sum(first) / len(first) * 1000, 3) if first else None,
            "input_tokens": usage_in,
            "output_tokens": usage_out,
            "cache_read_tokens": sum(u.cache_read_input_tokens for u in usage),
            "cache_write_tokens": sum(u.cache_creation_input_tokens for u in usage),
            **self.speculations.fields(),
        }


class TelemetryActor(Actor):
    """Joins facts into turn timings and call summaries; serves them as metrics."""

    name = "telemetry"
    group = GROUP_TELEMETRY
    concurrency = 1  # one ordered pass over the events stream

    def __init__(self, config: TelemetryConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.keys = config.keys
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = TelemetryMetrics(self.registry)
        self.calls: OrderedDict[str, CallSummary] = OrderedDict()
        # Finished turns and summaries, newest last (bounded; for tests and debugging).
        self.turns: deque[TurnTimings] = deque(maxlen=config.keep_turns)
        self.summaries: deque[CallSummary] = deque(maxlen=config.keep_turns)
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._changed = trio.Event()

    def streams(self) -> Sequence[str]:
        return self.keys.event_streams()

    async def wait_summary(self, call: str) -> CallSummary:
        """Wait until ``call`` has been summarised; return its summary."""
        while True:
            for summary in self.summaries:
                if summary.call == call:
                    return summary
            await self._changed.wait()

    async def handle(self, env: Envelope, entry: Entry) -> None:
        if env.kind != Kind.EVENT:
            return
        # A body that is no fact raises MalformedEntry: the runtime
        # dead-letters it with the reason.
        self.apply(env, Fact.from_body(env.body))
        self._changed.set()
        self._changed = trio.Event()

    def apply(self, env: Envelope, fact: Fact) -> None:
        """Fold one fact into the call's state (synchronous: no bus access)."""
        name, t_ms = fact.name, fact.t_ms
        if env.call in self._ended:
            if name != "call_started":
                return  # late fact of a summarised call
            del self._ended[env.call]  # a new session of the call (e.g. after a handoff)
        call = self._call(env.call)
        if name == "call_started":
            call.started_ms = call.started_ms if call.started_ms is not None else t_ms
        elif name == "interrupt_received":
            call.interruptions += 1
            self.metrics.interruptions.inc()
        elif name == "frame_rejected":
            call.frames_rejected += 1
            self.metrics.errors.labels(name).inc()
        elif name == "call_ended":
            call.ended_ms = t_ms
            call.close_code = fact.int_field("code")
            call.outcome = _outcome(call.close_code)
            self._summarise(call)
            return
        if name in SPECULATION_FACTS:
            self._speculation(call, env, fact)
            return
        if name not in _TURN_FACTS:
            return
        reply_to = fact.int_field("reply_to")
        belongs = call.speculations.turn_of(
            (env.session, env.seq if reply_to is None else reply_to)
        )
        if belongs is None:
            # A discarded speculation's: no turn, but what it cost was billed.
            usage = fact.usage() if name == "completion_done" else None
            if usage is not None:
                self._count_usage(usage)
            return
        turn = self._turn(call, env, belongs[1], gateway_count=name == "prompt_received")
        turn.t_ms.setdefault(name, t_ms)
        if name == "completion_done":
            usage = fact.usage()
            if usage is not None and turn.usage is None:
                turn.usage = usage
                self._count_usage(usage)
        elif name == "provider_error":
            turn.error = fact.str_field("error") or "unknown error"
            call.errors.append(turn.error)
            self.metrics.errors.labels(name).inc()
        elif name == "tool_called":
            tool = fact.str_field("name") or "?"
            turn.tools.append(tool)
            call.tools.append(tool)
            self.metrics.tool_calls.inc()
        if turn.complete and not turn.done:
            self._finish_turn(turn)

    def _count_usage(self, usage: Usage) -> None:
        tokens = self.metrics.llm_tokens
        tokens.labels("input").inc(usage.input_tokens)
        tokens.labels("output").inc(usage.output_tokens)
        tokens.labels("cache_read").inc(usage.cache_read_input_tokens)
        tokens.labels("cache_write").inc(usage.cache_creation_input_tokens)

    def _speculation(self, call: CallSummary, env: Envelope, fact: Fact) -> None:
        """Count a speculation fact; an adopted speculation's facts join its turn."""
        metrics = self.metrics
        outcome = fact.name.removeprefix("speculation_")
        if outcome == "wasted":
            metrics.speculation_wasted_tokens.labels("output").inc(
                fact.int_field("output_tokens") or 0
            )
            metrics.speculation_wasted_tokens.labels("input").inc(
                fact.int_field("input_tokens") or 0
            )
        else:
            metrics.speculations.labels(outcome).inc()
        moved = call.speculations.apply(env.session, fact)
        if moved is None:
            return
        held = call.turns.pop(moved[0], None)
        if held is None or moved[1] is None:
            return  # nothing built yet, or a discarded speculation's: no turn
        turn = self._turn(call, env, moved[1][1], gateway_count=False)
        for name, t in held.t_ms.items():
            turn.t_ms.setdefault(name, t)
        turn.usage = turn.usage or held.usage
        turn.error = turn.error or held.error
        turn.tools += held.tools
        if turn.complete and not turn.done:
            self._finish_turn(turn)

    def _call(self, call_sid: str) -> CallSummary:
        call = self.calls.get(call_sid)
        if call is None:
            call = self.calls[call_sid] = CallSummary(call=call_sid)
            while len(self.calls) > max(1, self.config.max_calls):
                oldest = next(iter(self.calls.values()))
                oldest.outcome = "evicted"
                self._summarise(oldest)
        return call

    def _turn(
        self, call: CallSummary, env: Envelope, reply_to: int, *, gateway_count: bool
    ) -> TurnTimings:
        key = (env.session, reply_to)
        turn = call.turns.get(key)
        if turn is None:
            turn = call.turns[key] = TurnTimings(call.call, env.session, reply_to, env.turn)
        elif env.turn and not (gateway_count and turn.turn):
            # The conversation's turn number (carried by every fact but the
            # gateway's prompt_received, which counts per session) wins.
            turn.turn = env.turn
        return turn

    def _finish_turn(self, turn: TurnTimings) -> None:
        turn.done = True
        stages = turn.stage_seconds()
        for stage, seconds in stages.items():
            self.metrics.turn_stage.labels(stage).observe(seconds)
        first = turn.first_token_seconds()
        if first is not None:
            self.metrics.turn_first_token.observe(first)
        self.metrics.turns.labels(str(turn.complete).lower()).inc()
        self.turns.append(turn)
        log.info(
            "turn_timings",
            call_sid=turn.call,
            turn=turn.turn,
            reply_to=turn.reply_to,
            complete=turn.complete,
            offsets_ms=turn.offsets_ms(),
            first_token_ms=None if first is None else round(first * 1000, 3),
            error=turn.error,
        )

    def _summarise(self, call: CallSummary) -> None:
        for turn in call.turns.values():
            if not turn.done:
                self._finish_turn(turn)
        self.calls.pop(call.call, None)
        self._ended[call.call] = None
        while len(self._ended) > max(1, self.config.max_calls):
            self._ended.popitem(last=False)
        fields = call.fields()
        self.metrics.calls.labels(call.outcome).inc()
        if fields["duration_s"] is not None:
            self.metrics.call_duration.observe(fields["duration_s"])
        self.summaries.append(call)
        log.info("call_summary", call_sid=call.call, **fields)


def _outcome(code: int | None) -> str:
    """How a session ended, from the close code the gateway recorded."""
    if code in (None, 1000):
        return "completed"
    if code == 1001:
        return "going_away"
    return "failed"
