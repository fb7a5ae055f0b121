"""Re-drive a recorded call through today's conversation actor and compare.

``rerun`` replays the recorded caller events through *today's*
``ConversationActor`` on a private ``MemoryBus``, with the recorded LLM
replies standing in for the provider, and compares what it would say now
(greeting, system prompt, each turn's request and the frames it sends the
gateway) with what it said then.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from actors.config import ConversationConfig
from actors.conversation import ConversationActor
from actors.llm.history import resolve_in_order
from bus.base import Entry
from bus.envelope import Envelope, Kind
from bus.memory import MemoryBus
from bus.messages import LlmRequest
from switchboard.ops.recording import CallRecording
from switchboard.ops.timeline import clip

_CALLER_KINDS = frozenset(
    {
        Kind.CALL_SETUP,
        Kind.CALL_PROMPT,
        Kind.CALL_DTMF,
        Kind.CALL_INTERRUPT,
        Kind.CALL_INFO,
        Kind.CALL_ERROR,
        Kind.CALL_CLOSED,
    }
)


# A recorded request whose earlier history the recording lacks: never "same".
_UNREBUILT = "(history not in the recording)"


@dataclass(frozen=True, slots=True)
class Comparison:
    """One thing the conversation says, then (recorded) and now (re-run)."""

    name: str
    then: Any
    now: Any

    @property
    def differs(self) -> bool:
        return bool(self.then != self.now)


@dataclass(frozen=True, slots=True)
class RerunReport:
    call: str
    comparisons: tuple[Comparison, ...]

    @property
    def differences(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.differs]


def _said(requests: Sequence[Envelope], sends: Sequence[Envelope]) -> dict[str, Any]:
    """What a conversation said, as named items comparable between two runs."""
    said: dict[str, Any] = {}
    # What the model was asked: requests carry only what is new since the
    # call's previous one, so each is rebuilt from those before it.
    asked = resolve_in_order((env.call, LlmRequest.from_body(env.body)) for env in requests)
    first = (asked[0] or []) if asked else []
    # Everything the agent said before the caller's first words: the greeting,
    # and any silence re-prompt (one merged assistant message in the request).
    opening = first[0]["content"] if first and first[0].get("role") == "assistant" else None
    said["said before the first turn"] = opening
    said["system prompt"] = requests[0].body.get("system") if requests else None
    said["turns"] = len(requests)
    skip = 1 if opening is not None else 0
    for env, messages in zip(requests, asked, strict=True):
        # None: a reference nothing recorded covers (the stream was trimmed).
        # Without the opening, so a changed greeting is one difference, not one per turn.
        said[f"turn {env.turn} request"] = _UNREBUILT if messages is None else messages[skip:]
    said["frames sent"] = [env.body.get("frame") for env in sends]
    return said


class _RecordedLLM:
    """Answers today's requests, oldest first, with the recorded replies."""

    def __init__(self, bus: MemoryBus, stream: str) -> None:
        self.bus = bus
        self.stream = stream
        self.seen = "0-0"
        self.pending: list[Envelope] = []

    async def answer(self, recorded: Envelope) -> Envelope | None:
        """The recorded result, addressed to the oldest request not yet answered."""
        fresh = await self.bus.range(self.stream, f"({self.seen}")
        if fresh:
            self.seen = fresh[-1].id
        self.pending += [Envelope.decode(e.fields) for e in fresh]
        if not self.pending:
            return None  # today's code asked nothing here: shows as a difference
        request = self.pending.pop(0)
        return Envelope(
            kind=Kind.LLM_RESULT,
            call=request.call,
            session=request.session,
            gateway=request.gateway,
            seq=request.seq,
            turn=request.turn,
            body={**recorded.body, "reply_to": request.body.get("reply_to", request.seq)},
        )


async def _timer_now(actor: ConversationActor, recorded: Envelope) -> Envelope:
    """Fire the recorded timer: today's deadline of that name, if today's code
    armed one (deadlines are wall-clock, so the recorded value cannot match; a
    timer today's code never armed stays a no-op)."""
    state = await actor.load_state(recorded.call)
    armed = state.timers.get(str(recorded.body.get("timer", ""))) if state else None
    if armed is None:
        return recorded
    return replace(recorded, body={**recorded.body, "deadline_ms": armed})


async def _said_now(
    bus: MemoryBus, rec: CallRecording, config: ConversationConfig
) -> dict[str, Any]:
    keys = config.keys
    actor = ConversationActor(config)
    actor.attach(bus)
    recorded = rec.partition_entries()
    llm = _RecordedLLM(bus, keys.llm_for(rec.call))
    for item in recorded:
        env: Envelope | None = item.env
        if item.env.kind == Kind.LLM_RESULT:
            env = await llm.answer(item.env)
        elif item.env.kind == Kind.CONVERSATION_TIMER:
            env = await _timer_now(actor, item.env)
        elif item.env.kind not in _CALLER_KINDS:
            continue
        if env is None:
            continue
        stream = keys.calls_for(env.call)
        entry_id = await bus.append(stream, env.encode())
        await actor.handle(env, Entry(stream, entry_id, env.encode()))
    requests = [
        Envelope.decode(e.fields)
        for e in await bus.range(keys.llm_for(rec.call))
        if e.fields.get("c")
    ]
    sends = [
        env
        for stream in {keys.gateway(i.env.gateway) for i in recorded if i.env.gateway}
        for env in (Envelope.decode(e.fields) for e in await bus.range(stream))
        if env.kind == Kind.GATEWAY_SEND
    ]
    return _said(requests, sends)


async def rerun(rec: CallRecording, config: ConversationConfig) -> RerunReport:
    """Re-drive ``rec`` through today's ``ConversationActor`` (see the module docstring).

    Deterministic: entries are handled one by one in recorded partition order
    on a private ``MemoryBus``; each recorded ``llm.result`` is answered with
    its recorded text to the request today's code made at that point.
    """
    requests_then = [i.env for i in rec.of_kind(Kind.LLM_REQUEST, source="llm")]
    # The rerun replaces the LLM, so only the conversation's own frames
    # (not a tool's, which the LLM actor sent) can be compared.
    sends_then = [
        i.env for i in rec.of_kind(Kind.GATEWAY_SEND) if i.env.body.get("origin") != "llm"
    ]
    bus = MemoryBus()
    try:
        now = await _said_now(bus, rec, config)
    finally:
        await bus.aclose()
    then = _said(requests_then, sends_then)
    names = list(dict.fromkeys([*then, *now]))
    return RerunReport(rec.call, tuple(Comparison(n, then.get(n), now.get(n)) for n in names))


def format_rerun(report: RerunReport) -> str:
    """Then and now, side by side; ends with "no differences" or the count."""
    lines = [f"rerun of call {report.call} through today's conversation actor"]
    for c in report.comparisons:
        if c.differs:
            lines.append(f"  DIFF  {c.name}")
            lines.append(f"        then: {json.dumps(c.then, ensure_ascii=False)}")
            lines.append(f"        now:  {json.dumps(c.now, ensure_ascii=False)}")
        else:
            lines.append(f"  same  {c.name}: {clip(json.dumps(c.now, ensure_ascii=False), 90)}")
    n = len(report.differences)
    lines.append("no differences" if n == 0 else f"{n} difference{'s' if n > 1 else ''}")
    return "\n".join(lines)
