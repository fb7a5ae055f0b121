"""An example plug-in actor: per-call analytics written to its own stream.

It reads the facts every Switchboard actor publishes (every shard of
``keys.event_streams()``) as its own consumer group, ``analytics``, so
running it or not changes nothing for the gateway, the conversation or the
LLM actors. For each call it keeps, in memory, the caller's words and the
interruptions; when the call ends (``call_ended``) it appends one ``analytics.call`` entry to
``{namespace}:{analytics}``::

    {"talk_time_s": 42.1, "turns": 3, "interruptions": 1,
     "caller_words": 27, "agent_streaming_s": 1.9,
     "topics": ["table", "booking", "friday"]}

Topics are the caller's most frequent content words (a stop-word list, no
model): an example of the shape, not of the science. docs/WRITING-ACTORS.md
walks through this file.
"""

from __future__ import annotations

import re
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from prometheus_client import Counter

from actors.plugins import PluginContext
from actors.runtime import Actor
from bus.base import Entry
from bus.envelope import Envelope, Kind

log = structlog.get_logger()

GROUP = "analytics"
KIND = "analytics.call"
MAX_TOPICS = 5
_WORD = re.compile(r"[a-zA-Z][a-zA-Z'-]+")
STOP_WORDS = frozenset(
    {
        "about",
        "after",
        "again",
        "also",
        "because",
        "been",
        "before",
        "being",
        "could",
        "does",
        "doing",
        "from",
        "have",
        "having",
        "here",
        "just",
        "like",
        "more",
        "most",
        "much",
        "need",
        "only",
        "other",
        "over",
        "really",
        "should",
        "some",
        "such",
        "than",
        "that",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "thing",
        "things",
        "this",
        "those",
        "through",
        "very",
        "want",
        "what",
        "when",
        "where",
        "which",
        "while",
        "will",
        "with",
        "would",
        "your",
        "yours",
        "you're",
        "i'm",
        "it's",
        "that's",
        "don't",
        "can't",
        "okay",
        "yeah",
        "please",
        "thanks",
        "thank",
        "hello",
        "tell",
        "know",
        "think",
        "going",
    }
)


def analytics_stream(namespace: str) -> str:
    """Where the plug-in writes: its own stream, its own hash tag."""
    return f"{namespace}:{{analytics}}"


def topics(texts: Sequence[str], limit: int = MAX_TOPICS) -> list[str]:
    """The most frequent content words of ``texts``, ties in order of first use."""
    words = [w.lower() for text in texts for w in _WORD.findall(text)]
    content = [w for w in words if len(w) > 3 and w not in STOP_WORDS]
    tally = Tally(content)
    first = {w: i for i, w in reversed(list(enumerate(content)))}
    return sorted(tally, key=lambda w: (-tally[w], first[w]))[:limit]


@dataclass(slots=True)
class _Call:
    started_ms: float | None = None
    said: list[str] = field(default_factory=list)
    interruptions: int = 0
    first_token_ms: dict[int, float] = field(default_factory=dict)
    streaming_ms: float = 0.0


class AnalyticsActor(Actor):
    """Summarises each call's talk time, interruptions and topics."""

    name = "analytics"
    group = GROUP

    def __init__(self, context: PluginContext) -> None:
        self.keys = context.keys
        self.retention_ms = context.retention_ms
        self.stream = analytics_stream(context.keys.namespace)
        self.calls: dict[str, _Call] = {}
        self.written = Counter(
            "switchboard_analytics_calls",
            "Calls summarised by the analytics plug-in.",
            registry=context.registry,
        )

    def streams(self) -> Sequence[str]:
        return self.keys.event_streams()

    async def handle(self, env: Envelope, entry: Entry) -> None:
        if env.kind != Kind.EVENT:
            return
        fact = env.body.get("fact")
        t_ms = float(env.body.get("t_ms", env.ts))
        call = self.calls.setdefault(env.call, _Call())
        reply_to = int(env.body.get("reply_to", 0) or 0)
        if fact == "call_started":
            call.started_ms = t_ms
        elif fact == "prompt_received":
            call.said.append(str(env.body.get("text", "")))
        elif fact == "interrupt_received":
            call.interruptions += 1
        elif fact == "first_token_sent":
            call.first_token_ms[reply_to] = t_ms
        elif fact == "last_token_sent" and reply_to in call.first_token_ms:
            call.streaming_ms += t_ms - call.first_token_ms.pop(reply_to)
        elif fact == "call_ended":
            await self._summarise(env, call, t_ms)

    async def _summarise(self, env: Envelope, call: _Call, ended_ms: float) -> None:
        talk = (ended_ms - call.started_ms) / 1000 if call.started_ms is not None else None
        body = {
            "talk_time_s": None if talk is None else round(talk, 3),
            "turns": len(call.said),
            "interruptions": call.interruptions,
            "caller_words": sum(len(text.split()) for text in call.said),
            "agent_streaming_s": round(call.streaming_ms / 1000, 3),
            "topics": topics(call.said),
        }
        out = Envelope(kind=KIND, call=env.call, session=env.session, body=body)
        # Written before the call is forgotten: a crash in between repeats the
        # entry (at least once), never loses it.
        await self.bus.append(self.stream, out.encode())
        self.calls.pop(env.call, None)
        self.written.inc()
        log.info("call_analytics", **body)


def make_actor(context: PluginContext) -> AnalyticsActor:
    """The entry point named in pyproject.toml: build the actor for this process."""
    return AnalyticsActor(context)
