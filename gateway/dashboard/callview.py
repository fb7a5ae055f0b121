"""One call as the dashboard shows it: transcript items, turn timings, the view.

Plain data with the JSON each one answers on ``/api/call`` and the live feed
(the ``TypedDict`` s below are that contract with ``static/dashboard/app.js``
and ``switchboard calls``). :mod:`gateway.dashboard.calllog` fills them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict

from bus.messages import LlmTokens

# The caller-facing stages of a turn: (name, from fact, to fact).
STAGES: tuple[tuple[str, str, str], ...] = (
    ("gateway_to_conversation", "prompt_received", "prompt_applied"),
    ("conversation_to_llm", "prompt_applied", "request_taken"),
    ("llm_first_token", "request_taken", "provider_first_token"),
    ("to_caller", "provider_first_token", "first_token_sent"),
)
MAX_ITEMS = 400  # transcript items kept per call


class ItemJson(TypedDict):
    kind: str
    at_ms: float
    text: str
    turn: int
    reply_to: NotRequired[int]
    done: NotRequired[bool]
    barge_in: NotRequired[bool]
    heard: NotRequired[str]
    cut: NotRequired[str]
    detail: NotRequired[Mapping[str, object]]


class Percentiles(TypedDict):
    p50: float | None
    p95: float | None
    p99: float | None


class TurnTimingJson(TypedDict):
    turn: int
    reply_to: int
    first_token_ms: float | None
    stages_ms: dict[str, float]


SummaryJson = TypedDict(
    "SummaryJson",
    {
        "call": str,
        "start_ms": float,
        "end_ms": float | None,
        "duration_s": float | None,
        "turns": int,
        "from": str,
        "to": str,
        "direction": str,
        "open": bool,
        "outcome": str,
        "interruptions": int,
        "tool_calls": int,
        "errors": int,
        "apologies": int,
        "dead_letters": int,
        "problems": list[str],
    },
)


class CallJson(SummaryJson):
    gateway: str
    transcript: list[ItemJson]
    turn_timings: list[TurnTimingJson]


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
    detail: Mapping[str, object] = field(default_factory=dict)

    def to_json(self) -> ItemJson:
        out: ItemJson = {
            "kind": self.kind,
            "at_ms": self.at_ms,
            "text": self.text,
            "turn": self.turn,
        }
        if self.kind == "agent":
            out["reply_to"], out["done"] = self.reply_to, self.done
            if self.heard is not None:
                out["barge_in"], out["heard"], out["cut"] = True, self.heard, self.cut
        if self.detail:
            out["detail"] = self.detail
        return out

    def recut(self) -> None:
        """Split a barged-in reply into what was heard and what was cut."""
        if self.heard is None:
            return
        heard = self.heard.strip()
        whole = self.generated if len(self.generated) > len(self.text) else self.text
        at = whole.find(heard) if heard else 0
        self.cut = whole[at + len(heard) :] if at >= 0 else ""


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

    def to_json(self) -> TurnTimingJson:
        return {
            "turn": self.turn,
            "reply_to": self.reply_to,
            "first_token_ms": self.first_token_ms(),
            "stages_ms": self.stages_ms(),
        }


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
    replies: dict[tuple[str, int], TranscriptItem] = field(default_factory=dict)
    indexes: dict[tuple[str, int], set[int]] = field(default_factory=dict)
    # Batches of held (speculative) replies not adopted yet, with their turn
    # and time: shown only once ``gateway.adopt`` names them, never otherwise.
    held: dict[tuple[str, int], list[tuple[int, float, LlmTokens]]] = field(default_factory=dict)
    adopted: set[tuple[str, int]] = field(default_factory=set)

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

    def summary(self, now_ms: float | None = None) -> SummaryJson:
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

    def turn_timings(self) -> list[TurnTimingJson]:
        rows = sorted(
            self.timings.values(), key=lambda t: (t.t_ms.get("prompt_received", 0), t.turn)
        )
        return [t.to_json() for t in rows]

    def transcript(self) -> list[TranscriptItem]:
        """The items in time order, each reply cut by a barge-in marked with what was heard."""
        for session, seq, heard in self.barge_ins:
            replies = [
                item
                for (s, reply_to), item in self.replies.items()
                if s == session and reply_to < seq
            ]
            if replies:
                item = max(replies, key=lambda i: i.reply_to)
                item.heard = heard
                item.recut()
        return sorted(self.items, key=lambda i: i.at_ms)

    def to_json(self, now_ms: float | None = None) -> CallJson:
        return {
            **self.summary(now_ms),
            "gateway": self.gateway,
            "transcript": [item.to_json() for item in self.transcript()],
            "turn_timings": self.turn_timings(),
        }

    def add(self, item: TranscriptItem) -> None:
        self.items.append(item)
        if len(self.items) > MAX_ITEMS:
            del self.items[0]

    def drop_held(self, session: str, below: int) -> None:
        """Held replies of ``session`` older than ``below`` will never be adopted."""
        for key in [k for k in self.held if k[0] == session and k[1] < below]:
            del self.held[key]

    def reply(self, session: str, reply_to: int, turn: int, at_ms: float) -> TranscriptItem:
        """The agent item of reply ``reply_to`` of ``session`` (made on its first tokens)."""
        key = (session, reply_to)
        item = self.replies.get(key)
        if item is None:
            item = TranscriptItem("agent", at_ms, turn=turn, reply_to=reply_to, session=session)
            self.replies[key] = item
            self.indexes[key] = set()
            self.add(item)
        return item


def percentiles(values: list[float]) -> Percentiles:
    """Nearest-rank p50, p95 and p99 (None without values)."""
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99)}


def finite(value: float, default: float) -> float:
    return value if math.isfinite(value) else default
