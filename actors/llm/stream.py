"""The token stream: a reply's deltas to the gateway, first at once, then coalesced.

The provider's deltas go to the owning gateway's stream
(``keys.gateway(env.gateway)``) as ``llm.tokens``. The first delta goes out
alone at once (time to first audio is what the caller feels); after that,
entries go out at most every ``token_coalesce_ms`` (50 ms by default), each
with everything produced since the previous one, so at a word every 20 ms the
bus, the gateway and the socket carry a few words per entry instead of one.
Those later entries leave on a tick shared by every reply of the worker (a
fifth of the floor: 10 ms), so the entries of many replies go out in the same
scheduler pass, in one Redis pipeline, and reach the gateway as one batch.
The end of the stream and a tool's frame do not wait; a slow bus still means
fewer, larger entries rather than a growing backlog. Indexes count 0, 1, 2,
... per request; the final entry has ``last=true`` (its text may be empty)
and is written with the result (``actors.llm.result``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from actors.timers import SharedTimer
from bus.base import Bus, Fields
from bus.envelope import Envelope
from bus.keys import Keys
from bus.messages import GatewaySend, LlmResult, LlmTokens, envelope

# Later token entries leave on a tick of floor / TICKS_PER_FLOOR (10 ms for
# the default 50 ms floor), shared by every reply of the worker.
TICKS_PER_FLOOR = 5


@dataclass(frozen=True, slots=True)
class Frame:
    """An app-to-Twilio frame a tool sends, in order with the reply's text."""

    frame: Mapping[str, Any]


Piece = str | Frame


@dataclass(slots=True)
class Wake:
    """How the producer cuts the sender's coalescing wait short.

    Set when a tool's frame is queued and when the stream ends (finished,
    failed or cancelled); the sender replaces ``event`` before each wait.
    Plain deltas do not set it: the sender sleeps until its deadline instead
    of waking once per word.
    """

    event: trio.Event = field(default_factory=trio.Event)


@dataclass(frozen=True, slots=True)
class ReplyOut:
    """What one reply writes towards the caller's gateway, as bus entries."""

    bus: Bus
    keys: Keys
    request: Envelope
    reply_to: int
    generation: int = 0  # the attempt's (``LlmTokens.generation``)
    held: bool = False  # a speculative reply: every token entry is marked held

    def envelope(self, message: LlmTokens | GatewaySend | LlmResult) -> Envelope:
        """``message`` with the request's stamps (call, session, gateway, seq, turn)."""
        env = self.request
        return envelope(
            message,
            call=env.call,
            session=env.session,
            gateway=env.gateway,
            seq=env.seq,
            turn=env.turn,
        )

    @property
    def stream(self) -> str:
        return self.keys.gateway(self.request.gateway)

    def tokens(self, text: str, index: int, *, last: bool) -> Fields:
        tokens = LlmTokens(
            text=text,
            index=index,
            last=last,
            reply_to=self.reply_to,
            generation=self.generation,
            held=self.held,
        )
        return self.envelope(tokens).encode()

    def frame(self, frame: Mapping[str, Any], *, after_speech: bool = False) -> Fields:
        # ``origin`` tells replay which frames the conversation sent itself.
        send = GatewaySend(frame=frame, after_speech=after_speech, origin="llm")
        return self.envelope(send).encode()

    async def send_frame(self, frame: Mapping[str, Any]) -> None:
        if self.request.gateway:
            await self.bus.append(self.stream, self.frame(frame))

    async def send_tokens(self, text: str, index: int) -> None:
        if self.request.gateway:
            await self.bus.append(self.stream, self.tokens(text, index, last=False))


class TokenSender:
    """Forwards one reply's deltas as coalesced entries (and tools' frames)."""

    def __init__(self, out: ReplyOut, *, floor_s: float, ticks: SharedTimer, wake: Wake) -> None:
        self.out = out
        self.floor_s = floor_s
        self.ticks = ticks
        self.wake = wake

    async def run(
        self, receive: trio.MemoryReceiveChannel[Piece], *, start_index: int = 0
    ) -> tuple[int, str]:
        """Send until the producer closes its channel.

        Returns the next index and the text received but not yet sent (it
        goes out in the final entry). A resumed reply starts at
        ``start_index``, after the entries an earlier delivery sent. A frame
        goes out after the text received before it, so e.g. a ``language``
        switch lands between the sentences around it. With
        ``token_coalesce_ms = 0`` an entry takes whatever piled up while the
        previous append was in flight.
        """
        index = start_index
        # When the previous token entry was handed to the bus (None: none yet).
        sent_at: float | None = None
        async with receive:
            while True:
                try:
                    first = await receive.receive()
                except trio.EndOfChannel:
                    return index, ""
                if isinstance(first, Frame):
                    await self.out.send_frame(first.frame)
                    continue
                parts = [first]
                frame: Frame | None = None
                ended = False
                if sent_at is not None:
                    # The first delta goes out alone: time to first audio
                    # matters more than entry count. Later ones gather until
                    # the floor (TTS speaks by clause: 50 ms is not heard).
                    frame, ended = await self._gather(receive, parts, sent_at + self.floor_s)
                if ended:
                    return index, "".join(parts)
                sent_at = trio.current_time()
                await self.out.send_tokens("".join(parts), index)
                index += 1
                if frame is not None:
                    await self.out.send_frame(frame.frame)

    async def _gather(
        self, receive: trio.MemoryReceiveChannel[Piece], parts: list[str], deadline: float
    ) -> tuple[Frame | None, bool]:
        """Add deltas to ``parts`` until ``deadline`` (trio time), a frame or the end.

        Returns the frame that stopped the gathering (it goes out after the
        text) and whether the stream ended. Sleeps until the deadline (on the
        worker's shared tick) rather than waking for every delta: only the
        producer's ``wake`` (a frame, the end of the stream) cuts the wait
        short. Whatever is queued is taken, even past the deadline.
        """
        while True:
            # A fresh event before draining: a wake-up after the drain is seen.
            self.wake.event = trio.Event()
            while True:
                try:
                    more = receive.receive_nowait()
                except trio.WouldBlock:
                    break
                except trio.EndOfChannel:
                    return None, True
                if isinstance(more, Frame):
                    return more, False
                parts.append(more)
            if trio.current_time() >= deadline:
                return None, False
            self.ticks.set_at(deadline, self.wake.event)
            await self.wake.event.wait()
