"""``switchboard replay CALLSID``: rebuild one call from the streams.

Reading a call is an administrative path (DESIGN.md §3): it uses the
``Bus.range`` API, paged, on whatever bus it is given (Redis from the CLI, a
``MemoryBus`` in tests). The call's partition stream (caller events and LLM
results) is read whole and filtered by call sid; the other streams (LLM
requests, the gateway streams the call's envelopes name, control, events) are
read in the call's time window only, since they hold every call's traffic.

Three things can be done with a recording:

- ``format_timeline`` / ``timeline_json``: every entry with its time relative
  to the first one (wall clock: envelope ``ts`` or a fact's ``t_ms``) and the
  turn it belongs to.
- ``rerun``: re-drive the recorded caller events through *today's*
  ``ConversationActor`` on a private ``MemoryBus``, with the recorded LLM
  replies standing in for the provider, and compare what it would say now
  (greeting, system prompt, each turn's request and the frames it sends the
  gateway) with what it said then.
- ``export_scenario``: the caller's side as a scenario file
  (``switchboard.scenario``) that the simulator can play back.

A call that is not on the streams (never seen, or older than the retention)
raises ``CallNotFound``; the CLI prints its message and exits 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from actors.config import ConversationConfig
from actors.conversation import ConversationActor
from bus.base import Bus, Entry, MalformedEntry, parse_id
from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.memory import MemoryBus
from switchboard.outfile import is_stdout

PAGE = 1000  # entries per range read
WINDOW_BEFORE_MS = 5_000  # other streams are read from the call's first entry minus this
WINDOW_AFTER_MS = 120_000  # ... to its last entry plus this (late tokens, facts)
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


class CallNotFound(LookupError):
    """No entry of the call is on the streams (unknown sid, or past retention)."""


@dataclass(frozen=True, slots=True)
class TimelineItem:
    """One entry of a call, placed on the call's timeline."""

    source: str  # "calls", "llm", "gateway", "control", "events"
    stream: str
    entry_id: str
    at_ms: float  # wall-clock ms: a fact's t_ms, else the envelope's ts
    env: Envelope

    @property
    def label(self) -> str:
        """The kind, or ``event:<fact>`` for facts."""
        if self.env.kind == Kind.EVENT:
            return f"event:{self.env.body.get('fact', '?')}"
        return self.env.kind

    def describe(self) -> str:
        """A short human-readable account of the entry."""
        return describe(self.env)


@dataclass(slots=True)
class CallRecording:
    """Everything the streams hold about one call, oldest first."""

    call: str
    items: list[TimelineItem] = field(default_factory=list)

    @property
    def start_ms(self) -> float:
        return self.items[0].at_ms if self.items else 0.0

    def of_kind(self, *kinds: str, source: str | None = None) -> list[TimelineItem]:
        return [
            i for i in self.items if i.env.kind in kinds and (source is None or i.source == source)
        ]

    def partition_entries(self) -> list[TimelineItem]:
        """The call's partition-stream entries in stream order (what the conversation saw)."""
        return sorted(
            (i for i in self.items if i.source == "calls"), key=lambda i: parse_id(i.entry_id)
        )


# ------------------------------------------------------------------------- loading


async def _range_all(bus: Bus, stream: str, start: str = "-", end: str = "+") -> list[Entry]:
    out: list[Entry] = []
    while True:
        page = await bus.range(stream, start, end, count=PAGE)
        out.extend(page)
        if len(page) < PAGE:
            return out
        start = f"({page[-1].id}"


def _decode(entries: Iterable[Entry], call: str) -> list[tuple[Entry, Envelope]]:
    out = []
    for entry in entries:
        if entry.fields.get("c") != call:
            continue
        try:
            out.append((entry, Envelope.decode(entry.fields)))
        except MalformedEntry:
            continue
    return out


def _at_ms(entry: Entry, env: Envelope) -> float:
    if env.kind == Kind.EVENT:
        t = env.body.get("t_ms")
        if isinstance(t, int | float):
            return float(t)
    return float(env.ts or parse_id(entry.id)[0])


