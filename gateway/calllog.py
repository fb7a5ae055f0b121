"""The call log: what the streams say about recent calls, folded into one view per call.

Pure and synchronous (no I/O, no clock): feed it decoded bus entries with
:meth:`CallLog.apply` and read :meth:`CallLog.summaries`, :meth:`CallLog.call`
and :meth:`CallLog.latency`. The dashboard (:mod:`gateway.dashboard`) feeds it
from a live tail of the streams; ``switchboard calls`` feeds it from range
reads of the same streams. Both therefore tell the same story.

It is built from the bus alone, never from the actors (the gateway is an
edge and must not import them): which entry says what is the bus contract
of docs/ARCHITECTURE.md ("Message schemas" and the facts of ``bus.facts``).

- **Partition streams** (``calls:{p}``): ``call.setup`` (from, to, start),
  final ``call.prompt`` (what the caller said), ``call.dtmf``,
  ``call.interrupt`` (a barge-in: what the caller heard of the reply),
  ``call.error``, ``call.closed`` and ``llm.result`` (the whole reply, its tool
  calls, a provider error).
- **Gateway streams** (``gw:{id}``): ``llm.tokens`` (the reply as it streams)
  and ``gateway.send`` (app frames: a re-prompt or goodbye of the
  conversation, a tool's frame, ``end`` and its reason).
- **Events**: the facts that time a turn (``prompt_received`` ...
  ``first_token_sent``), ``call_started``/``call_ended``, ``provider_error``
  (the caller heard an apology), ``frame_rejected``.
- **Dead letters**: entries an actor gave up on, by call.

A turn's latency is split into the stages the caller waits through, all on
the facts' shared wall clock (``t_ms``)::

    gateway -> conversation   prompt_received -> prompt_applied
    conversation -> llm       prompt_applied  -> request_taken
    llm first token           request_taken   -> provider_first_token
    to the caller             provider_first_token -> first_token_sent

At most ``max_calls`` calls are kept; the oldest started is forgotten first.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from bus.envelope import Envelope, Kind

# Where an entry was read from; the log reads each kind only from its own source.
SOURCE_CALLS = "calls"
SOURCE_GATEWAY = "gateway"
SOURCE_EVENTS = "events"
SOURCE_DEAD = "dead"

# The caller-facing stages of a turn: (name, from fact, to fact).
STAGES: tuple[tuple[str, str, str], ...] = (
    ("gateway_to_conversation", "prompt_received", "prompt_applied"),
    ("conversation_to_llm", "prompt_applied", "request_taken"),
    ("llm_first_token", "request_taken", "provider_first_token"),
    ("to_caller", "provider_first_token", "first_token_sent"),
)
_TURN_FACTS = frozenset(
    {
        "prompt_received",
        "prompt_applied",
        "llm_requested",
        "request_taken",
        "provider_first_token",
        "first_token_sent",
        "last_token_sent",
    }
)
MAX_CALLS = 500
MAX_ITEMS = 400  # transcript items kept per call


@dataclass(slots=True)
class TranscriptItem:
    """One line of a call's transcript.

    ``kind``: ``caller`` (a final prompt), ``agent`` (a reply, growing while it
    streams), ``dtmf``, ``reprompt`` (text the conversation sent outside a
    turn: a silence re-prompt or goodbye), ``tool`` (a tool call or a frame a
    tool sent), ``end`` (the app ended the session) or ``error``. An agent
    reply cut by a barge-in has ``heard`` (what the caller heard) and ``cut``
    (what was generated but never played).
    """

    kind: str
    at_ms: float
    text: str = ""
    turn: int = 0
    reply_to: int = -1
    session: str = ""
    done: bool = False
    heard: str | None = None
    cut: str = ""
    generated: str = ""  # an agent reply's whole text, from its llm.result
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "at_ms": self.at_ms,
            "text": self.text,
            "turn": self.turn,
        }
        if self.kind == "agent":
            out.update(reply_to=self.reply_to, done=self.done)
            if self.heard is not None:
                out.update(barge_in=True, heard=self.heard, cut=self.cut)
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(slots=True)
class TurnTiming:
    """The facts of one turn (``t_ms`` of each, first seen wins)."""

    turn: int
    reply_to: int
    t_ms: dict[str, float] = field(default_factory=dict)

    def stages_ms(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, start, end in STAGES:
            if start in self.t_ms and end in self.t_ms:
                out[name] = round(max(0.0, self.t_ms[end] - self.t_ms[start]), 3)
        return out

    def first_token_ms(self) -> float | None:
        """Prompt received to first token sent: what the caller waited."""
        if "prompt_received" in self.t_ms and "first_token_sent" in self.t_ms:
            return round(max(0.0, self.t_ms["first_token_sent"] - self.t_ms["prompt_received"]), 3)
        return None


@dataclass(slots=True)
class CallView:
    """Everything the log knows about one call."""

    call: str
    start_ms: float
    end_ms: float | None = None
    from_: str = ""
    to: str = ""
    direction: str = ""
    gateway: str = ""
    turns: int = 0
    interruptions: int = 0
    ended_by: str = ""  # the reason of the app's ``end`` frame (end_call, silence, ...)
    close_code: int | None = None
    close_reason: str = ""
    errors: list[str] = field(default_factory=list)
    apologies: int = 0
    dead_letters: int = 0
    tool_calls: int = 0
    items: list[TranscriptItem] = field(default_factory=list)
    # Barge-ins as (session, seq, heard): matched to their reply when read, since
    # the interrupt and the reply's tokens come from different streams in any order.
    barge_ins: list[tuple[str, int, str]] = field(default_factory=list)
    timings: dict[tuple[str, int], TurnTiming] = field(default_factory=dict)
    _replies: dict[tuple[str, int], TranscriptItem] = field(default_factory=dict)
    _indexes: dict[tuple[str, int], set[int]] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.end_ms is None

    @property
    def outcome(self) -> str:
        """How the call ended, in a few words ("open" while it lasts)."""
        if self.open:
            return "open"
        if self.ended_by:
            return f"agent ended ({self.ended_by})"
        if self.close_code in (1001, 1011):
            return f"gateway closed ({self.close_reason or self.close_code})"
        return "caller hung up"

    def problems(self) -> list[str]:
        out = list(self.errors)
        if self.apologies:
            out.append(f"{self.apologies} apolog{'y' if self.apologies == 1 else 'ies'}")
        if self.dead_letters:
            out.append(f"{self.dead_letters} dead letter{'s' if self.dead_letters > 1 else ''}")
        return out

    def summary(self, now_ms: float | None = None) -> dict[str, Any]:
        end = self.end_ms if self.end_ms is not None else now_ms
        return {
            "call": self.call,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "duration_s": None if end is None else round(max(0.0, end - self.start_ms) / 1000, 1),
            "turns": self.turns,
            "from": self.from_,
            "to": self.to,
            "direction": self.direction,
            "open": self.open,
            "outcome": self.outcome,
            "interruptions": self.interruptions,
            "tool_calls": self.tool_calls,
            "errors": len(self.errors),
            "apologies": self.apologies,
            "dead_letters": self.dead_letters,
            "problems": self.problems(),
        }

    def turn_timings(self) -> list[dict[str, Any]]:
        rows = sorted(
            self.timings.values(), key=lambda t: (t.t_ms.get("prompt_received", 0), t.turn)
        )
        return [
            {
                "turn": t.turn,
                "reply_to": t.reply_to,
                "first_token_ms": t.first_token_ms(),
                "stages_ms": t.stages_ms(),
            }
            for t in rows
        ]

    def transcript(self) -> list[TranscriptItem]:
        """The items in time order, each reply cut by a barge-in marked with what was heard."""
        for session, seq, heard in self.barge_ins:
            replies = [
                item
                for (s, reply_to), item in self._replies.items()
                if s == session and reply_to < seq
            ]
            if replies:
                item = max(replies, key=lambda i: i.reply_to)
                item.heard = heard
                _recut(item)
        return sorted(self.items, key=lambda i: i.at_ms)

    def to_json(self, now_ms: float | None = None) -> dict[str, Any]:
        return {
            **self.summary(now_ms),
            "gateway": self.gateway,
            "transcript": [item.to_json() for item in self.transcript()],
            "turn_timings": self.turn_timings(),
        }

    # --------------------------------------------------------------- updating

    def _add(self, item: TranscriptItem) -> None:
        self.items.append(item)
        if len(self.items) > MAX_ITEMS:
            del self.items[0]

    def _reply(self, env: Envelope, reply_to: int, at_ms: float) -> TranscriptItem:
        key = (env.session, reply_to)
        item = self._replies.get(key)
        if item is None:
            item = TranscriptItem(
                "agent", at_ms, turn=env.turn, reply_to=reply_to, session=env.session
            )
            self._replies[key] = item
            self._indexes[key] = set()
            self._add(item)
        return item


def _recut(item: TranscriptItem) -> None:
    """Split a barged-in reply into what was heard and what was cut."""
    if item.heard is None:
        return
    heard = item.heard.strip()
    whole = item.generated if len(item.generated) > len(item.text) else item.text
    at = whole.find(heard) if heard else 0
    item.cut = whole[at + len(heard) :] if at >= 0 else ""


def _num(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else default


class CallLog:
    """Folds bus entries into :class:`CallView` objects; see the module docstring."""

    def __init__(self, *, max_calls: int = MAX_CALLS) -> None:
        self.max_calls = max_calls
        self.calls: OrderedDict[str, CallView] = OrderedDict()

    def _view(self, env: Envelope, at_ms: float, *, create: bool) -> CallView | None:
        view = self.calls.get(env.call)
        if view is None:
            if not create or not env.call:
                return None
            view = CallView(env.call, at_ms)
            self.calls[env.call] = view
            while len(self.calls) > self.max_calls:
                self.calls.popitem(last=False)
        if env.gateway and not view.gateway:
            view.gateway = env.gateway
        return view

    def apply(self, source: str, env: Envelope, *, dead_error: str | None = None) -> str | None:
        """Apply one entry read from ``source``; returns the call it changed (or None)."""
        at_ms = float(env.ts)
        if env.kind == Kind.EVENT:
            at_ms = _num(env.body.get("t_ms"), at_ms)
        if source == SOURCE_DEAD:
            view = self._view(env, at_ms, create=False)
            if view is None:
                return None
            view.dead_letters += 1
            view._add(TranscriptItem("error", at_ms, f"dead letter: {dead_error or '?'}"))
            return view.call
        if source == SOURCE_CALLS:
            return self._partition(env, at_ms)
        if source == SOURCE_GATEWAY:
            return self._gateway(env, at_ms)
        if source == SOURCE_EVENTS and env.kind == Kind.EVENT:
            return self._fact(env, at_ms)
        return None

    def _partition(self, env: Envelope, at_ms: float) -> str | None:
        b = env.body
        view = self._view(env, at_ms, create=env.kind == Kind.CALL_SETUP)
        if view is None:
            return None
        if env.kind == Kind.CALL_SETUP:
            view.from_ = str(b.get("from") or view.from_)
            view.to = str(b.get("to") or view.to)
            view.direction = str(b.get("direction") or view.direction)
            view.end_ms = None  # a new session of the same call (resume)
        elif env.kind == Kind.CALL_PROMPT and b.get("last", True):
            view.turns += 1
            text = str(b.get("voicePrompt", ""))
            view._add(TranscriptItem("caller", at_ms, text, turn=env.turn, reply_to=env.seq))
        elif env.kind == Kind.CALL_DTMF:
            view._add(TranscriptItem("dtmf", at_ms, str(b.get("digit", "")), turn=env.turn))
        elif env.kind == Kind.CALL_INTERRUPT:
            view.interruptions += 1
            view.barge_ins.append((env.session, env.seq, str(b.get("utteranceUntilInterrupt", ""))))
        elif env.kind == Kind.CALL_ERROR:
            view.errors.append(f"twilio error: {b.get('description', '?')}")
            view._add(TranscriptItem("error", at_ms, str(b.get("description", ""))))
        elif env.kind == Kind.CALL_CLOSED:
            view.end_ms = at_ms
            code = b.get("code")
            view.close_code = code if isinstance(code, int) else None
            view.close_reason = str(b.get("reason") or "")
        elif env.kind == Kind.LLM_RESULT:
            self._result(view, env, at_ms)
        else:
            return None
        return view.call

    def _result(self, view: CallView, env: Envelope, at_ms: float) -> None:
        b = env.body
        reply_to = b.get("reply_to")
        if not isinstance(reply_to, int):
            return
        for call in b.get("tool_calls") or []:
            if not isinstance(call, dict):
                continue
            view.tool_calls += 1
            view._add(
                TranscriptItem(
                    "tool",
                    at_ms,
                    str(call.get("name", "?")),
                    turn=env.turn,
                    detail={
                        "input": call.get("input"),
                        "result": call.get("result"),
                        "is_error": bool(call.get("is_error")),
                    },
                )
            )
        text = b.get("text")
        item = view._replies.get((env.session, reply_to))
        if isinstance(text, str) and item is not None:
            # The whole reply as generated, including what a cancel kept off the wire.
            item.generated = text
        if b.get("error"):
            view.errors.append(f"llm error: {b.get('error')}")

    def _gateway(self, env: Envelope, at_ms: float) -> str | None:
        view = self._view(env, at_ms, create=False)
        if view is None:
            return None
        b = env.body
        if env.kind == Kind.LLM_TOKENS:
            reply_to, index = b.get("reply_to"), b.get("index")
            if not isinstance(reply_to, int) or not isinstance(index, int):
                return None
            item = view._reply(env, reply_to, at_ms)
            seen = view._indexes[(env.session, reply_to)]
            if index not in seen:
                seen.add(index)
                item.text += str(b.get("text", ""))
            if b.get("last") is True:
                item.done = True
            return view.call
        if env.kind != Kind.GATEWAY_SEND:
            return None
        frame = b.get("frame")
        if not isinstance(frame, dict):
            return None
        kind = frame.get("type")
        by_tool = b.get("origin") == "llm"
        if kind == "end":
            reason = _handoff_reason(frame.get("handoffData"))
            view.ended_by = reason or "end"
            view._add(TranscriptItem("end", at_ms, reason or "end", turn=env.turn))
        elif kind == "text" and not by_tool:
            view._add(TranscriptItem("reprompt", at_ms, str(frame.get("token", "")), env.turn))
        else:
            text = str(frame.get("token") or frame.get("digits") or frame.get("ttsLanguage") or "")
            view._add(
                TranscriptItem("tool", at_ms, f"{kind}: {text}".strip(), env.turn, detail=frame)
            )
        return view.call

    def _fact(self, env: Envelope, at_ms: float) -> str | None:
        name = env.body.get("fact")
        view = self._view(env, at_ms, create=name == "call_started")
        if view is None:
            return None
        if name == "call_started":
            view.direction = str(env.body.get("direction") or view.direction)
            view.start_ms = min(view.start_ms, at_ms)
        elif name == "call_ended":
            view.end_ms = at_ms if view.end_ms is None else max(view.end_ms, at_ms)
        elif name == "provider_error":
            view.apologies += 1
        elif name == "frame_rejected":
            view.errors.append(f"frame rejected: {env.body.get('reason', '?')}")
        elif name in _TURN_FACTS:
            reply_to = env.body.get("reply_to", env.seq)
            if not isinstance(reply_to, int):
                return None
            key = (env.session, reply_to)
            timing = view.timings.get(key)
            if timing is None:
                timing = view.timings[key] = TurnTiming(env.turn, reply_to)
            timing.turn = max(timing.turn, env.turn)
            timing.t_ms.setdefault(str(name), at_ms)
        else:
            return None
        return view.call

    # ---------------------------------------------------------------- reading

    def summaries(self, now_ms: float | None = None, *, limit: int | None = None) -> list[Any]:
        """Recent calls, newest first (by start)."""
        views = sorted(self.calls.values(), key=lambda v: v.start_ms, reverse=True)
        return [v.summary(now_ms) for v in views[:limit]]

    def call(self, call: str) -> CallView | None:
        return self.calls.get(call)

    def open_calls(self) -> list[str]:
        return [v.call for v in self.calls.values() if v.open]

    def latency(self) -> dict[str, Any]:
        """Percentiles (p50, p95, p99, ms) of first-token latency and of each stage."""
        first: list[float] = []
        stages: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
        for view in self.calls.values():
            for timing in view.timings.values():
                ms = timing.first_token_ms()
                if ms is not None:
                    first.append(ms)
                for name, value in timing.stages_ms().items():
                    stages[name].append(value)
        return {
            "turns": len(first),
            "first_token_ms": percentiles(first),
            "stages_ms": {name: percentiles(values) for name, values in stages.items()},
        }


def percentiles(values: list[float]) -> dict[str, float | None]:
    """Nearest-rank p50, p95 and p99 (None without values)."""
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99)}


def _handoff_reason(data: Any) -> str:
    """The ``reason`` of an ``end`` frame's handoffData (a JSON string), or ""."""
    if not isinstance(data, str):
        return ""
    try:
        parsed = json.loads(data)
    except ValueError:
        return ""
    return str(parsed.get("reason", "")) if isinstance(parsed, dict) else ""
