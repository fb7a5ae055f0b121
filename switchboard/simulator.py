"""Twilio's side of a ConversationRelay call, for tests, ``switchboard call`` and load runs.

One simulated call does what Twilio does (PROTOCOL.md §Lifecycle, §Security):

1. POST the signed voice webhook to ``<base>/twiml`` and parse the TwiML answer
   (``<Connect action>``, ``<ConversationRelay url ...>``, ``<Language>``,
   ``<Parameter>``). A relay ``url`` must be ``wss://`` (``ws://`` is allowed for
   a loopback host, for local development).
2. Open the WebSocket to the *local* address of ``base_url`` with the path of the
   TwiML ``url``, signed over that ``url`` exactly as written, then send ``setup``.
3. Validate every frame the app sends like Twilio does: an invalid one is dropped
   and answered with an ``error`` frame (64107); ten in a row close the socket
   with 1007.
4. When the session ends (caller hangs up, the app sends ``end``, the app drops
   the socket, or too many malformed frames), POST the signed ``<Connect action>``
   callback with ``SessionStatus`` and keep the TwiML it returns.

Signatures cover the *public* URL (``public_url``, default ``base_url``): the URL
Twilio would have used, not the loopback address the simulator connects to.

Playback: by default every ``text``/``play``/``sendDigits`` counts as heard the
moment it arrives (:class:`InstantPlayback`, for load runs). With
``open_call(..., playback_rate=CHARS_PER_S)`` a :class:`TimedPlayback` models
Twilio's speech: text joins one FIFO queue, is synthesized in clause/sentence
chunks and spoken at that rate; ``info agentSpeaking on/off`` and per-chunk
``info tokensPlayed`` are sent when the TwiML ``debug`` attribute subscribes
(``speaker-events`` / ``tokens-played``), the welcome greeting included.
:meth:`SimulatedCall.barge_in` interrupts as Twilio does: flush the queue,
``tokensPlayed`` for the heard part of the current chunk, ``interrupt`` with
that chunk-scoped fragment and its elapsed ms, then the caller's words. Text
that arrives after the interrupt and before the caller's next prompt is a
violation of turn fencing and is recorded in :attr:`SimulatedCall.late_tokens`
(frames the app wrote before it could have read the interrupt — those that
arrive before a ping/pong round trip — are flushed silently, as Twilio does).

Session changes: :meth:`SimulatedCall.drop` fails the session as a broken
socket does (action ``SessionStatus=failed``, 64105) and returns the action
TwiML; when that TwiML (or the one after ``end``) starts a fresh
``<Connect><ConversationRelay>``, :meth:`SimulatedCall.follow_action` opens the
new session: new ``VX`` id, ``callStatus`` ``IN_PROGRESS``, same callSid,
``customParameters`` from its ``<Parameter>`` children.

Errors::

    Exception
     +-- SimulatorError        the call could not be placed or went wrong
          +-- HttpError         a webhook answered with a non-2xx status
          +-- RelayConnectError the WebSocket upgrade failed or was rejected
          +-- SessionClosed     the session ended while waiting (``.partial`` reply)
     +-- ValueError
          +-- relay.twiml.TwimlError  the TwiML is not usable (no relay, bad url, bad XML)
"""

from __future__ import annotations

import json
import math
import re
import secrets
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, replace
from typing import Final
from urllib.parse import urlencode, urljoin, urlsplit

import h11
import structlog
import trio
import trio_websocket

from relay import (
    CLOSE_NORMAL,
    DEFAULT_MAX_BYTES,
    REASON_NORMAL,
    Dtmf,
    End,
    InboundMessage,
    Info,
    Interrupt,
    OutboundMessage,
    Play,
    Prompt,
    RemoteProtocolError,
    SendDigits,
    Setup,
    Text,
    TwilioSide,
    dtmf,
    to_wire,
)
from relay.signature import SIGNATURE_HEADER, sign
from relay.twiml import RelayTwiml, TwimlError, TwimlResponse, check_relay_url, parse_twiml

