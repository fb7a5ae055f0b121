"""Optional OpenTelemetry export: one trace per call, a span per turn, a child per stage.

Off unless configured: the ``otel`` extra (``pip install 'switchboard[otel]'``)
brings the SDK and the OTLP/HTTP exporter, and ``OTEL_EXPORTER_OTLP_ENDPOINT``
turns it on (``switchboard dev`` then runs it in-process; a deployment runs
``switchboard actor otel``). Nothing of it is on the caller's path: like the
telemetry actor it reads the facts on the events stream as its own consumer
group (``otel``) and writes spans after the fact, with the times the facts
carry (``t_ms``, the wall clock every process shares).

A call's trace is exported when its ``call_ended`` fact arrives::

    call                                  call_started -> call_ended
      turn                                prompt_received -> last fact of the turn
        gateway -> conversation           prompt_received -> prompt_applied
        conversation -> llm               prompt_applied  -> request_taken
        chat {model}  (gen_ai, CLIENT)    request_taken   -> completion_done
        to the caller                     provider_first_token -> first_token_sent
        playout                           first_token_sent -> last_token_sent

The model span follows OpenTelemetry's GenAI semantic conventions
(https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/):
``gen_ai.operation.name`` ``chat``, ``gen_ai.provider.name``,
``gen_ai.request.model``, ``gen_ai.conversation.id`` (the CallSid),
``gen_ai.usage.input_tokens``/``output_tokens``,
``gen_ai.response.finish_reasons`` and ``error.type`` on a provider error;
tool calls are ``gen_ai.tool.call`` events on it (the facts hold when a tool
was called, not how long it ran). Conversation content is never recorded
(the conventions make it opt-in: it is the caller's speech).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
import trio

from actors.runtime import Actor
from bus.base import Entry
from bus.envelope import Envelope, Kind
from bus.keys import Keys

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = structlog.get_logger()

GROUP_OTEL = "otel"
MAX_CALLS = 10_000  # calls followed at once; the oldest is exported as it is past that
INSTRUMENTATION = "switchboard"


class OtelUnavailable(RuntimeError):
    """The ``otel`` extra is not installed."""


@dataclass(slots=True)
class _Turn:
    turn: int
    t_ms: dict[str, float] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)
    stop_reason: str | None = None
    error: str | None = None
    cancelled: bool = False
    tools: list[tuple[float, str, bool]] = field(default_factory=list)


@dataclass(slots=True)
class _Call:
    call: str
    start_ms: float
    direction: str = ""
    turns: dict[tuple[str, int], _Turn] = field(default_factory=dict)
    interruptions: int = 0


_STAGES = (
    ("gateway -> conversation", "prompt_received", "prompt_applied"),
    ("conversation -> llm", "prompt_applied", "request_taken"),
    ("to the caller", "provider_first_token", "first_token_sent"),
    ("playout", "first_token_sent", "last_token_sent"),
)
_TURN_FACTS = frozenset(
    {
        "prompt_received",
        "prompt_applied",
        "llm_requested",
        "request_taken",
        "provider_first_token",
        "completion_done",
        "first_token_sent",
        "last_token_sent",
    }
)


def _ns(t_ms: float) -> int:
    return int(t_ms * 1_000_000)


class CallTracer:
    """Folds facts per call and writes each call's spans once it ended."""

    def __init__(
        self, tracer: Tracer, *, provider: str, model: str, max_calls: int = MAX_CALLS
    ) -> None:
        self.tracer = tracer
        self.provider = provider
        self.model = model
        self.max_calls = max_calls
        self.calls: OrderedDict[str, _Call] = OrderedDict()
        self.exported: deque[str] = deque(maxlen=1000)  # calls whose trace went out, newest last
        self.exported_count = 0

    def apply(self, env: Envelope) -> None:
        """Fold one fact; export the call's trace on ``call_ended``."""
        body = env.body
        name = body.get("fact")
        t = body.get("t_ms")
        if not isinstance(name, str) or not isinstance(t, int | float) or not env.call:
            return
        call = self.calls.get(env.call)
        if call is None:
            if name != "call_started":
                return  # a call that started before we followed: no whole trace to give
            call = self.calls[env.call] = _Call(env.call, float(t))
            while len(self.calls) > self.max_calls:
                _, oldest = self.calls.popitem(last=False)
                self._export(oldest, None, {"switchboard.call.evicted": True})
        if name == "call_started":
            call.direction = str(body.get("direction") or "")
        elif name == "interrupt_received":
            call.interruptions += 1
        elif name == "call_ended":
            del self.calls[env.call]
            self._export(call, float(t), {"switchboard.close_code": body.get("code") or 0})
        elif name in _TURN_FACTS or name in ("provider_error", "tool_called"):
            reply_to = body.get("reply_to", env.seq)
            if not isinstance(reply_to, int):
                return
            turn = call.turns.setdefault((env.session, reply_to), _Turn(env.turn))
            turn.turn = max(turn.turn, env.turn)
            if name == "provider_error":
                turn.error = str(body.get("error") or "provider_error")
            elif name == "tool_called":
                turn.tools.append(
                    (float(t), str(body.get("name", "?")), bool(body.get("is_error")))
                )
            else:
                turn.t_ms.setdefault(name, float(t))
            if name == "completion_done":
                usage = body.get("usage")
                if isinstance(usage, dict):
                    turn.usage = {k: int(v) for k, v in usage.items() if isinstance(v, int)}
                turn.stop_reason = str(body.get("stop_reason") or "") or None
                turn.cancelled = bool(body.get("cancelled"))

    def _export(self, call: _Call, end_ms: float | None, extra: dict[str, Any]) -> None:
        from opentelemetry import trace

        ends = [t for turn in call.turns.values() for t in turn.t_ms.values()]
        end = end_ms if end_ms is not None else max(ends, default=call.start_ms)
        root = self.tracer.start_span(
            "call",
            kind=trace.SpanKind.SERVER,
            start_time=_ns(call.start_ms),
            attributes={
                "twilio.call_sid": call.call,
                "gen_ai.conversation.id": call.call,
                "switchboard.call.direction": call.direction,
                "switchboard.call.turns": len(call.turns),
                "switchboard.call.interruptions": call.interruptions,
                **extra,
            },
        )
        context = trace.set_span_in_context(root)
        for turn in sorted(call.turns.values(), key=lambda t: min(t.t_ms.values(), default=0)):
            if turn.t_ms:
                self._turn(call, turn, context)
        root.end(end_time=_ns(max(end, call.start_ms)))
        self.exported.append(call.call)
        self.exported_count += 1

    def _turn(self, call: _Call, turn: _Turn, context: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        t = turn.t_ms
        start = t.get("prompt_received", min(t.values()))
        end = max([*t.values(), *(at for at, _, _ in turn.tools)])
        span = self.tracer.start_span(
            "turn",
            context=context,
            start_time=_ns(start),
            attributes={"switchboard.turn": turn.turn, "twilio.call_sid": call.call},
        )
        if "first_token_sent" in t and "prompt_received" in t:
            span.set_attribute(
                "switchboard.turn.first_token_ms", t["first_token_sent"] - t["prompt_received"]
            )
        inner = trace.set_span_in_context(span)
        for name, a, b in _STAGES:
            if a in t and b in t:
                self._stage(name, t[a], t[b], inner)
        if "request_taken" in t:
            self._chat(call, turn, inner, end)
        if turn.error is not None:
            span.set_status(Status(StatusCode.ERROR, turn.error))
        span.end(end_time=_ns(end))

    def _stage(self, name: str, start: float, end: float, context: Any) -> None:
        span = self.tracer.start_span(name, context=context, start_time=_ns(start))
        span.end(end_time=_ns(max(start, end)))

    def _chat(self, call: _Call, turn: _Turn, context: Any, turn_end: float) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        t = turn.t_ms
        start = t["request_taken"]
        end = t.get("completion_done", turn_end)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": self.model,
            "gen_ai.conversation.id": call.call,
        }
        if "input_tokens" in turn.usage:
            attributes["gen_ai.usage.input_tokens"] = turn.usage["input_tokens"]
        if "output_tokens" in turn.usage:
            attributes["gen_ai.usage.output_tokens"] = turn.usage["output_tokens"]
        if turn.stop_reason:
            attributes["gen_ai.response.finish_reasons"] = [turn.stop_reason]
        if "provider_first_token" in t:
            attributes["switchboard.llm.first_token_ms"] = t["provider_first_token"] - start
        if turn.cancelled:
            attributes["switchboard.llm.cancelled"] = True
        span: Span = self.tracer.start_span(
            f"chat {self.model}",
            context=context,
            kind=trace.SpanKind.CLIENT,
            start_time=_ns(start),
            attributes=attributes,
        )
        for at, name, is_error in turn.tools:
            span.add_event(
                "gen_ai.tool.call",
                {"gen_ai.tool.name": name, "switchboard.tool.is_error": is_error},
                timestamp=_ns(at),
            )
        if turn.error is not None:
            span.set_attribute("error.type", "provider_error")
            span.set_status(Status(StatusCode.ERROR, turn.error))
        span.end(end_time=_ns(max(start, end)))


