"""The gateway: Twilio's webhooks and ConversationRelay sockets on one port.

``serve_gateway(bus, config)`` runs three kinds of task:

- the HTTP front (:mod:`gateway.http`): webhooks, health, metrics, and the
  ``/relay`` upgrade, every Twilio request signature-checked first;
- one *relay session* per socket: frames are parsed by the sans-IO core
  (:class:`relay.RelayConnection`) strictly in order, stamped and appended to the
  call's partition stream. A bad frame is logged (``frame_rejected``) and
  dropped, never answered and never a reason to close;
- one *dispatcher* tailing ``keys.gateway(gateway_id)``: ``llm.tokens`` and
  ``gateway.send`` entries are routed by call sid to the live session, after
  turn fencing and de-duplication, into the session's bounded outbox. A
  per-session sender task drains it, so one slow socket never blocks the
  dispatcher. When an outbox is full the frame is dropped and counted
  (``outbound_dropped{reason="queue_full"}``): a socket that cannot absorb
  ``OUTBOX_FRAMES`` frames is dead or hopelessly behind, and waiting for it
  would stall every other call on this gateway.

Fencing (shared contract with the actors): a session's ``fence`` is the seq
of the latest final prompt or interrupt; tokens are forwarded only when the
envelope's session is the live session of the call, ``reply_to >= fence``,
and ``index`` is above the last index forwarded for that ``reply_to``.

``after_speech`` (``gateway.send`` body flag): the frame waits until the
current reply has finished playing, then joins the outbox. With speaker
events subscribed (the TwiML ``debug`` attribute names ``speaker-events``) that
is the ``info agentSpeaking off`` after the last text sent; otherwise an
estimate: the characters sent since the reply began (or since the last
``agentSpeaking on``) at ``GatewayConfig.speech_chars_per_second``, capped at ``SPEECH_CAP_S``,
counted from the moment the reply's ``last: true`` was forwarded. A waiting
frame is released at the latest ``SPEECH_CAP_S`` after the reply ended (a lost
``off`` must not keep a goodbye from ever ending the call) and dies with its
session. After-speech frames of a session leave in order.

Fencing also applies at the socket: a token already queued in the outbox when
the interrupt arrives is dropped by the sender, so nothing of the cut-off
reply is written after the gateway read the interrupt.

Oversize frames: trio-websocket enforces ``max_message_size`` itself and
closes the socket with 1009 (Message Too Big); we log that as
``frame_rejected kind=too_large`` and end the session like any other close.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog
import trio
import trio_websocket
from prometheus_client import CollectorRegistry

from bus.base import Bus, BusError, Entry, MalformedEntry, parse_id
from bus.envelope import Envelope, Kind, now_ms
from bus.facts import FactPublisher
from bus.keys import GROUP_CONVERSATION, GROUP_LLM, GROUP_TELEMETRY
from bus.retry import Backoff, append_once, retry_bus
from gateway.config import GatewayConfig
from gateway.dashboard import Dashboard, DashboardAccess
from gateway.http import (
    HttpLimits,
    Request,
    Response,
    Router,
    bound_port,
    open_listeners,
    serve_http,
    text_response,
    xml_response,
)
from gateway.metrics import GatewayMetrics
from gateway.resume import claim_resume, is_transient
from gateway.twiml import action_twiml, connect_twiml
from relay import (
    Dtmf,
    Error,
    FrameErrorKind,
    InboundMessage,
    Info,
    Interrupt,
    OutboundMessage,
    Prompt,
    ProtocolError,
    RelayConnection,
    RemoteProtocolError,
    Setup,
    Text,
    outbound_from_wire,
    signature,
    to_wire,
    wire_type,
)
from relay.speech import CHARS_PER_SECOND

log = structlog.get_logger()

OUTBOX_FRAMES = 256  # per-session outbound queue (frames)
READ_BLOCK_MS = 1000  # dispatcher's blocking read on the gateway stream
CLOSE_TIMEOUT = 2.0  # bound on a shielded WebSocket close handshake
PUBLISH_TIMEOUT = 2.0  # bound on the shielded ``call.closed`` append
END_CLOSE_TIMEOUT = 5.0  # after ``end``, how long Twilio gets to close the socket
HANDSHAKE_TIMEOUT = 10.0
SPEECH_CAP_S = 15.0  # bound on any after_speech wait once the reply has ended
REPLY_OPEN_CAP_S = 60.0  # a reply that never sends last:true stops blocking after this
DEFERRED_FRAMES = 16  # after_speech frames waiting per session

PENDING_SCRAPE_TIMEOUT = 1.0  # bound on reading pending counts for /metrics

CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL_ERROR = 1011
# How long a caller's event waits for the bus before the session gives up: a
# Redis Cluster failover (node timeout plus election) fits well inside it.
PUBLISH_PATIENCE_S = 10.0
CLOSE_TOO_BIG = 1009

_INBOUND_KINDS: dict[type[Any], Kind] = {
    Setup: Kind.CALL_SETUP,
    Prompt: Kind.CALL_PROMPT,
    Dtmf: Kind.CALL_DTMF,
    Interrupt: Kind.CALL_INTERRUPT,
    Info: Kind.CALL_INFO,
    Error: Kind.CALL_ERROR,
}


@dataclass(frozen=True, slots=True)
class _SentFacts:
    """Facts to publish once a token frame has really been written to the socket.

    Also carries the token's ``reply_to`` so the sender can fence at write time.
    """

    names: tuple[str, ...]
    reply_to: int
    turn: int


# An outbox item: the frame, its wire type (for metrics), facts to emit once sent.
_Outgoing = tuple[str, str, _SentFacts | None]
# An after_speech frame waiting for the reply to finish playing.
_Deferred = tuple[Envelope, OutboundMessage]


@dataclass(eq=False, slots=True)
class _Speech:
    """What the gateway knows about the agent's speech on one session.

    Feeds the ``after_speech`` wait. Times are ``trio.current_time()``.
    """

    chars_per_s: float = CHARS_PER_SECOND  # the speaking rate behind the estimate
    speaker_events: bool = False  # the session reports agentSpeaking on/off
    speaking: bool = False  # last agentSpeaking value seen
    reply_open: bool = False  # text forwarded, its ``last: true`` not yet
    chars: int = 0  # characters sent since the reply began / last ``on``
    unplayed: int = 0  # characters sent since the last ``off`` (speaker events)
    ended_at: float = -math.inf  # when the last reply's ``last: true`` went out
    opened_at: float = -math.inf  # when the open reply's first text went out
    changed: trio.Event = field(default_factory=trio.Event)

    def touch(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def text(self, token: str, last: bool, now: float) -> None:
        if not self.reply_open:
            self.reply_open = True
            self.opened_at = now
            self.chars = 0
        spoken = len(token.strip())
        self.chars += spoken
        self.unplayed += spoken
        if last:
            self.reply_open = False
            self.ended_at = now
        self.touch()

    def info(self, name: str, value: str) -> None:
        if name != "agentSpeaking":
            return
        if value == "on":
            self.speaking = True
            self.chars = 0
        elif value == "off":
            self.speaking = False
            self.unplayed = 0
        self.touch()

    def interrupted(self) -> None:
        # Twilio flushed its queue: nothing of the reply is left to play.
        self.speaking = False
        self.reply_open = False
        self.chars = self.unplayed = 0
        self.touch()

    def release_at(self) -> float:
        """The trio time at which an after_speech frame may go, unless something
        changes first (then ask again)."""
        if self.reply_open:
            return self.opened_at + REPLY_OPEN_CAP_S
        cap = self.ended_at + SPEECH_CAP_S
        if self.speaker_events:
            if not self.speaking and self.unplayed == 0:
                return -math.inf
            return cap
        estimate = self.ended_at + min(self.chars / self.chars_per_s, SPEECH_CAP_S)
        return min(estimate, cap)


@dataclass(eq=False, slots=True)
class _Session:
    """State of one relay socket. Registered by call sid once ``setup`` arrived."""

    ws: trio_websocket.WebSocketConnection
    relay: RelayConnection
    outbox: trio.MemorySendChannel[_Outgoing]
    call_sid: str = ""
    session_id: str = ""
    seq: int = 0  # frames accepted from Twilio; 1 = setup
    turn: int = 0  # final prompts seen
    fence: int = 0
    last_index: dict[int, int] = field(default_factory=dict)
    peer_closed: trio.Event = field(default_factory=trio.Event)
    speech: _Speech = field(default_factory=_Speech)
    deferred: trio.MemorySendChannel[_Deferred] | None = None


def _context(env: Envelope) -> dict[str, Any]:
    """The log context of an entry's call, passed to the (rare) logs that need it."""
    return {"call_sid": env.call, "turn": env.turn}