__all__ = [
    "HttpError",
    "HttpResponse",
    "InstantPlayback",
    "RelayConnectError",
    "RelayTwiml",
    "Reply",
    "SessionClosed",
    "SimulatedCall",
    "SimulatorError",
    "TimedPlayback",
    "TwimlError",
    "TwimlResponse",
    "check_relay_url",
    "new_sid",
    "open_call",
    "parse_twiml",
    "sign",
]

log = structlog.get_logger()

API_VERSION: Final = "2010-04-01"
# Bounds for a simulator talking to our own server: generous, but finite.
MAX_HTTP_BODY: Final = 1024 * 1024
CLEANUP_TIMEOUT: Final = 5.0
CLOSE_INTERNAL_ERROR: Final = 1011  # how drop() breaks the socket (anything but 1000)


class SimulatorError(Exception):
    """The simulated call could not be placed or went wrong."""


class HttpError(SimulatorError):
    """A webhook (voice or action) answered with a non-2xx status."""

    def __init__(self, url: str, status: int, body: str) -> None:
        super().__init__(f"{url} answered HTTP {status}: {body[:200]!r}")
        self.url = url
        self.status = status
        self.body = body


class RelayConnectError(SimulatorError):
    """The WebSocket upgrade failed; ``status_code`` is the HTTP status if rejected."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class SessionClosed(SimulatorError):
    """The relay session ended while we waited for the app; ``partial`` holds what
    arrived of the reply being collected."""

    def __init__(self, message: str, partial: Reply | None = None) -> None:
        super().__init__(message)
        self.partial = partial


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits (``CA…``, ``VX…``)."""
    return prefix + secrets.token_hex(16)


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where the simulator really connects: scheme, host and port of ``base_url``."""

    tls: bool
    host: str
    port: int

    @classmethod
    def parse(cls, base_url: str) -> _Origin:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SimulatorError(f"base url must be http(s)://host[:port]: {base_url!r}")
        tls = parts.scheme == "https"
        return cls(tls=tls, host=parts.hostname, port=parts.port or (443 if tls else 80))


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def _target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


async def _http_request(
    origin: _Origin,
    method: str,
    public_url: str,
    params: Mapping[str, str],
    auth_token: str | None,
) -> HttpResponse:
    """One signed webhook request, as Twilio sends it, to the local origin."""
    headers = [
        ("Host", urlsplit(public_url).netloc or origin.host),
        ("User-Agent", "TwilioProxy/1.1"),
        ("Accept", "*/*"),
        ("Connection", "close"),
    ]
    if method == "GET":
        url = public_url + (("&" if "?" in public_url else "?") + urlencode(params))
        body = b""
        signed = sign(auth_token, url) if auth_token else None
    else:
        url = public_url
        body = urlencode(params).encode()
        headers += [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Length", str(len(body))),
        ]
        signed = sign(auth_token, url, params) if auth_token else None
    if signed is not None:
        headers.append((SIGNATURE_HEADER, signed))

    conn = h11.Connection(h11.CLIENT)
    stream: trio.abc.Stream
    if origin.tls:
        stream = await trio.open_ssl_over_tcp_stream(
            origin.host, origin.port, ssl_context=ssl.create_default_context()
        )
    else:
        stream = await trio.open_tcp_stream(origin.host, origin.port)
    async with stream:
        out = conn.send(h11.Request(method=method, target=_target(url), headers=headers))
        if body:
            out += conn.send(h11.Data(data=body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(out or b"")
        status = 0
        response_headers: tuple[tuple[str, str], ...] = ()
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise SimulatorError(f"bad HTTP response from {url}: {exc}") from None
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status = event.status_code
                response_headers = tuple((k.decode(), v.decode()) for k, v in event.headers)
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_HTTP_BODY:
                    raise SimulatorError(f"response from {url} exceeds {MAX_HTTP_BODY} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    response = HttpResponse(status=status, headers=response_headers, body=b"".join(chunks))
    if not 200 <= status < 300:
        raise HttpError(url, status, response.text)
    return response


# --------------------------------------------------------------------------- the call


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply of the agent: the ``text`` frames up to and including ``last: true``."""

    frames: tuple[Text, ...]

    @property
    def tokens(self) -> list[str]:
        return [frame.token for frame in self.frames]

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def complete(self) -> bool:
        return bool(self.frames) and self.frames[-1].last