async def load_call(bus: Bus, keys: Keys, call: str) -> CallRecording:
    """Read every entry of ``call`` from the streams; ``CallNotFound`` when none."""
    partition = _decode(await _range_all(bus, keys.calls_for(call)), call)
    if not partition:
        raise CallNotFound(
            f"call {call} is not on the streams of namespace {keys.namespace!r}: "
            "never seen here, or older than the retention (SWITCHBOARD_RETENTION_HOURS)"
        )
    first = min(parse_id(e.id)[0] for e, _ in partition)
    last = max(parse_id(e.id)[0] for e, _ in partition)
    lo, hi = f"{max(0, first - WINDOW_BEFORE_MS)}-0", f"{last + WINDOW_AFTER_MS}-0"
    sources: list[tuple[str, str, list[tuple[Entry, Envelope]]]] = [
        ("calls", keys.calls_for(call), partition)
    ]
    gateways = sorted({env.gateway for _, env in partition if env.gateway})
    # Every shard, not only the call's: the shard count may have changed since.
    others = [("llm", s) for s in keys.llm_streams()] + [("control", keys.control)]
    others += [("events", s) for s in keys.event_streams()]
    others += [("gateway", keys.gateway(gw)) for gw in gateways]
    for source, stream in others:
        sources.append((source, stream, _decode(await _range_all(bus, stream, lo, hi), call)))
    items = [
        TimelineItem(source, stream, entry.id, _at_ms(entry, env), env)
        for source, stream, pairs in sources
        for entry, env in pairs
    ]
    items.sort(key=lambda i: (i.at_ms, parse_id(i.entry_id)))
    return CallRecording(call=call, items=items)


# ---------------------------------------------------------------------- formatting


def _clip(text: Any, limit: int = 70) -> str:
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
        return f"caller said {_clip(b.get('voicePrompt', ''))}{final}"
    if kind == Kind.CALL_DTMF:
        return f"caller pressed {b.get('digit')}"
    if kind == Kind.CALL_INTERRUPT:
        return (
            f"caller interrupted after {b.get('durationUntilInterruptMs')} ms, "
            f"heard {_clip(b.get('utteranceUntilInterrupt', ''))}"
        )
    if kind == Kind.CALL_CLOSED:
        return f"socket closed code={b.get('code')} reason={_clip(b.get('reason', ''))}"
    if kind == Kind.LLM_REQUEST:
        messages = b.get("messages") or []
        asked = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
        return f"request reply_to={b.get('reply_to')} messages={len(messages)} asks {_clip(asked)}"
    if kind == Kind.LLM_TOKENS:
        last = " last" if b.get("last") else ""
        return f"tokens #{b.get('index')}{last} {_clip(b.get('text', ''))}"
    if kind == Kind.LLM_RESULT:
        timings = b.get("timings") or {}
        error = f" error={_clip(b.get('error'))}" if b.get("error") else ""
        cancelled = f" cancelled={b.get('cancelled')}" if b.get("cancelled") else ""
        tools = "".join(
            f" tool {call.get('name')}({json.dumps(call.get('input'), ensure_ascii=False)})"
            f" -> {_clip(call.get('result', ''), 40)}"
            for call in b.get("tool_calls") or []
            if isinstance(call, dict)
        )
        return (
            f"result {_clip(b.get('text', ''))} first_token_ms={timings.get('first_token_ms')} "
            f"usage={b.get('usage')}{cancelled}{tools}{error}"
        )
    if kind == Kind.CONTROL_CANCEL:
        return f"cancel reply_to={b.get('reply_to')} reason={b.get('reason')}"
    if kind == Kind.GATEWAY_SEND:
        return f"send {json.dumps(b.get('frame'), ensure_ascii=False)}"
    if kind == Kind.EVENT:
        rest = {k: v for k, v in b.items() if k not in ("fact", "t_ms")}
        return " ".join(f"{k}={_clip(v, 40)}" for k, v in rest.items())
    return json.dumps(b, ensure_ascii=False)[:120]


