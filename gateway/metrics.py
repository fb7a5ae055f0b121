"""Prometheus metrics of one gateway, in its own registry.

No global registry: several gateways may run in one process (tests, ``dev``).
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

# Seconds: a reply started on an interim prompt can be heard well under the
# model's time to first token; a slow one waits seconds.
RESPONSE_BUCKETS = (
    0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0,
)  # fmt: skip


class LabelledCounter:
    """A one-label counter whose children are looked up once per label value.

    ``Counter.labels`` takes a lock and builds a key on every call; the
    gateway counts every frame of every caller, so it keeps the children.
    """

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self._children: dict[str, Counter] = {}

    def inc(self, value: str) -> None:
        """Add one to the child labelled ``value``."""
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = self.counter.labels(value)
        child.inc()


class GatewayMetrics:
    """Counters and gauges of one gateway; ``render()`` is the /metrics body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, extra: Sequence[CollectorRegistry] = ()) -> None:
        self.extra = tuple(extra)
        self.registry = CollectorRegistry(auto_describe=True)
        self._traffic()
        self._health()

        # Per-frame counters with their children cached (hot path).
        self.count_in = LabelledCounter(self.frames_in)
        self.count_out = LabelledCounter(self.frames_out)
        self.count_dropped = LabelledCounter(self.outbound_dropped)
        self.count_interim = LabelledCounter(self.interim_prompts)

    def _traffic(self) -> None:
        """What goes through the gateway: frames both ways, sessions, webhooks."""
        self.frames_in = Counter(
            "switchboard_gateway_frames_in",
            "Frames accepted from Twilio, by message type.",
            ["type"],
            registry=self.registry,
        )
        self.frames_out = Counter(
            "switchboard_gateway_frames_out",
            "Frames sent to Twilio, by message type.",
            ["type"],
            registry=self.registry,
        )
        self.frames_rejected = Counter(
            "switchboard_gateway_frames_rejected",
            "Frames from Twilio that were logged and dropped, by error kind.",
            ["kind"],
            registry=self.registry,
        )
        self.outbound_dropped = Counter(
            "switchboard_gateway_outbound_dropped",
            "Bus messages for a caller that were not sent, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.interim_prompts = Counter(
            "switchboard_gateway_interim_prompts",
            "Interim prompts (last: false) from Twilio, by what became of them: "
            "published, unused, repeated, replaced, superseded (gateway.interim).",
            ["outcome"],
            registry=self.registry,
        )
        self.response_latency = Histogram(
            "switchboard_response_latency_seconds",
            "What callers wait: a final prompt received to the first token of its "
            "reply written to the socket (this gateway's clock).",
            buckets=RESPONSE_BUCKETS,
            registry=self.registry,
        )
        self.active_calls = Gauge(
            "switchboard_gateway_active_calls",
            "Relay sessions currently open.",
            registry=self.registry,
        )
        self.webhooks = Counter(
            "switchboard_gateway_webhooks",
            "Webhook requests, by path and status code.",
            ["path", "status"],
            registry=self.registry,
        )

    def _health(self) -> None:
        """How the system behind the gateway is doing: bus backlog, workers, draining."""
        self.bus_pending = Gauge(
            "switchboard_bus_pending",
            "Bus entries delivered to a consumer group but not yet acked (read at scrape).",
            ["group"],
            registry=self.registry,
        )
        self.bus_lag = Gauge(
            "switchboard_bus_lag",
            "Entries of a stream not yet delivered to a consumer group (read at scrape).",
            ["group", "stream"],
            registry=self.registry,
        )
        self.workers_live = Gauge(
            "switchboard_workers_live",
            "Workers of a role whose heartbeat is live in its registry (read at scrape).",
            ["role"],
            registry=self.registry,
        )
        self.draining = Gauge(
            "switchboard_gateway_draining",
            "1 once the gateway stopped taking new calls (SIGTERM), else 0.",
            registry=self.registry,
        )
        self.dispatch_lag = Gauge(
            "switchboard_gateway_dispatch_lag_seconds",
            "Age of the latest entry the dispatcher routed, when it routed it (wall clock).",
            registry=self.registry,
        )
        self.facts_dropped = Gauge(
            "switchboard_facts_dropped",
            "Facts this process dropped because its fact queue was full or the bus failed.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The gateway's metrics followed by those of the ``extra`` registries."""
        return b"".join(bytes(generate_latest(r)) for r in (self.registry, *self.extra))
