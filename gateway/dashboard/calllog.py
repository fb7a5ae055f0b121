"""The call log: what the streams say about recent calls, folded into one view per call.

Pure and synchronous (no I/O, no clock): feed it decoded bus entries with
:meth:`CallLog.apply` and read :meth:`CallLog.summaries`, :meth:`CallLog.call`
and :meth:`CallLog.latency`. The dashboard (:mod:`gateway.dashboard`) feeds it
from a live tail of the streams; ``switchboard calls`` feeds it from range
reads of the same streams. Both therefore tell the same story.

It is built from the bus alone, never from the actors (the gateway is an
edge and must not import them), and reads every body through its typed
message (:mod:`bus.messages`; an app frame through :mod:`relay`):

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
the facts' shared wall clock (``t_ms``): see ``callview.STAGES``.
At most ``max_calls`` calls are kept; the oldest started is forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypedDict

from bus.base import MalformedEntry
from bus.envelope import Envelope
from bus.messages import (
    BusMessage,
    CallClosed,
    CallDtmf,
    CallError,
    CallInterrupt,
    CallPrompt,
    CallSetup,
    Fact,
    GatewayAdopt,
    GatewaySend,
    LlmResult,
    LlmTokens,
    decode,
)
from gateway.dashboard.callview import (
    STAGES,
    CallView,
    Percentiles,
    SummaryJson,
    TranscriptItem,
    TurnTiming,
    finite,
    percentiles,
)
from relay import codec
from relay.errors import ProtocolError
from relay.handoff import Handoff
from relay.messages import End, Language, SendDigits, Text, wire_type

# Where an entry was read from; the log reads each kind only from its own source.
SOURCE_CALLS = "calls"
SOURCE_GATEWAY = "gateway"
SOURCE_EVENTS = "events"
SOURCE_DEAD = "dead"

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


class LatencyJson(TypedDict):
    turns: int
    first_token_ms: Percentiles
    stages_ms: dict[str, Percentiles]


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
        """Apply one entry read from ``source``; returns the call it changed (or None).

        An entry whose body is not its kind's message is not folded in (the
        actors dead-letter it; the dead-letter stream shows it here).
        """
        at_ms = float(env.ts)
        if source == SOURCE_DEAD:
            view = self._view(env, at_ms, create=False)
            if view is None:
                return None
            view.dead_letters += 1
            view.add(TranscriptItem("error", at_ms, f"dead letter: {dead_error or '?'}"))
            return view.call
        try:
            message = decode(env)
        except MalformedEntry:
            return None
        if source == SOURCE_CALLS:
            return self._partition(env, message, at_ms)
        if source == SOURCE_GATEWAY:
            return self._gateway(env, message, at_ms)
        if source == SOURCE_EVENTS and isinstance(message, Fact):
            return self._fact(env, message, finite(message.t_ms, at_ms))
        return None

    def _partition(self, env: Envelope, m: BusMessage, at_ms: float) -> str | None:
        view = self._view(env, at_ms, create=isinstance(m, CallSetup))
        if view is None:
            return None
        if isinstance(m, CallSetup):
            view.from_ = m.from_ or view.from_
            view.to = m.to or view.to
            view.direction = m.direction or view.direction
            view.end_ms = None  # a new session of the same call (resume)
        elif isinstance(m, CallPrompt) and m.last:
            view.turns += 1
            item = TranscriptItem("caller", at_ms, m.voice_prompt, turn=env.turn, reply_to=env.seq)
            view.add(item)
        elif isinstance(m, CallDtmf):
            view.add(TranscriptItem("dtmf", at_ms, m.digit, turn=env.turn))
        elif isinstance(m, CallInterrupt):
            view.interruptions += 1
            view.barge_ins.append((env.session, env.seq, m.utterance_until_interrupt))
        elif isinstance(m, CallError):
            view.errors.append(f"twilio error: {m.description or '?'}")
            view.add(TranscriptItem("error", at_ms, m.description))
        elif isinstance(m, CallClosed):
            view.end_ms = at_ms
            view.close_code = m.code
            view.close_reason = m.reason
        elif isinstance(m, LlmResult):
            self._result(view, env, m, at_ms)
        else:
            return None
        return view.call

    def _result(self, view: CallView, env: Envelope, result: LlmResult, at_ms: float) -> None:
        for call in result.tool_calls:
            view.tool_calls += 1
            detail = {"input": call.input, "result": call.result, "is_error": call.is_error}
            view.add(TranscriptItem("tool", at_ms, call.name, turn=env.turn, detail=detail))
        item = view.replies.get((env.session, result.reply_to))
        if item is not None:
            # The whole reply as generated, including what a cancel kept off the wire.
            item.generated = result.text
        if result.error:
            view.errors.append(f"llm error: {result.error}")

    def _gateway(self, env: Envelope, m: BusMessage, at_ms: float) -> str | None:
        view = self._view(env, at_ms, create=False)
        if view is None:
            return None
        if isinstance(m, LlmTokens):
            key = (env.session, m.reply_to)
            if m.held and key not in view.adopted:
                # A speculation: heard only if adopted (gateway.fence, rule 6).
                view.held.setdefault(key, []).append((env.turn, at_ms, m))
                return None
            self._tokens(view, env.session, m, env.turn, at_ms)
            view.drop_held(env.session, m.reply_to)
            return view.call
        if isinstance(m, GatewayAdopt):
            key = (env.session, m.reply_to)
            view.adopted.add(key)
            for turn, t_ms, tokens in view.held.pop(key, []):
                self._tokens(view, env.session, tokens, turn, t_ms)
            view.drop_held(env.session, m.reply_to)
            return view.call
        if isinstance(m, GatewaySend):
            self._app_frame(view, env, m, at_ms)
            return view.call
        return None

    def _tokens(self, view: CallView, session: str, m: LlmTokens, turn: int, at_ms: float) -> None:
        item = view.reply(session, m.reply_to, turn, at_ms)
        seen = view.indexes[(session, m.reply_to)]
        if m.index not in seen:
            seen.add(m.index)
            item.text += m.text
        item.done = item.done or m.last

    def _app_frame(self, view: CallView, env: Envelope, send: GatewaySend, at_ms: float) -> None:
        try:
            frame = codec.outbound_from_wire(send.frame)
        except ProtocolError:
            # A frame this build does not know (newer than its relay vocabulary).
            view.add(TranscriptItem("tool", at_ms, "app frame", env.turn, detail=dict(send.frame)))
            return
        if isinstance(frame, End):
            reason = _handoff_reason(frame.handoff_data)
            view.ended_by = reason or "end"
            view.add(TranscriptItem("end", at_ms, reason or "end", turn=env.turn))
        elif isinstance(frame, Text) and send.origin != "llm":
            view.add(TranscriptItem("reprompt", at_ms, frame.token, env.turn))
        else:
            if isinstance(frame, Text):
                text = frame.token
            elif isinstance(frame, SendDigits):
                text = frame.digits
            elif isinstance(frame, Language):
                text = frame.tts_language or frame.transcription_language or ""
            else:
                text = ""
            label = f"{wire_type(frame)}: {text}".strip()
            view.add(TranscriptItem("tool", at_ms, label, env.turn, detail=dict(send.frame)))

    def _fact(self, env: Envelope, fact: Fact, at_ms: float) -> str | None:
        name = fact.name
        view = self._view(env, at_ms, create=name == "call_started")
        if view is None:
            return None
        if name == "call_started":
            view.direction = fact.str_field("direction") or view.direction
            view.start_ms = min(view.start_ms, at_ms)
        elif name == "call_ended":
            view.end_ms = at_ms if view.end_ms is None else max(view.end_ms, at_ms)
        elif name in ("provider_error", "reply_late"):
            view.apologies += 1
        elif name == "frame_rejected":
            view.errors.append(f"frame rejected: {fact.str_field('reason') or '?'}")
        elif name in _TURN_FACTS:
            reply_to = fact.int_field("reply_to")
            reply_to = env.seq if reply_to is None and "reply_to" not in fact.fields else reply_to
            if reply_to is None:
                return None
            key = (env.session, reply_to)
            timing = view.timings.get(key)
            if timing is None:
                timing = view.timings[key] = TurnTiming(env.turn, reply_to)
            timing.turn = max(timing.turn, env.turn)
            timing.t_ms.setdefault(name, at_ms)
        else:
            return None
        return view.call

    # ---------------------------------------------------------------- reading

    def summaries(
        self, now_ms: float | None = None, *, limit: int | None = None
    ) -> list[SummaryJson]:
        """Recent calls, newest first (by start)."""
        views = sorted(self.calls.values(), key=lambda v: v.start_ms, reverse=True)
        return [v.summary(now_ms) for v in views[:limit]]

    def call(self, call: str) -> CallView | None:
        return self.calls.get(call)

    def open_calls(self) -> list[str]:
        return [v.call for v in self.calls.values() if v.open]

    def latency(self) -> LatencyJson:
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


def _handoff_reason(data: str | None) -> str:
    """The ``reason`` of an ``end`` frame's handoffData (a JSON string), or ""."""
    handoff = Handoff.parse(data)
    return str(handoff.reason) if handoff is not None else ""