def format_timeline(rec: CallRecording) -> str:
    """The call as terminal text: relative ms, turn, source, kind, what happened."""
    lines = [f"call {rec.call}: {len(rec.items)} entries"]
    lines.append(f"{'+ms':>10}  {'turn':>4}  {'source':<8} {'kind':<28} detail")
    for item in rec.items:
        rel = item.at_ms - rec.start_ms
        lines.append(
            f"{rel:>10.1f}  {item.env.turn:>4}  {item.source:<8} {item.label:<28} {item.describe()}"
        )
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


# --------------------------------------------------------------------------- rerun


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
    first = requests[0].body.get("messages", []) if requests else []
    # Everything the agent said before the caller's first words: the greeting,
    # and any silence re-prompt (one merged assistant message in the request).
    opening = first[0]["content"] if first and first[0].get("role") == "assistant" else None
    said["said before the first turn"] = opening
    said["system prompt"] = requests[0].body.get("system") if requests else None
    said["turns"] = len(requests)
    skip = 1 if opening is not None else 0
    for env in requests:
        messages = env.body.get("messages", [])
        # Without the opening, so a changed greeting is one difference, not one per turn.
        said[f"turn {env.turn} request"] = messages[skip:]
    said["frames sent"] = [env.body.get("frame") for env in sends]
    return said