class InstantPlayback:
    """The playback model: what the caller has heard so far.

    This one "plays" everything the moment it arrives. A timed model (per-char
    duration, ``agentSpeaking``/``tokensPlayed`` info, barge-in, preemption) will
    take its place behind the same two methods.
    """

    def __init__(self) -> None:
        self.heard: list[str] = []
        self.digits_sent: list[str] = []
        self.played: list[str] = []

    def enqueue(self, msg: OutboundMessage) -> None:
        match msg:
            case Text():
                self.heard.append(msg.token)
            case Play():
                self.played.append(msg.source)
            case SendDigits():
                self.digits_sent.append(msg.digits)
            case _:
                pass

    def flush(self) -> None:
        """Barge-in: drop whatever is still queued (nothing is, here)."""


# A chunk ends at one of these after at least ``min_chunk`` characters (Twilio
# synthesizes clause- or sentence-sized chunks, visible through tokensPlayed).
_CHUNK_END = re.compile(r"[.!?,;:](?=\s|$)")
_INTERRUPTIBLE_BY_SPEECH = frozenset({"any", "speech", "true"})


def _by_speech(value: str | None, default: bool) -> bool:
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
        """Speak queued chunks until cancelled."""
        while True:
            if not self._chunks:
                if self.speaking:
                    self.speaking = False
                    if self.speaker_events:
                        await self._send_info(Info("agentSpeaking", "off"))
                wake = self._wake
                await wake.wait()
                continue
            chunk = self._chunks.popleft()
            if not self.speaking:
                self.speaking = True
                if self.speaker_events:
                    await self._send_info(Info("agentSpeaking", "on"))
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


