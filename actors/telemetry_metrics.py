"""The telemetry actor's Prometheus metrics (``actors.telemetry``), in one registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["TelemetryMetrics"]

_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
)  # fmt: skip
_DURATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class TelemetryMetrics:
    """The telemetry actor's Prometheus metrics, in one (per-process) registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.turn_first_token = Histogram(
            "switchboard_turn_first_token_seconds",
            "Caller's wait per turn: final prompt received to first reply token sent.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.turn_stage = Histogram(
            "switchboard_turn_stage_seconds",
            "Time spent in each stage of a turn (see docs/ARCHITECTURE.md).",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.turns = Counter(
            "switchboard_turns",
            "Turns seen, by whether every fact of the timeline arrived.",
            ["complete"],
            registry=registry,
        )
        self.calls = Counter(
            "switchboard_calls", "Calls summarised, by outcome.", ["outcome"], registry=registry
        )
        self.call_duration = Histogram(
            "switchboard_call_duration_seconds",
            "Duration of summarised calls (session start to end).",
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.interruptions = Counter(
            "switchboard_interruptions", "Caller barge-ins.", registry=registry
        )
        self.tool_calls = Counter("switchboard_tool_calls", "Tool calls made.", registry=registry)
        self.errors = Counter(
            "switchboard_errors", "Error facts, by fact name.", ["fact"], registry=registry
        )
        self.speculations = Counter(
            "switchboard_speculations",
            "Preemptive replies (held replies started on interim prompts), by outcome: "
            "started, adopted (heard as the turn's reply), discarded (never heard), "
            "shed (not started or dropped unrun: the bus was behind).",
            ["outcome"],
            registry=registry,
        )
        self.speculation_wasted_tokens = Counter(
            "switchboard_speculation_wasted_tokens",
            "Tokens billed for discarded preemptive replies, by direction (input, output).",
            ["direction"],
            registry=registry,
        )
        self.llm_tokens = Counter(
            "switchboard_llm_tokens",
            "Tokens billed by the LLM provider, by direction: input (not cached), "
            "output, cache_read and cache_write (prompt-cache reads and writes).",
            ["direction"],
            registry=registry,
        )
