"""A recorded call as text or JSON: one line (or object) per entry, by kind."""

from __future__ import annotations

import json
from typing import Any

from bus.envelope import Envelope, Kind
from switchboard.ops.recording import CallRecording


def clip(text: Any, limit: int = 70) -> str:
    s = str(text)
    return json.dumps(s if len(s) <= limit else s[: limit - 1] + "…", ensure_ascii=False)


def describe(env: Envelope) -> str:
    """One line about an envelope, by kind."""
    b = env.body
    kind = env.kind
    if kind == Kind.CALL_SETUP:
        return f"setup from={b.get('from')} to={b.get('to')} session={env.session}"
    if kind == Kind.CALL_PROMPT:
        final = "" if b.get("last", True) else " (interim)"
        return f"caller said {clip(b.get('voicePrompt', ''))}{final}"
    if kind == Kind.CALL_DTMF:
        return f"caller pressed {b.get('digit')}"
    if kind == Kind.CALL_INTERRUPT:
        return (
            f"caller interrupted after {b.get('durationUntilInterruptMs')} ms, "
            f"heard {clip(b.get('utteranceUntilInterrupt', ''))}"
        )
    if kind == Kind.CALL_CLOSED:
        return f"socket closed code={b.get('code')} reason={clip(b.get('reason', ''))}"
    if kind == Kind.LLM_REQUEST:
        messages = b.get("messages") or []
        asked = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
        ref = b.get("history")
        # With a reference, "messages" holds only what is new since the previous request.
        count = f"{ref.get('count', 0)}+{len(messages)}" if isinstance(ref, dict) else len(messages)
        return f"request reply_to={b.get('reply_to')} messages={count} asks {clip(asked)}"
    if kind == Kind.LLM_TOKENS:
        last = " last" if b.get("last") else ""
        return f"tokens #{b.get('index')}{last} {clip(b.get('text', ''))}"
    if kind == Kind.LLM_RESULT:
        timings = b.get("timings") or {}
        error = f" error={clip(b.get('error'))}" if b.get("error") else ""
        cancelled = f" cancelled={b.get('cancelled')}" if b.get("cancelled") else ""
        tools = "".join(
            f" tool {call.get('name')}({json.dumps(call.get('input'), ensure_ascii=False)})"
            f" -> {clip(call.get('result', ''), 40)}"
            for call in b.get("tool_calls") or []
            if isinstance(call, dict)
        )
        return (
            f"result {clip(b.get('text', ''))} first_token_ms={timings.get('first_token_ms')} "
            f"usage={b.get('usage')}{cancelled}{tools}{error}"
        )
    if kind == Kind.CONTROL_CANCEL:
        return f"cancel reply_to={b.get('reply_to')} reason={b.get('reason')}"
    if kind == Kind.GATEWAY_SEND:
        return f"send {json.dumps(b.get('frame'), ensure_ascii=False)}"
    if kind == Kind.EVENT:
        rest = {k: v for k, v in b.items() if k not in ("fact", "t_ms")}
        return " ".join(f"{k}={clip(v, 40)}" for k, v in rest.items())
    return json.dumps(b, ensure_ascii=False)[:120]


def format_timeline(rec: CallRecording) -> str:
    """The call as terminal text: relative ms, turn, source, kind, what happened."""
    lines = [f"call {rec.call}: {len(rec.items)} entries"]
    lines.append(f"{'+ms':>10}  {'turn':>4}  {'source':<8} {'kind':<28} detail")
    for item in rec.items:
        rel = item.at_ms - rec.start_ms
        where = f"{rel:>10.1f}  {item.env.turn:>4}  {item.source:<8} {item.label:<28}"
        lines.append(f"{where} {describe(item.env)}")
    return "\n".join(lines)


def timeline_json(rec: CallRecording) -> dict[str, Any]:
    """The call as JSON-ready data (for tools): one object per entry."""
    return {
        "call": rec.call,
        "entries": [
            {
                "rel_ms": round(item.at_ms - rec.start_ms, 3),
                "at_ms": item.at_ms,
                "turn": item.env.turn,
                "seq": item.env.seq,
                "source": item.source,
                "stream": item.stream,
                "id": item.entry_id,
                "kind": item.env.kind,
                "fact": item.env.body.get("fact") if item.env.kind == Kind.EVENT else None,
                "session": item.env.session,
                "gateway": item.env.gateway,
                "body": item.env.body,
            }
            for item in rec.items
        ],
    }
