"""OpenTelemetry export: one trace per call, a span per turn, a child span per stage.

A dev composition in this process with the ``otel`` actor beside it, its
spans caught by the SDK's in-memory exporter (the real SDK, only the last
hop differs from OTLP). A simulated call of two turns, the second asking for
a tool, must come out as one trace whose spans nest and carry the GenAI
semantic-convention attributes. Off unless configured: without an endpoint
the actor is refused with a line that says what to set.
"""

from __future__ import annotations

import pytest
import trio
from dashkit import running_dev
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from actors.plugins import PluginError
from actors.runtime import serve_actor
from bus.keys import Keys
from switchboard.otel import trace_actor
from switchboard.runner import build_actor
from switchboard.settings import Settings
from switchboard.twilio import open_call

STAGES = {"gateway -> conversation", "conversation -> llm", "to the caller", "playout"}


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def test_a_call_is_one_trace_with_a_span_per_turn_and_per_stage() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    actor = trace_actor(
        Keys(partitions=4), provider, llm_provider="scripted", model="claude-test-model"
    )
    with trio.fail_after(30):
        async with (
            running_dev(SWITCHBOARD_TOOLS="send_digits") as (port, bus),
            trio.open_nursery() as nursery,
        ):
            await nursery.start(
                lambda task_status: serve_actor(
                    bus, actor, consumer="otel-1", task_status=task_status
                )
            )
            async with open_call(f"http://127.0.0.1:{port}") as call:
                sid = call.call_sid
                await call.prompt("Hello there.")
                await call.reply()
                await call.prompt("Please press 1 2 3 for me.")
                await call.reply()
            await actor.wait_exported(sid)
            nursery.cancel_scope.cancel()
    spans = list(exporter.get_finished_spans())
    (root,) = [s for s in spans if s.name == "call"]
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}
    assert root.kind == SpanKind.SERVER
    assert root.attributes is not None and root.attributes["twilio.call_sid"] == sid
    turns = _children(spans, root)
    assert [t.name for t in turns] == ["turn", "turn"]
    for turn in turns:
        assert turn.start_time is not None and turn.end_time is not None
        assert root.start_time is not None and root.end_time is not None
        assert root.start_time <= turn.start_time <= turn.end_time <= root.end_time
        children = _children(spans, turn)
        names = {c.name for c in children}
        assert names == STAGES | {"chat claude-test-model"}
        for child in children:
            assert turn.start_time <= child.start_time <= child.end_time <= turn.end_time  # type: ignore[operator]
    chats = [c for t in turns for c in _children(spans, t) if c.name.startswith("chat ")]
    for chat in chats:
        attrs = dict(chat.attributes or {})
        assert chat.kind == SpanKind.CLIENT
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.provider.name"] == "scripted"
        assert attrs["gen_ai.request.model"] == "claude-test-model"
        assert attrs["gen_ai.conversation.id"] == sid
        assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert [e.attributes["gen_ai.tool.name"] for e in chats[1].events] == ["send_digits"]  # type: ignore[index]
    assert list(chats[1].attributes["gen_ai.response.finish_reasons"]) == ["end_turn"]  # type: ignore[index]


def test_off_unless_an_endpoint_is_configured() -> None:
    settings = Settings.from_env({})
    assert settings.otel_endpoint is None
    with pytest.raises(PluginError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        build_actor(settings, "otel")
    configured = Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert configured.otel_endpoint == "http://127.0.0.1:4318"
    assert build_actor(configured, "otel").group == "otel"