class TraceActor(Actor):
    """Reads the facts as group ``otel`` and exports one trace per call."""

    name = "otel"
    group = GROUP_OTEL
    concurrency = 1  # one ordered pass over the events stream

    def __init__(self, keys: Keys, tracer: CallTracer) -> None:
        self.keys = keys
        self.tracer = tracer
        self._changed = trio.Event()

    def streams(self) -> Sequence[str]:
        return self.keys.event_streams()

    async def handle(self, env: Envelope, entry: Entry) -> None:
        if env.kind == Kind.EVENT:
            before = self.tracer.exported_count
            self.tracer.apply(env)
            if self.tracer.exported_count != before:
                self._changed.set()
                self._changed = trio.Event()

    async def wait_exported(self, call: str) -> None:
        """Wait until ``call``'s trace has been handed to the exporter."""
        while call not in self.tracer.exported:
            await self._changed.wait()


def tracer_provider(endpoint: str, *, service_name: str = "switchboard") -> TracerProvider:
    """An SDK tracer provider exporting over OTLP/HTTP to ``endpoint`` in batches."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise OtelUnavailable(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
            "pip install 'switchboard[otel]'"
        ) from exc
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    traces = endpoint.rstrip("/")
    if not traces.endswith("/v1/traces"):
        traces += "/v1/traces"  # the OTLP/HTTP signal path under the base endpoint
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces)))
    return provider


def trace_actor(
    keys: Keys, provider: TracerProvider, *, llm_provider: str, model: str
) -> TraceActor:
    """The ``otel`` actor writing to ``provider``'s tracer."""
    tracer = provider.get_tracer(INSTRUMENTATION)
    return TraceActor(keys, CallTracer(tracer, provider=llm_provider, model=model))