class SimulatedCall:
    """One call in progress, from Twilio's side. Made by :func:`open_call`.

    Caller actions: :meth:`prompt`, :meth:`dtmf`, :meth:`barge_in`,
    :meth:`interrupt` (a bare interrupt frame), :meth:`hangup`, :meth:`drop`.
    App output: :attr:`received` (every valid frame, in order), :meth:`reply`,
    :meth:`next_message`. Protocol violations by the app are in :attr:`violations`;
    text of an interrupted reply that arrived after the interrupt is in
    :attr:`late_tokens`. :attr:`playback` is the playback model.
    When the session is over, :attr:`session_status` is ``completed``, ``ended`` or
    ``failed`` and :attr:`action_response` holds the TwiML of the action callback.
    """

    def __init__(
        self,
        *,
        origin: _Origin,
        public_url: str,
        auth_token: str | None,
        webhook_params: Mapping[str, str],
        twiml: RelayTwiml,
        setup: Setup,
        ws: trio_websocket.WebSocketConnection,
        max_frame_bytes: int,
        playback_rate: float | None = None,
        min_chunk: int = 12,
    ) -> None:
        self.twiml = twiml
        self.setup = setup
        self.received: list[OutboundMessage] = []
        # Arrival time (trio clock) of each entry of ``received``, same index:
        # latency measurements need the moment the frame came off the socket.
        self.received_at: list[float] = []
        self.violations: list[RemoteProtocolError] = []
        self.playback: InstantPlayback | TimedPlayback
        if playback_rate is None:
            self.playback = InstantPlayback()
        else:
            events = set((twiml.attributes.get("debug") or "").split())
            events |= set((twiml.attributes.get("events") or "").split())
            self.playback = TimedPlayback(
                chars_per_s=playback_rate,
                send_info=self._send_info,
                speaker_events="speaker-events" in events,
                tokens_played="tokens-played" in events,
                interruptible=_by_speech(twiml.attributes.get("interruptible"), True),
                min_chunk=min_chunk,
            )
        # Barge-in window: None, "in_flight" (until a ping round trip shows the
        # app has read the interrupt) or "late" (until the caller speaks again).
        self._window: str | None = None
        self.flushed: list[OutboundMessage] = []
        self.late_tokens: list[str] = []
        self.interrupts: list[Interrupt] = []
        self._nursery: trio.Nursery | None = None
        self._arrived = trio.Event()  # set (and replaced) whenever a frame arrives
        self._playback_rate = playback_rate
        self._max_frame_bytes = max_frame_bytes
        self._min_chunk = min_chunk
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.session_status: str | None = None
        self.action_request: dict[str, str] | None = None
        self.action_response: TwimlResponse | None = None
        self.side = TwilioSide(max_bytes=max_frame_bytes)
        self._origin = origin
        self._public_url = public_url
        self._auth_token = auth_token
        self._webhook_params = dict(webhook_params)
        self._ws = ws
        self._started = trio.current_time()
        self._finishing = False
        self._finished = trio.Event()
        # Unbounded: the reader must never block on a slow test, and one call's
        # frames are few and small.
        self._inbox_send, self._inbox = trio.open_memory_channel[OutboundMessage](math.inf)
        self._log = log.bind(call_sid=setup.call_sid, session_id=setup.session_id, actor="twilio")

    # -- identity

    @property
    def call_sid(self) -> str:
        return self.setup.call_sid

    @property
    def session_id(self) -> str:
        return self.setup.session_id

    @property
    def finished(self) -> bool:
        """The session is over and its action callback (if any) has been made."""
        return self._finished.is_set()

    # -- caller -> app

    async def _send(self, msg: InboundMessage) -> None:
        await self._send_frame(self.side.send(msg))

    async def _send_frame(self, frame: str) -> None:
        if self._finishing:
            raise SessionClosed(f"session {self.session_id} is over ({self.session_status})")
        try:
            await self._ws.send_message(frame)
        except trio_websocket.ConnectionClosed:
            raise SessionClosed(f"session {self.session_id} closed while sending") from None

    async def prompt(self, text: str, *, lang: str = "en-US", partials: bool = False) -> None:
        """The caller says ``text``. With ``partials``, interim prompts carrying the
        cumulative words so far (``last: false``) come first, as with ``partialPrompts``."""
        self._window = None
        if partials:
            words = text.split()
            for n in range(1, len(words)):
                await self._send(Prompt(" ".join(words[:n]), lang, False))
        await self._send(Prompt(text, lang, True))

    async def dtmf(self, digit: str) -> bool:
        """The caller presses one key. Twilio only reports key presses when the TwiML
        sets ``dtmfDetection="true"``; otherwise nothing is sent and this returns False."""
        if not dtmf.is_key(digit):
            raise ValueError(f"not a phone key: {digit!r}")
        if not self.twiml.dtmf_detection:
            return False
        self._window = None
        await self._send(Dtmf(digit))
        return True

    async def interrupt(
        self,
        utterance_until_interrupt: str = "",
        duration_until_interrupt_ms: float = 0.0,
        *,
        duration_as_string: bool = False,
    ) -> None:
        """The caller barges in. ``duration_as_string`` sends the duration the way an
        older Twilio revision did (``"460"``), to exercise tolerant parsers."""
        self.playback.flush()
        msg = Interrupt(utterance_until_interrupt, duration_until_interrupt_ms)
        frame = self.side.send(msg)
        if duration_as_string:
            wire = to_wire(msg)
            wire["durationUntilInterruptMs"] = str(wire["durationUntilInterruptMs"])
            frame = _json(wire)
        await self._send_frame(frame)

    async def barge_in(self, text: str | None = None, *, lang: str = "en-US") -> bool:
        """The caller talks over the agent, as Twilio reports it.

        If something is playing and may be interrupted by speech: the queue is
        flushed (unread text frames of the reply leave the inbox too),
        ``info tokensPlayed`` reports the heard part of the current chunk (when
        subscribed), then ``interrupt`` with that fragment and the chunk's
        elapsed ms. Then ``text`` (if given) is sent as the caller's prompt;
        without it, text arriving before the next :meth:`prompt` lands in
        :attr:`late_tokens`. Returns whether an interrupt was sent (False when
        nothing was playing or it was not interruptible: only the prompt goes).
        Needs timed playback (``open_call(playback_rate=...)``).
        """
        if not isinstance(self.playback, TimedPlayback):
            raise SimulatorError("barge_in needs timed playback (open_call(playback_rate=...))")
        cut = self.playback.cut()
        if cut is not None:
            fragment, elapsed_ms = cut
            self._drain_inbox_text()
            self._window = "in_flight"
            if fragment and self.playback.tokens_played:
                await self._send(Info("tokensPlayed", fragment))
            msg = Interrupt(fragment, elapsed_ms)
            self.interrupts.append(msg)
            await self._send(msg)
            self._log.info("simulator_barge_in", heard=fragment, elapsed_ms=elapsed_ms)
            # Frames the app wrote before it read the interrupt are still on the
            # wire; a ping round trip lets them arrive (flushed, as Twilio does).
            with suppress(trio_websocket.ConnectionClosed):
                await self._ws.ping()
            if self._window == "in_flight":
                self._window = "late"
        if text is not None:
            await self.prompt(text, lang=lang)
        return cut is not None

    def _drain_inbox_text(self) -> None:
        """Take unread text frames out of the inbox (the caller will never hear
        them); other unread frames keep their order."""
        kept: list[OutboundMessage] = []
        while True:
            try:
                msg = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if isinstance(msg, Text):
                self.flushed.append(msg)
            else:
                kept.append(msg)
        for msg in kept:
            self._inbox_send.send_nowait(msg)

    async def _send_info(self, info: Info) -> None:
        """Playback events to the app; a closed session just stops them."""
        with suppress(SessionClosed):
            await self._send(info)

    async def drop(self) -> TwimlResponse | None:
        """The socket breaks (no 1000 close): the action callback reports the session
        ``failed`` with 64105. Returns the action's TwiML (e.g. a fresh relay to resume)."""
        if not self._finishing:
            await self._finish(
                CLOSE_INTERNAL_ERROR,
                "connection lost",
                status="failed",
                call_status="in-progress",
                error=("64105", "Websocket ended"),
            )
        await self._finished.wait()
        return self.action_response

    @asynccontextmanager
    async def follow_action(self) -> AsyncIterator[SimulatedCall]:
        """Start the session the action TwiML asks for (a fresh ``<Connect>
        <ConversationRelay>``): new session id, ``callStatus`` ``IN_PROGRESS``,
        the same callSid and playback settings. Waits for this session to end."""
        await self._finished.wait()
        document = self.action_response
        if document is None or document.relay is None:
            verbs = document.verbs if document is not None else ()
            raise TwimlError(f"the action TwiML starts no ConversationRelay: {verbs}")
        setup = replace(
            self.setup,
            session_id=new_sid("VX"),
            call_status="IN_PROGRESS",
            custom_parameters=document.relay.parameters,
        )
        params = dict(self._webhook_params, CallStatus="in-progress")
        async with _open_session(
            origin=self._origin,
            public_url=self._public_url,
            auth_token=self._auth_token,
            webhook_params=params,
            relay=document.relay,
            setup=setup,
            max_frame_bytes=self._max_frame_bytes,
            playback_rate=self._playback_rate,
            min_chunk=self._min_chunk,
        ) as call:
            yield call

    async def send_raw(self, frame: str) -> None:
        """Send any text frame as Twilio (for tests of the app's error handling)."""
        await self._send_frame(frame)

    async def hangup(self) -> TwimlResponse | None:
        """The caller hangs up: close 1000, then the action callback with
        ``SessionStatus=completed``. Returns the action's TwiML (moot, the call is over)."""
        if not self._finishing:
            await self._finish(
                CLOSE_NORMAL, REASON_NORMAL, status="completed", call_status="completed"
            )
        await self._finished.wait()
        return self.action_response

    # -- app -> caller

    async def next_message(self) -> OutboundMessage:
        """The next valid frame from the app; :class:`SessionClosed` once the session
        is over and everything has been taken."""
        try:
            return await self._inbox.receive()
        except trio.EndOfChannel:
            raise SessionClosed(
                f"session {self.session_id} is over ({self.session_status})"
            ) from None

    async def reply(self, *, on_token: Callable[[Text], Awaitable[None]] | None = None) -> Reply:
        """Collect ``text`` frames until one has ``last: true``. Other messages are
        skipped here (they stay in :attr:`received`). ``on_token`` sees each frame as
        it arrives. Raises :class:`SessionClosed` if the session ends first."""
        frames: list[Text] = []
        while True:
            try:
                msg = await self.next_message()
            except SessionClosed as exc:
                raise SessionClosed(str(exc), partial=Reply(tuple(frames))) from None
            if not isinstance(msg, Text):
                continue
            frames.append(msg)
            if on_token is not None:
                await on_token(msg)
            if msg.last:
                return Reply(tuple(frames))

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, checking it after every app frame
        (e.g. ``lambda: call.late_tokens``). Returns at once if the session is over."""
        while not predicate() and not self._finished.is_set():
            arrived = self._arrived
            with trio.move_on_after(CLEANUP_TIMEOUT):
                await arrived.wait()

    async def wait_ended(self) -> TwimlResponse | None:
        """Wait until the session is over; the action callback's TwiML, if any."""
        await self._finished.wait()
        return self.action_response

    # -- machinery

    async def _start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        await self._ws.send_message(self.side.send(self.setup))
        self._log.info("simulator_setup_sent", to=self.setup.to, from_=self.setup.from_)
        if isinstance(self.playback, TimedPlayback):
            nursery.start_soon(self.playback.run)
            greeting = self.twiml.welcome_greeting
            if greeting:
                self.playback.say(
                    greeting,
                    interruptible=_by_speech(
                        self.twiml.attributes.get("welcomeGreetingInterruptible"), True
                    ),
                )
        nursery.start_soon(self._pump)

    async def _pump(self) -> None:
        """Read and validate app frames until the session ends."""
        while True:
            try:
                frame = await self._ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                if not self._finishing:
                    # The app's side closed or dropped the socket: Twilio fails the session.
                    reason = exc.reason
                    self._log.warning(
                        "simulator_app_closed",
                        code=getattr(reason, "code", None),
                        reason=getattr(reason, "reason", None),
                    )
                    await self._finish(
                        None,
                        None,
                        status="failed",
                        call_status="in-progress",
                        error=("64105", "Websocket ended"),
                        app_close=(getattr(reason, "code", None), getattr(reason, "reason", None)),
                    )
                return
            verdict = self.side.receive(frame)
            if verdict.error is not None:
                self.violations.append(verdict.error)
                self._log.warning(
                    "simulator_invalid_app_frame",
                    kind=verdict.error.kind.value,
                    excerpt=verdict.error.frame_excerpt,
                    consecutive=self.side.consecutive_invalid,
                )
                if verdict.reply is not None:
                    try:
                        await self._ws.send_message(verdict.reply)
                    except trio_websocket.ConnectionClosed:
                        continue  # the next get_message reports the close
                if verdict.close is not None:
                    code, reason_text = verdict.close
                    await self._finish(
                        code,
                        reason_text,
                        status="failed",
                        call_status="in-progress",
                        error=("64105", "Websocket ended"),
                    )
                    return
                continue
            msg = verdict.message
            assert msg is not None
            self.received.append(msg)
            self.received_at.append(trio.current_time())
            self._arrived.set()
            self._arrived = trio.Event()
            if self._window is not None and isinstance(msg, Text):
                # Text after a barge-in, before the caller spoke again.
                if self._window == "late":
                    self.late_tokens.append(msg.token)
                    self._log.warning("simulator_late_token", token=msg.token)
                else:
                    self.flushed.append(msg)
                continue
            self.playback.enqueue(msg)
            self._inbox_send.send_nowait(msg)
            if isinstance(msg, End):
                await self._finish(
                    CLOSE_NORMAL,
                    REASON_NORMAL,
                    status="ended",
                    call_status="in-progress",
                    handoff_data=msg.handoff_data,
                )
                return

    async def _finish(
        self,
        code: int | None,
        reason: str | None,
        *,
        status: str,
        call_status: str,
        handoff_data: str | None = None,
        error: tuple[str, str] | None = None,
        app_close: tuple[int | None, str | None] | None = None,
    ) -> None:
        """Close the socket (unless the app already did), then make the action callback."""
        if self._finishing:
            return
        self._finishing = True
        self.session_status = status
        try:
            with trio.move_on_after(CLEANUP_TIMEOUT) as scope:
                scope.shield = True
                if code is not None:
                    self.close_code, self.close_reason = code, reason
                    await self._ws.aclose(code, reason)
                elif app_close is not None:
                    self.close_code, self.close_reason = app_close
                await self._post_action(status, call_status, handoff_data, error)
        finally:
            self._inbox_send.close()
            self._finished.set()
        self._log.info(
            "simulator_session_over",
            status=status,
            close_code=self.close_code,
            violations=len(self.violations),
            frames_in=self.side.frames_in,
        )

    async def _post_action(
        self,
        status: str,
        call_status: str,
        handoff_data: str | None,
        error: tuple[str, str] | None,
    ) -> None:
        if not self.twiml.action:
            return
        params = dict(self._webhook_params)
        params.update(
            CallStatus=call_status,
            SessionId=self.session_id,
            SessionStatus=status,
            SessionDuration=str(int(trio.current_time() - self._started)),
        )
        if handoff_data is not None:
            params["HandoffData"] = handoff_data
        if error is not None:
            params["ErrorCode"], params["ErrorMessage"] = error
        url = urljoin(self._public_url + "/twiml", self.twiml.action)
        self.action_request = params
        try:
            response = await _http_request(
                self._origin, self.twiml.action_method, url, params, self._auth_token
            )
            self.action_response = parse_twiml(response.text)
        except (SimulatorError, TwimlError, OSError, trio.BrokenResourceError) as exc:
            # Twilio logs a failed callback and ends the call; so do we.
            self._log.warning("simulator_action_failed", url=url, error=str(exc))