class Gateway:
    """One gateway process's state: sessions by call sid, metrics, readiness.

    Most code wants :func:`serve_gateway`; the class is public so a composition
    root can reach ``metrics`` or ``sessions`` (e.g. for a shutdown report).
    """

    def __init__(
        self, bus: Bus, config: GatewayConfig, *, registries: Sequence[CollectorRegistry] = ()
    ) -> None:
        self.bus = bus
        self.config = config
        self.keys = config.keys
        self.metrics = GatewayMetrics(extra=registries)
        self.facts = FactPublisher(bus, self.keys)
        self._scrape_lock = trio.Lock()
        self.sessions: dict[str, _Session] = {}
        self.ready = False
        # Open without a token on dev, or where no signature protects anything anyway.
        access = DashboardAccess(
            config.dashboard_token, config.dashboard_open or config.auth_token is None
        )
        self.dashboard = Dashboard(
            bus,
            self.keys,
            gateway_id=config.gateway_id,
            access=access,
            local_calls=lambda: list(self.sessions),
        )

    # ----------------------------------------------------------------- serving

    async def serve(
        self,
        *,
        listeners: list[trio.SocketListener] | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind (unless given bound ``listeners``), report the bound port through
        ``task_status``, serve until cancelled."""
        structlog.contextvars.bind_contextvars(actor="gateway")
        if self.config.auth_token is None:
            log.warning(
                "signature_check_disabled",
                gateway_id=self.config.gateway_id,
                hint="no Twilio auth token: anyone can open calls on this gateway",
            )
        if listeners is None:
            listeners = await open_listeners(self.config.host, self.config.port)
        port = bound_port(listeners)
        self.config = with_bound_port(self.config, port)
        limits = HttpLimits(max_body_bytes=self.config.max_body_bytes)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.facts.serve)
            await nursery.start(self._dispatch)
            await nursery.start(self.dashboard.serve)
            nursery.start_soon(serve_http, self.router(), listeners, limits)
            self.ready = True
            log.info(
                "gateway_listening",
                gateway_id=self.config.gateway_id,
                host=self.config.host,
                port=port,
                public_url=self.config.public_url,
            )
            task_status.started(port)

    def router(self) -> Router:
        router = Router()
        router.add("GET", "/healthz", self._healthz)
        router.add("GET", "/readyz", self._readyz)
        router.add("GET", "/metrics", self._metrics)
        router.add("POST", "/twiml", self._twiml)
        router.add("POST", "/action", self._action)
        router.add("POST", "/status", self._status)
        router.websocket("/relay", gate=self._relay_gate, handler=self._relay)
        self.dashboard.add_routes(router)
        return router

    # ---------------------------------------------------------------- webhooks

    def _signed(self, request: Request, url: str, params: signature.Params) -> bool:
        """Twilio's signature: the Auth Token's HMAC-SHA1, or a SharedKey's algorithm
        when the request carries ``X-Twilio-Webhooks-Signature-Settings``."""
        settings = request.header(signature.SETTINGS_HEADER.lower())
        token = self.config.auth_token
        if token is None and self.config.webhook_shared_key is None:
            return True
        secret, algorithm = token, signature.HMAC_SHA1
        if settings:
            secret, algorithm = self.config.webhook_shared_key, signature.algorithm_of(settings)
        if secret is None:
            log.warning(
                "signature_rejected",
                path=request.path,
                algorithm=algorithm,
                hint="Twilio signed this request with a SharedKey: set TWILIO_WEBHOOK_SHARED_KEY",
            )
            return False
        if request.query:
            url = f"{url}?{request.query}"
        given = request.header("x-twilio-signature")
        ok = signature.verify(secret, url, params, given, algorithm=algorithm)
        if not ok:
            log.warning(
                "signature_rejected",
                path=request.path,
                signed_url=url,
                algorithm=algorithm,
                has_signature=given is not None,
            )
        return ok

    async def _webhook(
        self, request: Request, answer: Callable[[dict[str, str]], Awaitable[Response]]
    ) -> Response:
        pairs = request.form_pairs()
        if not self._signed(request, self.config.public(request.path), pairs):
            response = text_response(403, "invalid signature")
        else:
            response = await answer(dict(pairs))
        self.metrics.webhooks.labels(request.path, str(response.status)).inc()
        return response

    async def _twiml(self, request: Request) -> Response:
        async def answer(params: dict[str, str]) -> Response:
            log.info(
                "call_incoming",
                call_sid=params.get("CallSid"),
                from_=params.get("From"),
                to=params.get("To"),
                direction=params.get("Direction"),
            )
            return xml_response(connect_twiml(self.config))

        return await self._webhook(request, answer)

    async def _resume_left(self, params: dict[str, str]) -> bool:
        """Whether a failed session's call may be resumed once more (gateway.resume)."""
        if params.get("SessionStatus") != "failed" or not is_transient(params.get("ErrorCode")):
            return True  # not asked: action_twiml decides without a resume
        call, session = params.get("CallSid", ""), params.get("SessionId", "")
        try:
            number = await claim_resume(self.bus, self.keys, call, session, self.config.max_resumes)
        except BusError as exc:
            # Without the count, resuming is the better failure than hanging up.
            log.warning("resume_count_unavailable", call_sid=call, error=str(exc))
            return True
        log.info("resume_claimed", call_sid=call, resume=number, limit=self.config.max_resumes)
        return number is not None

    async def _action(self, request: Request) -> Response:
        async def answer(params: dict[str, str]) -> Response:
            log.info(
                "relay_session_ended",
                call_sid=params.get("CallSid"),
                session_id=params.get("SessionId"),
                session_status=params.get("SessionStatus"),
                session_duration=params.get("SessionDuration"),
                handoff_data=params.get("HandoffData"),
                error_code=params.get("ErrorCode"),
                error_message=params.get("ErrorMessage"),
            )
            resume_left = await self._resume_left(params)
            decision = action_twiml(self.config, params, resume_left=resume_left)
            log.info(
                "action_answered",
                call_sid=params.get("CallSid"),
                outcome=decision.outcome,
                detail=decision.detail,
            )
            if decision.outcome == "refused":
                log.warning(
                    "handoff_refused", call_sid=params.get("CallSid"), detail=decision.detail
                )
            return xml_response(decision.twiml)

        return await self._webhook(request, answer)

    async def _status(self, request: Request) -> Response:
        async def answer(params: dict[str, str]) -> Response:
            log.info(
                "call_status",
                call_sid=params.get("CallSid"),
                call_status=params.get("CallStatus"),
                call_duration=params.get("CallDuration"),
            )
            return Response(204)

        return await self._webhook(request, answer)

    async def _healthz(self, request: Request) -> Response:
        return text_response(200, "ok")

    async def _readyz(self, request: Request) -> Response:
        return text_response(200, "ready") if self.ready else text_response(503, "starting")

    async def _metrics(self, request: Request) -> Response:
        self.metrics.active_calls.set(len(self.sessions))
        self.metrics.facts_dropped.set(self.facts.dropped)
        await self._scrape_pending()
        return Response(200, self.metrics.render(), content_type=self.metrics.content_type)

    async def _scrape_pending(self) -> None:
        """Pending (delivered, unacked) entries per consumer group, bounded in time.

        Read at scrape time only, so the bus sees a few cheap commands per
        scrape and nothing on the caller's path. One scrape at a time.
        """
        groups = {
            GROUP_CONVERSATION: self.keys.all_calls(),
            GROUP_LLM: self.keys.llm_streams(),
            GROUP_TELEMETRY: self.keys.event_streams(),
        }
        async with self._scrape_lock:
            with trio.move_on_after(PENDING_SCRAPE_TIMEOUT):
                for group, streams in groups.items():
                    total = 0
                    for stream in streams:
                        try:
                            total += await self.bus.pending_count(stream, group)
                        except BusError:
                            continue  # no such group (yet): nothing pending there
                    self.metrics.bus_pending.labels(group).set(total)

    # ------------------------------------------------------------ relay socket

    async def _relay_gate(self, request: Request) -> Response | None:
        if request.header("sec-websocket-key") is None:
            return text_response(400, "not a websocket handshake")
        if not self._signed(request, self.config.relay_url, {}):
            self.metrics.webhooks.labels(request.path, "403").inc()
            return text_response(403, "invalid signature")
        return None

    async def _relay(self, request: Request, stream: trio.abc.Stream) -> None:
        """Run one relay session on an upgraded connection; isolate its failures.

        The socket's reader task must outlive a shutdown so that the 1001 close
        handshake can complete instead of timing out: the session runs shielded,
        and a watcher outside the shield turns the outer cancel into ``stop``.
        """
        stop = _Stop()
        async with trio.open_nursery() as watch:
            watch.start_soon(_cancel_when_cancelled, stop)
            with trio.CancelScope(shield=True):
                await self._relay_session(stream, stop)
            watch.cancel_scope.cancel()

    async def _relay_session(self, stream: trio.abc.Stream, stop: _Stop) -> None:
        ws: trio_websocket.WebSocketConnection | None = None
        async with trio.open_nursery() as nursery:  # holds trio-websocket's reader
            with stop.scope(), trio.move_on_after(HANDSHAKE_TIMEOUT):
                ws_request = await trio_websocket.wrap_server_stream(
                    nursery, stream, max_message_size=self.config.max_frame_bytes
                )
                ws = await ws_request.accept()
            if ws is None:  # handshake timed out or shutdown came first
                nursery.cancel_scope.cancel()
                return
            outbox, inbox = trio.open_memory_channel[_Outgoing](OUTBOX_FRAMES)
            session = _Session(
                ws,
                RelayConnection(max_bytes=self.config.max_frame_bytes),
                outbox,
                speech=_Speech(chars_per_s=self.config.speech_chars_per_second),
            )
            code, reason = CLOSE_GOING_AWAY, "going away"  # unless the session ends by itself
            try:
                with stop.scope():
                    await self._run_session(session, inbox)
                    code, reason = 1000, "session over"
            except* Exception as group:
                code, reason = CLOSE_INTERNAL_ERROR, "internal error"
                log.error(
                    "session_failed",
                    call_sid=session.call_sid or None,
                    session_id=session.session_id or None,
                    exc_info=group,
                )
            finally:
                peer = ws.closed  # set when Twilio (or the size limit) closed first
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(CLOSE_TIMEOUT):
                        await ws.aclose(code, reason)
                    self._unregister(session)
                    closed_code = peer.code if peer is not None else code
                    closed_reason = (peer.reason or "") if peer is not None else reason
                    with trio.move_on_after(PUBLISH_TIMEOUT):
                        await self._publish_closed(session, closed_code, closed_reason)
                    if session.call_sid:
                        self._fact(session, "call_ended", code=closed_code, reason=closed_reason)
                nursery.cancel_scope.cancel()

    async def _run_session(
        self, session: _Session, inbox: trio.MemoryReceiveChannel[_Outgoing]
    ) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    frame = await session.ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    session.peer_closed.set()
                    self._log_close(session, exc)
                    break
                msg = self._receive(session, frame)
                if msg is None:
                    continue
                if isinstance(msg, Setup):
                    self._register(session, msg)
                    nursery.start_soon(self._sender, session, inbox)
                    deferred, waiting = trio.open_memory_channel[_Deferred](DEFERRED_FRAMES)
                    session.deferred = deferred
                    nursery.start_soon(self._after_speech, session, waiting)
                await self._publish(session, msg)
            nursery.cancel_scope.cancel()

    def _receive(self, session: _Session, frame: str | bytes) -> InboundMessage | None:
        """Parse one frame; a bad one is logged, counted and dropped (None)."""
        try:
            msg = session.relay.receive(frame)
        except RemoteProtocolError as exc:
            self._rejected(session, exc)
            return None
        session.seq += 1
        if isinstance(msg, Prompt) and msg.last:
            session.turn += 1
            structlog.contextvars.bind_contextvars(turn=session.turn)
        if isinstance(msg, Interrupt) or (isinstance(msg, Prompt) and msg.last):
            # Fence at once: tokens of the reply being cut off must never play.
            session.fence = session.seq
            for reply_to in [r for r in session.last_index if r < session.fence]:
                del session.last_index[reply_to]
        if isinstance(msg, Prompt) and msg.last:
            # The caller's words ride along for analytics plug-ins (same retention
            # as the partition stream that already holds them).
            text = msg.voice_prompt
            self._fact(session, "prompt_received", reply_to=session.seq, text=text)
        elif isinstance(msg, Interrupt):
            self._fact(session, "interrupt_received", heard=msg.utterance_until_interrupt)
        if isinstance(msg, Interrupt):
            session.speech.interrupted()
        elif isinstance(msg, Info):
            session.speech.info(msg.name, msg.value)
        self.metrics.count_in.inc(wire_type(msg))
        return msg

    def _fact(self, session: _Session, name: str, **fields: Any) -> None:
        """Publish a fact about ``session`` without waiting (see ``bus.facts``)."""
        self.facts.emit(
            name,
            call=session.call_sid,
            session=session.session_id,
            gateway=self.config.gateway_id,
            seq=session.seq,
            turn=session.turn,
            **fields,
        )

    def _rejected(self, session: _Session, exc: ProtocolError) -> None:
        self.metrics.frames_rejected.labels(exc.kind.value).inc()
        self._fact(session, "frame_rejected", reason=exc.kind.value)
        log.warning(
            "frame_rejected",
            kind=exc.kind.value,
            detail=exc.detail,
            excerpt=exc.frame_excerpt,
            call_sid=session.call_sid or None,
            session_id=session.session_id or None,
        )

    def _log_close(self, session: _Session, exc: trio_websocket.ConnectionClosed) -> None:
        reason = exc.reason
        code = reason.code if reason is not None else None
        if code == CLOSE_TOO_BIG:
            self.metrics.frames_rejected.labels("too_large").inc()
            log.warning(
                "frame_rejected",
                kind="too_large",
                detail=reason.reason if reason is not None else None,
                limit=self.config.max_frame_bytes,
                call_sid=session.call_sid or None,
                session_id=session.session_id or None,
            )
        log.info(
            "relay_socket_closed",
            code=code,
            reason=reason.reason if reason is not None else None,
            call_sid=session.call_sid or None,
            frames=session.seq,
        )

    def _register(self, session: _Session, setup: Setup) -> None:
        session.call_sid = setup.call_sid
        session.session_id = setup.session_id
        structlog.contextvars.bind_contextvars(call_sid=setup.call_sid, turn=0)
        previous = self.sessions.get(setup.call_sid)
        if previous is not None:
            # A new <Connect> on the same call: the newest session is the live one.
            log.info("session_replaced", old_session_id=previous.session_id)
        self.sessions[setup.call_sid] = session
        self.metrics.active_calls.set(len(self.sessions))
        relay = self.config.relay
        session.speech.speaker_events = relay.subscribed("speaker-events")
        resumed = setup.custom_parameters.get("resumed") == "true"
        greeting = self.config.resume_greeting if resumed else relay.welcome_greeting
        if greeting:
            # Twilio speaks the welcome greeting itself: it counts as a reply.
            session.speech.text(greeting, True, trio.current_time())
        self._fact(session, "call_started", direction=setup.direction)
        log.info(
            "session_started",
            call_sid=setup.call_sid,
            session_id=setup.session_id,
            call_status=setup.call_status,
            direction=setup.direction,
        )

    def _unregister(self, session: _Session) -> None:
        if session.call_sid and self.sessions.get(session.call_sid) is session:
            del self.sessions[session.call_sid]
        self.metrics.active_calls.set(len(self.sessions))
        session.relay.closed()
        session.outbox.close()
        if session.deferred is not None:
            session.deferred.close()

    def _envelope(self, session: _Session, kind: Kind, body: dict[str, Any]) -> Envelope:
        return Envelope(
            kind=kind,
            call=session.call_sid,
            body=body,
            session=session.session_id,
            gateway=self.config.gateway_id,
            seq=session.seq,
            turn=session.turn,
        )

    async def _publish(self, session: _Session, msg: InboundMessage) -> None:
        env = self._envelope(session, _INBOUND_KINDS[type(msg)], to_wire(msg))
        await append_once(
            self.bus,
            self.keys.calls_for(session.call_sid),
            env.encode(),
            patience_s=PUBLISH_PATIENCE_S,
            call_sid=session.call_sid,
        )

    async def _publish_closed(self, session: _Session, code: int | None, reason: str) -> None:
        if not session.call_sid:
            return  # never set up: nobody downstream knows this socket
        # The close is not a Twilio frame, but it gets the next seq so that it
        # orders after every caller event of the session and stays unique.
        session.seq += 1
        env = self._envelope(session, Kind.CALL_CLOSED, {"code": code, "reason": reason})
        try:
            await self.bus.append(self.keys.calls_for(session.call_sid), env.encode())
        except BusError as exc:
            log.error("call_closed_not_published", call_sid=session.call_sid, error=repr(exc))

    async def _sender(self, session: _Session, inbox: trio.MemoryReceiveChannel[_Outgoing]) -> None:
        """Drain the session's outbox to the socket, in order."""
        async with inbox:
            async for frame, kind, sent in inbox:
                if kind == "text" and sent is not None and sent.reply_to < session.fence:
                    # Queued before the interrupt (or a newer prompt) arrived.
                    self.metrics.count_dropped.inc("fenced")
                    continue
                try:
                    await session.ws.send_message(frame)
                except trio_websocket.ConnectionClosed:
                    return
                self.metrics.count_out.inc(kind)
                if sent is not None:
                    for name in sent.names:
                        self.facts.emit(
                            name,
                            call=session.call_sid,
                            session=session.session_id,
                            gateway=self.config.gateway_id,
                            turn=sent.turn,
                            reply_to=sent.reply_to,
                        )
                if kind == "end":
                    # Twilio closes the socket after ``end``; close it ourselves
                    # only if it does not.
                    with trio.move_on_after(END_CLOSE_TIMEOUT):
                        await session.peer_closed.wait()
                    if not session.peer_closed.is_set():
                        log.info("end_not_followed_by_close", timeout_s=END_CLOSE_TIMEOUT)
                        await session.ws.aclose(1000, "session ended")
                    return

    # -------------------------------------------------------------- dispatcher

    async def _dispatch(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Tail this gateway's stream and route entries to sessions, forever."""
        stream = self.keys.gateway(self.config.gateway_id)
        backoff = Backoff("gateway_tail", stream=stream)
        after = await retry_bus("gateway_tail", lambda: self.bus.last_id(stream), backoff=backoff)
        task_status.started()
        while True:
            try:
                entries = await self.bus.read(stream, after, count=100, block_ms=READ_BLOCK_MS)
            except BusError as exc:
                # Redis away (restart, network): back off with jitter and keep
                # ``after``. Ids are time-based, so a restarted, empty Redis
                # hands out ids above it and the tail picks up new entries.
                if not exc.retriable:
                    # Not an outage; still never a reason to stop every call.
                    log.error("gateway_stream_read_failed", stream=stream, error=repr(exc))
                    await trio.sleep(backoff.cap_s)
                    continue
                await backoff.failed(exc)
                continue
            backoff.succeeded()
            if entries:
                # Once per batch: the latest entry's age is the gauge's meaning.
                lag_ms = now_ms() - parse_id(entries[-1].id)[0]
                self.metrics.dispatch_lag.set(max(0, lag_ms) / 1000)
            for entry in entries:
                after = entry.id
                try:
                    self._route(entry)
                except Exception:
                    # One unexpected entry must not stop delivery to every call.
                    log.exception("dispatch_failed", entry_id=entry.id)

    def _route(self, entry: Entry) -> None:
        """Route one entry of the gateway stream; never blocks."""
        try:
            env = Envelope.decode(entry.fields)
        except MalformedEntry as exc:
            log.warning("bus_entry_malformed", entry_id=entry.id, error=str(exc))
            return
        # No context binding per entry (it was a measurable share of the
        # dispatcher's time): the rare logs below name the call themselves.
        if env.kind == Kind.LLM_TOKENS:
            self._route_tokens(env)
        elif env.kind == Kind.GATEWAY_SEND:
            self._route_send(env)
        else:
            log.debug("bus_entry_ignored", kind=env.kind, entry_id=entry.id, **_context(env))

    def _live(self, env: Envelope, *, strict: bool) -> _Session | None:
        session = self.sessions.get(env.call)
        if session is None:
            self._dropped(env, "no_session")
            return None
        if (strict or env.session) and env.session != session.session_id:
            self._dropped(env, "stale_session")
            return None
        return session

    def _dropped(self, env: Envelope, reason: str, **fields: Any) -> None:
        self.metrics.count_dropped.inc(reason)
        log.debug("outbound_dropped", kind=env.kind, reason=reason, **_context(env), **fields)

    def _route_tokens(self, env: Envelope) -> None:
        body = env.body
        text, index, last, reply_to = (
            body.get("text"),
            body.get("index"),
            body.get("last"),
            body.get("reply_to"),
        )
        if not (
            isinstance(text, str)
            and isinstance(index, int)
            and isinstance(last, bool)
            and isinstance(reply_to, int)
        ):
            log.warning("bus_body_invalid", kind=env.kind, body=body, **_context(env))
            return
        session = self._live(env, strict=True)
        if session is None:
            return
        if reply_to < session.fence:
            self._dropped(env, "fenced", reply_to=reply_to, fence=session.fence)
            return
        if index <= session.last_index.get(reply_to, -1):
            self._dropped(env, "duplicate", reply_to=reply_to, index=index)
            return
        names: tuple[str, ...] = ("first_token_sent",) if reply_to not in session.last_index else ()
        if last:
            names += ("last_token_sent",)
        sent = _SentFacts(names, reply_to, env.turn)
        if self._offer(session, env, Text(token=text, last=last), sent):
            session.last_index[reply_to] = index

    def _route_send(self, env: Envelope) -> None:
        frame = env.body.get("frame")
        if not isinstance(frame, dict):
            log.warning("bus_body_invalid", kind=env.kind, body=env.body, **_context(env))
            return
        try:
            msg = outbound_from_wire(frame)
        except RemoteProtocolError as exc:
            log.warning(
                "gateway_send_invalid", kind=exc.kind.value, detail=exc.detail, **_context(env)
            )
            return
        after_speech = env.body.get("after_speech", False) is True
        session = self._live(env, strict=after_speech)
        if session is None:
            return
        if not after_speech:
            self._offer(session, env, msg)
            return
        if session.deferred is None:
            self._dropped(env, "session_closing")
            return
        try:
            session.deferred.send_nowait((env, msg))
        except trio.WouldBlock:
            self._dropped(env, "queue_full")
            log.warning("after_speech_queue_full", capacity=DEFERRED_FRAMES, **_context(env))

    async def _after_speech(
        self, session: _Session, waiting: trio.MemoryReceiveChannel[_Deferred]
    ) -> None:
        """Release after_speech frames, in order, once the reply has been spoken."""
        async with waiting:
            async for env, msg in waiting:
                queued = trio.current_time()
                while True:
                    speech = session.speech
                    changed = speech.changed
                    release = speech.release_at()
                    if trio.current_time() >= release:
                        break
                    with trio.move_on_at(release):
                        await changed.wait()
                log.info(
                    "after_speech_released",
                    frame=wire_type(msg),
                    waited_ms=round((trio.current_time() - queued) * 1000, 1),
                    speaker_events=session.speech.speaker_events,
                )
                self._offer(session, env, msg)

    def _offer(
        self,
        session: _Session,
        env: Envelope,
        msg: OutboundMessage,
        sent: _SentFacts | None = None,
    ) -> bool:
        try:
            frame = session.relay.send(msg)
        except ProtocolError as exc:
            if exc.kind is FrameErrorKind.AFTER_END:
                # ``end`` is already on its way: Twilio closes the session after
                # it, so nothing later would be spoken anyway.
                self._dropped(env, "session_ending")
                return False
            log.warning("outbound_invalid", kind=exc.kind.value, detail=exc.detail, **_context(env))
            return False
        kind = wire_type(msg)
        try:
            session.outbox.send_nowait((frame, kind, sent))
        except trio.WouldBlock:
            self._dropped(env, "queue_full")
            log.warning("outbox_full", capacity=OUTBOX_FRAMES, **_context(env))
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._dropped(env, "session_closing")
            return False
        if isinstance(msg, Text):
            session.speech.text(msg.token, msg.last, trio.current_time())
        return True


def with_bound_port(config: GatewayConfig, port: int) -> GatewayConfig:
    """``config`` with a public URL naming port 0 pointed at the bound ``port``.

    With ``port=0`` (tests, ``switchboard dev --port 0``) the public URL derived
    from host and port says ``:0``, which no client can have used; the port we
    actually bound is what Twilio (or the simulator) signs and connects to.
    """
    parts = urlsplit(config.public_url)
    try:
        named = parts.port
    except ValueError:
        return config
    if named != 0:
        return config
    netloc = parts.netloc.rpartition(":")[0] + f":{port}"
    return replace(config, public_url=urlunsplit(parts._replace(netloc=netloc)))


class _Stop:
    """Cancels every scope it handed out, including ones made after ``cancel``."""

    def __init__(self) -> None:
        self.cancelled = False
        self._scopes: list[trio.CancelScope] = []

    def scope(self) -> trio.CancelScope:
        scope = trio.CancelScope()
        if self.cancelled:
            scope.cancel()
        self._scopes.append(scope)
        return scope

    def cancel(self) -> None:
        self.cancelled = True
        for scope in self._scopes:
            scope.cancel()


async def _cancel_when_cancelled(stop: _Stop) -> None:
    """Sleep until cancelled from outside, then cancel ``stop`` (see ``_relay``)."""
    try:
        await trio.sleep_forever()
    finally:
        stop.cancel()


async def serve_gateway(
    bus: Bus,
    config: GatewayConfig,
    *,
    registries: Sequence[CollectorRegistry] = (),
    listeners: list[trio.SocketListener] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the gateway on ``config.host:config.port`` until cancelled.

    ``listeners``, when given, are already bound (the composition root binds
    the public port before anything else, so a port in use fails at once).

    Reports the bound port (useful with port 0) through ``task_status``.
    On cancel every relay socket is closed with 1001 (going away), shielded
    and time-limited, and a ``call.closed`` is appended for each.
    ``registries`` are rendered on ``/metrics`` after the gateway's own (the
    one-process ``dev`` composition shows the telemetry actor's there).
    """
    await Gateway(bus, config, registries=registries).serve(
        listeners=listeners, task_status=task_status
    )
