"""The state of one call as the conversation keeps it (persisted as JSON).

``CallState`` is everything the turn rules read and write: the history, the
turn counter, the turns whose reply is still outstanding (``OpenTurn``), the
reply the caller may still be hearing (``Speaking``), the DTMF buffer and the
call's timers (deadlines in wall-clock ms, the time base every process shares).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from actors.history import Message

# The conversation's timers: names in ``CallState.timers`` and in
# ``conversation.timer`` entries.
SILENCE = "silence"
DTMF = "dtmf"
REQUEST = "request"  # bounds how long a turn's request waits for an older result
SETTLE = "settle"  # an interim prompt stayed unchanged: time to speculate
REQUEST_WAIT_MS = 1000


def _answers(seq: int, reply_to: int, prompt_seq: int) -> bool:
    """A reply stamped ``reply_to`` (and, adopted, ``prompt_seq``) answers ``seq``;
    0 is no caller event (the greeting, a re-prompt, an unset ``prompt_seq``)."""
    return seq != 0 and seq in (reply_to, prompt_seq)


@dataclass(slots=True)
class OpenTurn:
    """A turn whose ``llm.result`` has not been applied yet."""

    turn: int
    reply_to: int
    # Where the reply's messages go in history: right after its user message.
    index: int
    played: list[str] = field(default_factory=list)  # its tokensPlayed so far
    interrupted: bool = False
    fragment: str = ""
    duration_ms: float | None = None
    superseded: bool = False  # a newer turn started (or the session ended)
    cancelled: bool = False  # a control.cancel was published for it
    # False while the request waits for an older turn's (cancelled) result,
    # so that it carries what the caller heard of that turn.
    requested: bool = True
    # When the gateway received the words this turn answers (wall ms; 0:
    # not known): the first-token budget counts from there.
    prompt_ms: int = 0
    # An adopted speculation: ``reply_to`` is the interim prompt's seq, and
    # ``prompt_seq`` the final prompt's (0: the same as ``reply_to``).
    speculative: bool = False
    prompt_seq: int = 0

    def answers(self, seq: int) -> bool:
        """Whether this turn answers the caller event ``seq``."""
        return _answers(seq, self.reply_to, self.prompt_seq)


@dataclass(slots=True)
class Speculation:
    """A held reply started on an interim prompt (``actors.conversation.speculation``)."""

    reply_to: int  # the interim prompt's seq
    text: str  # its words, as recognised
    session: str
    # The body of its ``llm.result`` when that came before the final prompt.
    result: dict[str, Any] | None = None


@dataclass(slots=True)
class Speaking:
    """The last reply applied to history (or the greeting, a re-prompt)."""

    start: int  # its first message in history
    count: int  # how many messages it spans
    text: str  # the text the caller was sent of it
    played: list[str] = field(default_factory=list)
    reply_to: int = 0  # the seq the reply answers; 0: the greeting or a re-prompt
    applied_ms: float = 0.0  # when its result was applied (wall ms)
    finished: bool = False  # ``agentSpeaking off`` came after it: heard to the end
    prompt_seq: int = 0  # an adopted speculation's final prompt (OpenTurn.prompt_seq)

    def answers(self, seq: int) -> bool:
        """Whether this reply answers the caller event ``seq``."""
        return _answers(seq, self.reply_to, self.prompt_seq)


@dataclass(slots=True)
class CallState:
    """Everything the conversation knows about one call (persisted as JSON)."""

    call: str
    session: str = ""
    gateway: str = ""
    turn: int = 0
    history: list[Message] = field(default_factory=list)
    last_entry_id: str = ""
    # The ``seq`` the current turn answers (its ``reply_to``).
    reply_to: int = 0
    # The newest turn whose ``llm.result`` was applied.
    answered_turn: int = 0
    closed: bool = False
    # The session's socket closed abnormally while a reply was cut off
    # (actors.conversation.cutoff): a resumed session answers again.
    cut_off: bool = False
    open_turns: list[OpenTurn] = field(default_factory=list)
    speaking: Speaking | None = None
    dtmf_digits: str = ""
    dtmf_seq: int = 0  # seq of the last digit buffered
    timers: dict[str, int] = field(default_factory=dict)  # timer -> deadline (wall ms)
    reprompts: int = 0  # silence re-prompts since the caller last said anything
    ending: bool = False  # the agent is ending the call (goodbye said, end sent)
    # The language Twilio recognised the caller's last words in (prompt.lang,
    # e.g. "es-ES", or just "es" with language="multi"); "" until a prompt.
    lang: str = ""
    # What the caps (``limits``) dropped from this call so far, by kind, and
    # what a rule dropped during the entry being applied (reported after it).
    dropped: dict[str, int] = field(default_factory=dict)
    pending_drops: dict[str, int] = field(default_factory=dict)
    # Preemptive replies: the latest interim prompt of the utterance (text,
    # seq), the speculations started on it so far, the one running, and
    # the discarded ones whose result is still to come ([session, reply_to]).
    partial_text: str = ""
    partial_seq: int = 0
    speculations: int = 0
    speculation: Speculation | None = None
    discarded: list[tuple[str, int]] = field(default_factory=list)
    # What the last entry applied publishes (stream, entry fields): written
    # with the state, appended after it, appended again if that entry comes
    # back (actors.conversation.actor).
    outbox: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    # What requests carry of the history (actors/conversation/delta.py):
    # the number of history[0] counting from the call's first message (the
    # caps drop from the front), the number just past the last request's
    # history, and how many requests the call made.
    history_base: int = 0
    sent_end: int = 0
    requests: int = 0

    def to_json(self) -> str:
        # orjson walks the dataclasses itself: ``json.dumps(asdict(self))``
        # deep-copied the whole history first, and written on every entry it
        # was 40% of a conversation worker's CPU on 200-turn calls.
        return orjson.dumps(self).decode()

    @classmethod
    def from_json(cls, raw: str) -> CallState:
        data: dict[str, Any] = orjson.loads(raw)
        speaking = data.get("speaking")
        speculation = data.get("speculation")
        return cls(
            call=str(data["call"]),
            session=str(data.get("session", "")),
            gateway=str(data.get("gateway", "")),
            turn=int(data.get("turn", 0)),
            # Written by to_json from typed history: its messages are API messages.
            history=[cast(Message, dict(m)) for m in data.get("history", [])],
            last_entry_id=str(data.get("last_entry_id", "")),
            cut_off=bool(data.get("cut_off", False)),
            reply_to=int(data.get("reply_to", 0)),
            answered_turn=int(data.get("answered_turn", 0)),
            closed=bool(data.get("closed", False)),
            open_turns=[OpenTurn(**t) for t in data.get("open_turns", [])],
            speaking=Speaking(**speaking) if speaking else None,
            dtmf_digits=str(data.get("dtmf_digits", "")),
            dtmf_seq=int(data.get("dtmf_seq", 0)),
            timers={str(k): int(v) for k, v in data.get("timers", {}).items()},
            reprompts=int(data.get("reprompts", 0)),
            ending=bool(data.get("ending", False)),
            lang=str(data.get("lang", "")),
            dropped={str(k): int(v) for k, v in data.get("dropped", {}).items()},
            partial_text=str(data.get("partial_text", "")),
            partial_seq=int(data.get("partial_seq", 0)),
            speculations=int(data.get("speculations", 0)),
            speculation=Speculation(**speculation) if speculation else None,
            discarded=[(str(s), int(r)) for s, r in data.get("discarded", [])],
            outbox=[
                (str(stream), {str(k): str(v) for k, v in fields.items()})
                for stream, fields in data.get("outbox", [])
            ],
            history_base=int(data.get("history_base", 0)),
            sent_end=int(data.get("sent_end", 0)),
            requests=int(data.get("requests", 0)),
        )

    def current(self) -> OpenTurn | None:
        """The open turn the caller is waiting on (not superseded), if any."""
        for t in self.open_turns:
            if t.turn == self.turn and not t.superseded:
                return t
        return None

    def shift(self, at: int, delta: int) -> None:
        """``delta`` messages went in (or out) at ``at``: move the marks from there on."""
        for t in self.open_turns:
            if t.index >= at:
                t.index += delta
        if self.speaking is not None and self.speaking.start >= at:
            self.speaking.start += delta
