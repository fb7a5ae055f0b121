"""One relay session's state: its socket, protocol object, counters, fence and speech.

A :class:`Session` is created when the WebSocket is accepted and registered by
call sid once ``setup`` arrived (:mod:`gateway.lifecycle`). Inbound frames
(:mod:`gateway.inbound`) and outbound dispatch (:mod:`gateway.dispatch`)
read and update it; the rules themselves live in the pure
:class:`~gateway.fence.ReplyFence` and :class:`~gateway.speech.SpeechModel`.

``prompts`` counts the final prompts of this session. It is the gateway's
own count, not the conversation's turn number (the conversation numbers
turns per call, and keypad entries start turns too), so it has its own name
in logs (``prompts``) and is never written into an envelope's ``turn``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import trio
import trio_websocket

from bus.envelope import Envelope
from gateway.fence import ReplyFence
from gateway.reply_deadline import ReplyDeadline
from gateway.speech import SpeechModel
from relay import OutboundMessage, RelayConnection

__all__ = ["PROMPTS_TIMED", "Deferred", "Outgoing", "SentFacts", "Session"]

PROMPTS_TIMED = 8  # final prompts awaiting their first token, kept per session


@dataclass(frozen=True, slots=True)
class SentFacts:
    """Facts to publish once a token frame has really been written to the socket.

    Also carries the token's ``reply_to`` so the sender can fence at write time,
    and the conversation's ``turn`` from the token entry, for the facts.
    """

    names: tuple[str, ...]
    reply_to: int
    turn: int

    def part(self, *, first: bool, final: bool) -> SentFacts:
        """The facts of one frame of a text split into several:
        ``first_token_sent`` on the first, ``last_token_sent`` on the final one."""
        keep = {
            name for name, on in (("first_token_sent", first), ("last_token_sent", final)) if on
        }
        return replace(self, names=tuple(n for n in self.names if n in keep))


# An outbox item: the frame, its wire type (for metrics), facts to emit once sent.
Outgoing = tuple[str, str, SentFacts | None]
# An after_speech frame waiting for the reply to finish playing (and the bus
# entry it came from; None for the gateway's own, such as a drain's ``end``).
Deferred = tuple[Envelope | None, OutboundMessage]


@dataclass(eq=False, slots=True)
class Session:
    """State of one relay socket. Registered by call sid once ``setup`` arrived."""

    ws: trio_websocket.WebSocketConnection
    relay: RelayConnection
    outbox: trio.MemorySendChannel[Outgoing]
    call_sid: str = ""
    session_id: str = ""
    seq: int = 0  # frames accepted from Twilio; 1 = setup
    prompts: int = 0  # final prompts seen in this session (not a turn number)
    fence: ReplyFence = field(default_factory=ReplyFence)
    speech: SpeechModel = field(default_factory=SpeechModel)
    speech_changed: trio.Event = field(default_factory=trio.Event)
    peer_closed: trio.Event = field(default_factory=trio.Event)
    deferred: trio.MemorySendChannel[Deferred] | None = None
    # Per reply: an escape sequence cut off at the end of its last batch
    # (gateway.spoken.clean_part), waiting for the rest.
    held_escape: dict[int, str] = field(default_factory=dict)
    # Set when the gateway ends the session itself: the close code and reason.
    close_with: tuple[int, str] | None = None
    reply: ReplyDeadline = field(default_factory=ReplyDeadline)
    # When each recent final prompt arrived (Trio time), by seq, until its
    # reply's first token is sent: the response latency (gateway.dispatch).
    prompt_at: dict[int, float] = field(default_factory=dict)
    reply_armed: trio.Event = field(default_factory=trio.Event)
    # The newest caller event on the bus (its seq), and a wake-up when it moves.
    published: int = 0
    published_changed: trio.Event = field(default_factory=trio.Event)

    def touch_speech(self) -> None:
        """Wake whoever waits on the speech model (after_speech frames)."""
        self.speech_changed.set()
        self.speech_changed = trio.Event()

    def prompted(self, seq: int, now: float) -> None:
        """Arm the reply deadline for the final prompt ``seq`` and wake its watcher."""
        self.prompt_at[seq] = now
        while len(self.prompt_at) > PROMPTS_TIMED:
            del self.prompt_at[next(iter(self.prompt_at))]  # never answered: forget it
        self.reply.prompted(seq, now)
        self.reply_armed.set()
        self.reply_armed = trio.Event()

    def mark_published(self, seq: int) -> None:
        """The caller event ``seq`` is on the bus (events go there in order)."""
        self.published = max(self.published, seq)
        self.published_changed.set()
        self.published_changed = trio.Event()

    def apologised(self) -> int | None:
        """The reply deadline's apology went out: the seq of the prompt it was
        for (None: none), whose late reply is now fenced (``ReplyFence.withdraw``)."""
        seq = self.reply.apologised()
        if seq is not None:
            self.fence.withdraw(seq)
        return seq

    def log_context(self) -> dict[str, str | None]:
        """Call and session of this socket, for logs made outside its task."""
        return {"call_sid": self.call_sid or None, "session_id": self.session_id or None}