def _json(d: Mapping[str, object]) -> str:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)


def _leaves(group: BaseExceptionGroup[BaseException]) -> Sequence[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


@asynccontextmanager
async def open_call(
    base_url: str,
    *,
    public_url: str | None = None,
    auth_token: str | None = None,
    from_: str = "+15550100",
    to: str = "+15550199",
    custom: Mapping[str, str] | None = None,
    call_sid: str | None = None,
    account_sid: str | None = None,
    caller_name: str = "",
    forwarded_from: str = "",
    call_type: str = "PSTN",
    max_frame_bytes: int = DEFAULT_MAX_BYTES,
    twiml: str | None = None,
    playback_rate: float | None = None,
    min_chunk: int = 12,
) -> AsyncIterator[SimulatedCall]:
    """Place one inbound call against the app at ``base_url`` and yield it in progress.

    ``public_url`` is the URL Twilio would use (what signatures cover); it defaults
    to ``base_url``. ``custom`` adds form parameters to the voice webhook (as a
    REST-created call's extra parameters would). On exit the caller hangs up if the
    session is still open.

    ``twiml`` skips the voice webhook and uses this TwiML instead, for servers
    that only speak the relay WebSocket (bare baselines in benchmarks).

    ``playback_rate`` (characters per second) switches on timed playback
    (:class:`TimedPlayback`, needed for :meth:`SimulatedCall.barge_in`);
    ``min_chunk`` is its shortest synthesized chunk. Default: instant playback.

    Raises :class:`HttpError`, :class:`TwimlError` or :class:`RelayConnectError`
    if the call cannot be connected.
    """
    origin = _Origin.parse(base_url)
    public = (public_url or base_url).rstrip("/")
    call_sid = call_sid or new_sid("CA")
    account_sid = account_sid or new_sid("AC")
    params = {
        "AccountSid": account_sid,
        "ApiVersion": API_VERSION,
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": to,
        "Caller": from_,
        "Direction": "inbound",
        "From": from_,
        "To": to,
    }
    if caller_name:
        params["CallerName"] = caller_name
    if forwarded_from:
        params["ForwardedFrom"] = forwarded_from
    params.update(custom or {})

    if twiml is None:
        response = await _http_request(origin, "POST", public + "/twiml", params, auth_token)
        twiml = response.text
    document = parse_twiml(twiml)
    if document.relay is None:
        raise TwimlError(f"TwiML from {public}/twiml starts no ConversationRelay: {document.verbs}")
    relay = document.relay
    setup = Setup(
        session_id=new_sid("VX"),
        call_sid=call_sid,
        account_sid=account_sid,
        parent_call_sid="",
        from_=from_,
        to=to,
        forwarded_from=forwarded_from,
        caller_name=caller_name,
        direction="inbound",
        call_type=call_type,
        call_status="RINGING",
        custom_parameters=relay.parameters,
    )
    async with _open_session(
        origin=origin,
        public_url=public,
        auth_token=auth_token,
        webhook_params=params,
        relay=relay,
        setup=setup,
        max_frame_bytes=max_frame_bytes,
        playback_rate=playback_rate,
        min_chunk=min_chunk,
    ) as call:
        yield call


@asynccontextmanager
async def _open_session(
    *,
    origin: _Origin,
    public_url: str,
    auth_token: str | None,
    webhook_params: Mapping[str, str],
    relay: RelayTwiml,
    setup: Setup,
    max_frame_bytes: int,
    playback_rate: float | None,
    min_chunk: int,
) -> AsyncIterator[SimulatedCall]:
    """One relay session: the signed upgrade, ``setup``, the reader; hang up on exit."""
    check_relay_url(relay.url)
    headers = (
        [(SIGNATURE_HEADER.encode(), sign(auth_token, relay.url).encode())] if auth_token else []
    )
    try:
        async with (
            _open_relay_socket(origin, relay.url, headers, max_frame_bytes) as ws,
            trio.open_nursery() as nursery,
        ):
            call = SimulatedCall(
                origin=origin,
                public_url=public_url,
                auth_token=auth_token,
                webhook_params=webhook_params,
                twiml=relay,
                setup=setup,
                ws=ws,
                max_frame_bytes=max_frame_bytes,
                playback_rate=playback_rate,
                min_chunk=min_chunk,
            )
            await call._start(nursery)
            try:
                yield call
            finally:
                if not call._finishing:
                    with trio.move_on_after(CLEANUP_TIMEOUT) as scope:
                        scope.shield = True
                        await call.hangup()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The reader task does not raise, so a group here wraps one exception from
        # the caller's block (or a cancellation): give it back unwrapped, as the
        # caller raised it. (except* cannot re-raise a leaf without re-wrapping.)
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


@asynccontextmanager
async def _open_relay_socket(
    origin: _Origin,
    relay_url: str,
    headers: list[tuple[bytes, bytes]],
    max_frame_bytes: int,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """The relay WebSocket: to the local origin, with the path of the TwiML url."""
    ssl_context: ssl.SSLContext | bool = ssl.create_default_context() if origin.tls else False
    connected = False
    try:
        async with trio_websocket.open_websocket(
            origin.host,
            origin.port,
            _target(relay_url),
            use_ssl=ssl_context,
            extra_headers=headers,
            # Frames over the limit must reach TwilioSide to be judged, not kill the socket.
            max_message_size=max(4 * max_frame_bytes, 1024 * 1024),
            connect_timeout=10,
            disconnect_timeout=CLEANUP_TIMEOUT,
        ) as ws:
            connected = True
            yield ws
    except trio_websocket.ConnectionRejected as exc:
        if connected:
            raise
        raise RelayConnectError(
            f"relay upgrade to {relay_url} rejected with HTTP {exc.status_code}", exc.status_code
        ) from None
    except (trio_websocket.HandshakeError, OSError) as exc:
        if connected:
            raise
        raise RelayConnectError(f"relay upgrade to {relay_url} failed: {exc!r}") from None