async def rerun(rec: CallRecording, config: ConversationConfig) -> RerunReport:
    """Re-drive ``rec`` through today's ``ConversationActor`` (see the module docstring).

    Deterministic: entries are handled one by one in recorded partition order
    on a private ``MemoryBus``; each recorded ``llm.result`` is answered with
    its recorded text to the request today's code made at that point.
    """
    keys = config.keys
    bus = MemoryBus()
    try:
        actor = ConversationActor(config)
        actor.attach(bus)
        recorded = rec.partition_entries()
        requests_then = [i.env for i in rec.of_kind(Kind.LLM_REQUEST, source="llm")]
        # The rerun replaces the LLM, so only the conversation's own frames
        # (not a tool's, which the LLM actor sent) can be compared.
        sends_then = [
            i.env for i in rec.of_kind(Kind.GATEWAY_SEND) if i.env.body.get("origin") != "llm"
        ]
        seen_requests = "0-0"
        pending: list[Envelope] = []
        for item in recorded:
            env = item.env
            if env.kind == Kind.LLM_RESULT:
                # Answer the oldest request today's code made, with the recorded reply.
                fresh = await bus.range(keys.llm_for(rec.call), f"({seen_requests}")
                if fresh:
                    seen_requests = fresh[-1].id
                pending += [Envelope.decode(e.fields) for e in fresh]
                if not pending:
                    continue  # today's code asked nothing here: shows as a difference
                request = pending.pop(0)
                env = Envelope(
                    kind=Kind.LLM_RESULT,
                    call=request.call,
                    session=request.session,
                    gateway=request.gateway,
                    seq=request.seq,
                    turn=request.turn,
                    body={**env.body, "reply_to": request.body.get("reply_to", request.seq)},
                )
            elif env.kind == Kind.CONVERSATION_TIMER:
                # Fire the recorded timer: today's deadline of that name, if today's
                # code armed one (deadlines are wall-clock, so the recorded value
                # cannot match; a timer today's code never armed stays a no-op).
                state = await actor.load_state(env.call)
                armed = state.timers.get(str(env.body.get("timer", ""))) if state else None
                if armed is not None:
                    env = replace(env, body={**env.body, "deadline_ms": armed})
            elif env.kind not in _CALLER_KINDS:
                continue
            stream = keys.calls_for(env.call)
            entry_id = await bus.append(stream, env.encode())
            await actor.handle(env, Entry(stream, entry_id, env.encode()))
        requests_now = [
            Envelope.decode(e.fields)
            for e in await bus.range(keys.llm_for(rec.call))
            if e.fields.get("c")
        ]
        sends_now = [
            env
            for stream in {keys.gateway(i.env.gateway) for i in recorded if i.env.gateway}
            for env in (Envelope.decode(e.fields) for e in await bus.range(stream))
            if env.kind == Kind.GATEWAY_SEND
        ]
    finally:
        await bus.aclose()
    then, now = _said(requests_then, sends_then), _said(requests_now, sends_now)
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
            lines.append(f"  same  {c.name}: {_clip(json.dumps(c.now, ensure_ascii=False), 90)}")
    n = len(report.differences)
    lines.append("no differences" if n == 0 else f"{n} difference{'s' if n > 1 else ''}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- export


def export_scenario(rec: CallRecording) -> dict[str, Any]:
    """The caller's side of ``rec`` as a scenario (format: ``switchboard.scenario``).

    Each final prompt becomes a ``say`` turn whose ``think_ms`` is the recorded
    pause since the caller's previous move or the agent's previous reply; each
    key press a ``dtmf`` turn; an interrupt becomes ``interrupt_after`` (the
    token entries of the reply the caller had received) on the ``say`` it cut.
    """
    entries = rec.partition_entries()
    tokens = [i.env for i in rec.of_kind(Kind.LLM_TOKENS, source="gateway")]
    turns: list[dict[str, Any]] = []
    lang = "en-US"
    last_ts: int | None = None
    last_say: tuple[dict[str, Any], int] | None = None  # the turn and its prompt's seq
    for item in entries:
        env, b = item.env, item.env.body
        if env.kind == Kind.CALL_PROMPT and b.get("last", True):
            text = str(b.get("voicePrompt", "")).strip()
            if not text:
                continue
            lang = str(b.get("lang") or lang)
            think = max(0, env.ts - last_ts) if last_ts is not None else 0
            say = {"say": text, "think_ms": think, "speech_ms": 0}
            turns.append(say)
            last_say = (say, env.seq)
        elif env.kind == Kind.CALL_DTMF and b.get("digit"):
            turns.append({"dtmf": str(b["digit"])})
        elif env.kind == Kind.CALL_INTERRUPT and last_say is not None:
            say, seq = last_say
            heard = [t for t in tokens if t.body.get("reply_to") == seq and t.ts <= env.ts]
            say["interrupt_after"] = max(1, len(heard))
            last_say = None
        elif env.kind not in (Kind.LLM_RESULT, Kind.CALL_SETUP):
            continue
        last_ts = env.ts
    return {"name": f"replay-{rec.call}", "lang": lang, "turns": turns}


# ------------------------------------------------------------------------------ CLI


async def run_replay(
    bus: Bus,
    keys: Keys,
    call: str,
    *,
    as_json: bool = False,
    rerun_config: ConversationConfig | None = None,
    export_path: str | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """What ``switchboard replay`` does on ``bus``; returns the exit code."""
    try:
        rec = await load_call(bus, keys, call)
    except CallNotFound as exc:
        err.write(f"switchboard replay: {exc}\n")
        return 1
    if export_path is not None:
        scenario = json.dumps(export_scenario(rec), indent=2, ensure_ascii=False) + "\n"
        if is_stdout(export_path):
            out.write(scenario)  # the scenario is the whole output
            return 0
        with open(export_path, "w", encoding="utf-8") as f:  # noqa: ASYNC230 (one small file)
            f.write(scenario)
        err.write(f"scenario written to {export_path}\n")
    if rerun_config is not None:
        report = await rerun(rec, rerun_config)
        if as_json:
            data = [
                {"name": c.name, "then": c.then, "now": c.now, "differs": c.differs}
                for c in report.comparisons
            ]
            out.write(json.dumps({"call": call, "comparisons": data}, ensure_ascii=False) + "\n")
        else:
            out.write(format_rerun(report) + "\n")
        return 1 if report.differences else 0
    if as_json:
        out.write(json.dumps(timeline_json(rec), ensure_ascii=False) + "\n")
    else:
        out.write(format_timeline(rec) + "\n")
    return 0
