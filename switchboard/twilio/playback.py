"""What the caller hears: the playback models behind ``SimulatedCall.playback``.

By default every ``text``/``play``/``sendDigits`` counts as heard the moment it
arrives (:class:`InstantPlayback`, for load runs). :class:`TimedPlayback`
models Twilio's speech: text joins one FIFO queue, is synthesized in
clause/sentence chunks and spoken at a rate in characters per second;
``info agentSpeaking on/off`` and per-chunk ``info tokensPlayed`` are sent when
the TwiML ``debug`` attribute subscribes (``speaker-events`` /
``tokens-played``), the welcome greeting included.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from relay import Info, OutboundMessage, Play, SendDigits, Text
from relay.twiml import RelayTwiml


class InstantPlayback:
    """The playback model: what the caller has heard so far.

    This one "plays" everything the moment it arrives. When the TwiML
    subscribes to them it still reports what Twilio would: ``agentSpeaking
    on`` at a talk cycle's first text, the cycle's text as ``tokensPlayed``
    and ``agentSpeaking off`` at its ``last: true`` (and the greeting's, and
    the digits sent), queued in ``pending`` for the session to send. The
    timed model (``TimedPlayback``) paces the same events.
    """

    def __init__(self, *, speaker_events: bool = False, tokens_played: bool = False) -> None:
        self.heard: list[str] = []
        self.digits_sent: list[str] = []
        self.played: list[str] = []
        self.speaker_events = speaker_events
        self.tokens_played = tokens_played
        self.pending: list[Info] = []
        self._cycle: list[str] = []

    def enqueue(self, msg: OutboundMessage) -> None:
        match msg:
            case Text():
                self.heard.append(msg.token)
                self._speak(msg.token, last=msg.last)
            case Play():
                self.played.append(msg.source)
            case SendDigits():
                self.digits_sent.append(msg.digits)
                if self.tokens_played:
                    self.pending.append(Info("tokensPlayed", msg.digits))
            case _:
                pass

    def say(self, text: str, *, interruptible: bool | None = None) -> None:
        """A whole utterance Twilio speaks itself (the welcome greeting): its events."""
        self._speak(text, last=True)

    def drain(self) -> list[Info]:
        """The ``info`` events played since the last call, in order."""
        out, self.pending = self.pending, []
        return out

    def _speak(self, token: str, *, last: bool) -> None:
        if not self._cycle and self.speaker_events and (token.strip() or last):
            self.pending.append(Info("agentSpeaking", "on"))
        self._cycle.append(token)
        if not last:
            return
        text, self._cycle = "".join(self._cycle), []
        if self.tokens_played and text.strip():
            self.pending.append(Info("tokensPlayed", text))
        if self.speaker_events:
            self.pending.append(Info("agentSpeaking", "off"))

    def flush(self) -> None:
        """Barge-in: drop whatever is still queued (nothing is, here)."""


# A chunk ends at one of these after at least ``min_chunk`` characters (Twilio
# synthesizes clause- or sentence-sized chunks, visible through tokensPlayed).
_CHUNK_END = re.compile(r"[.!?,;:](?=\s|$)")
_INTERRUPTIBLE_BY_SPEECH = frozenset({"any", "speech", "true"})


def by_speech(value: str | None, default: bool) -> bool:
    """Whether an ``interruptible`` TwiML value lets caller speech cut the agent off."""
    if value is None or not value.strip():
        return default
    return value.strip().lower() in _INTERRUPTIBLE_BY_SPEECH


@dataclass(slots=True)
class _Chunk:
    text: str
    interruptible: bool


class TimedPlayback:
    """Twilio's speech, timed: a FIFO of text spoken at ``chars_per_s``.

    Text is cut into chunks at clause/sentence ends (``. ! ? , ; :`` after at
    least ``min_chunk`` characters) or at the end of a reply (``last: true``);
    a chunk is only started once it is complete, as a TTS engine would.
    ``heard`` holds every chunk spoken in full plus the heard part of a chunk
    cut off by barge-in (stripped, as ``tokensPlayed`` reports them).

    ``send_info`` sends an ``info`` frame to the app; it is only called for the
    events the TwiML subscribed to.
    """

    def __init__(
        self,
        *,
        chars_per_s: float,
        send_info: Callable[[Info], Awaitable[None]],
        speaker_events: bool = False,
        tokens_played: bool = False,
        interruptible: bool = True,
        min_chunk: int = 12,
    ) -> None:
        if chars_per_s <= 0:
            raise ValueError("chars_per_s must be positive")
        self.chars_per_s = chars_per_s
        self.min_chunk = min_chunk
        self.speaker_events = speaker_events
        self.tokens_played = tokens_played
        self.interruptible = interruptible
        self.heard: list[str] = []
        self.digits_sent: list[str] = []
        self.played: list[str] = []
        self.speaking = False
        self._send_info = send_info
        self._buffer = ""  # text received, not yet cut into chunks
        self._buffer_interruptible = interruptible
        self._buffer_closed = False  # the buffered text ends its reply
        self._chunks: deque[_Chunk] = deque()
        self._current: _Chunk | None = None
        self._current_started = 0.0
        self._current_scope: trio.CancelScope | None = None
        self._wake = trio.Event()
        self._progress = trio.Event()

    # -- what the app sends

    def enqueue(self, msg: OutboundMessage) -> None:
        match msg:
            case Text():
                self._buffer += msg.token
                if msg.interruptible is not None:
                    self._buffer_interruptible = msg.interruptible
                if msg.last:
                    self._buffer_closed = True
                self._cut()
            case Play():
                self.played.append(msg.source)
            case SendDigits():
                self.digits_sent.append(msg.digits)
            case _:
                return
        self._poke()

    def say(self, text: str, *, interruptible: bool | None = None) -> None:
        """Queue a whole utterance Twilio speaks itself (the welcome greeting)."""
        self._buffer += text
        self._buffer_interruptible = self.interruptible if interruptible is None else interruptible
        self._buffer_closed = True
        self._cut()
        self._poke()

    def _cut(self) -> None:
        while True:
            found = None
            for match in _CHUNK_END.finditer(self._buffer):
                if match.end() >= self.min_chunk:
                    found = match.end()
                    break
            if found is None:
                break
            self._push(self._buffer[:found])
            self._buffer = self._buffer[found:]
        if self._buffer_closed:
            self._push(self._buffer)
            self._buffer = ""
            self._buffer_closed = False
            self._buffer_interruptible = self.interruptible

    def _push(self, text: str) -> None:
        if text.strip():
            self._chunks.append(_Chunk(text.strip(), self._buffer_interruptible))

    def _poke(self) -> None:
        self._wake.set()
        self._wake = trio.Event()

    # -- state

    @property
    def active(self) -> bool:
        """Something is being spoken or waits to be."""
        return self._current is not None or bool(self._chunks) or bool(self._buffer.strip())

    @property
    def heard_text(self) -> str:
        return " ".join(self.heard)

    async def wait_heard(self, chunks: int = 1) -> None:
        """Wait until ``chunks`` chunks have been spoken in full (all time)."""
        while len(self.heard) < chunks:
            progress = self._progress
            await progress.wait()

    async def wait_speaking(self) -> None:
        """Wait until a chunk is being spoken."""
        while self._current is None:
            progress = self._progress
            await progress.wait()

    async def wait_into_chunk(self, chars: int) -> None:
        """Wait until the chunk being spoken has played ``chars`` characters (the
        caller's timing for a barge-in mid-chunk); returns early if it ends."""
        await self.wait_speaking()
        current = self._current
        with trio.move_on_at(self._current_started + chars / self.chars_per_s):
            while self._current is current:
                progress = self._progress
                await progress.wait()

    # -- barge-in

    def cut(self) -> tuple[str, float] | None:
        """Barge-in on the current chunk if it may be interrupted by speech: flush
        everything, return (heard part of the chunk, elapsed ms). None (and nothing
        flushed) when nothing is playing or the chunk is not interruptible."""
        current = self._current
        if current is None or not current.interruptible:
            return None
        elapsed = trio.current_time() - self._current_started
        spoken = min(len(current.text), int(elapsed * self.chars_per_s))
        fragment = current.text[:spoken]
        if spoken < len(current.text) and not current.text[spoken].isspace():
            # Only whole words come out of the TTS before the cut.
            fragment = fragment.rpartition(" ")[0]
        fragment = fragment.strip()
        self.flush()
        if fragment:
            self.heard.append(fragment)
        return fragment, round(elapsed * 1000, 1)

    def flush(self) -> None:
        """Drop the current chunk and everything queued (the caller barged in)."""
        self._chunks.clear()
        self._buffer = ""
        self._buffer_closed = False
        self._buffer_interruptible = self.interruptible
        self._current = None
        if self._current_scope is not None:
            self._current_scope.cancel()
        self._poke()

    # -- the speaker

    async def run(self) -> None:
        """Speak queued chunks until cancelled.

        Sending an ``info`` event is a checkpoint: text may be queued, or
        flushed by a barge-in, meanwhile. So the queue is looked at again
        after each send, never trusted from before it.
        """
        while True:
            if not self._chunks:
                if self.speaking:
                    self.speaking = False
                    if self.speaker_events:
                        await self._send_info(Info("agentSpeaking", "off"))
                    continue
                wake = self._wake
                await wake.wait()
                continue
            if not self.speaking:
                self.speaking = True
                if self.speaker_events:
                    await self._send_info(Info("agentSpeaking", "on"))
                    continue
            chunk = self._chunks.popleft()
            self._current = chunk
            self._current_started = trio.current_time()
            self._tick()
            with trio.CancelScope() as scope:
                self._current_scope = scope
                await trio.sleep(len(chunk.text) / self.chars_per_s)
            self._current_scope = None
            if scope.cancelled_caught or self._current is not chunk:
                continue  # barge-in: cut() reported the fragment
            self._current = None
            self.heard.append(chunk.text)
            self._tick()
            if self.tokens_played:
                await self._send_info(Info("tokensPlayed", chunk.text))

    def _tick(self) -> None:
        self._progress.set()
        self._progress = trio.Event()


def playback_for(
    twiml: RelayTwiml,
    rate: float | None,
    *,
    send_info: Callable[[Info], Awaitable[None]],
    min_chunk: int,
) -> InstantPlayback | TimedPlayback:
    """The model a session plays with: instant, or timed at ``rate`` characters a
    second with the ``info`` events its TwiML subscribes to."""
    events = set((twiml.attributes.get("debug") or "").split())
    events |= set((twiml.attributes.get("events") or "").split())
    if rate is None:
        return InstantPlayback(
            speaker_events="speaker-events" in events, tokens_played="tokens-played" in events
        )
    return TimedPlayback(
        chars_per_s=rate,
        send_info=send_info,
        speaker_events="speaker-events" in events,
        tokens_played="tokens-played" in events,
        interruptible=by_speech(twiml.attributes.get("interruptible"), True),
        min_chunk=min_chunk,
    )
