"""A relay session's life: accept the socket, read it in order, register, close.

``setup`` must come within ``setup_timeout_s`` of the upgrade (else the
socket is closed with 1008) and carry the session token of its call
(:mod:`gateway.calltoken`; else 1008, and nothing is registered). It
registers the session under its call sid and starts its sender and its
after-speech releaser. A session replaces a live one of the same call only
when its token supersedes that session (the resume path after Twilio's
signed ``<Connect action>`` callback);
every frame goes through :mod:`gateway.inbound` in the order read. The
session ends when the socket closes (Twilio closes it after our ``end``, or
the caller hung up), on an internal error (closed with 1011, logged; no other
call is affected) or at shutdown (1001, going away). Whatever the cause, the
close handshake and the ``call.closed`` append run shielded and time-limited.

Oversize frames: trio-websocket enforces ``max_message_size`` itself and
closes the socket with 1009 (Message Too Big); that is logged as
``frame_rejected kind=too_large`` and ends the session like any other close.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import structlog
import trio
import trio_websocket

from gateway import calltoken, inbound
from gateway.apology import apologise_when_late
from gateway.context import GatewayContext
from gateway.dispatch import DEFERRED_FRAMES, OUTBOX_FRAMES, Dispatcher
from gateway.publish import CallerEvents
from gateway.session import Deferred, Outgoing, Session
from gateway.twiml import RESUMED_PARAMETER
from relay import RelayConnection, Setup

__all__ = ["CLOSE_TIMEOUT", "HANDSHAKE_TIMEOUT", "Stop", "run_relay"]

log = structlog.get_logger()

CLOSE_TIMEOUT = 2.0  # bound on a shielded WebSocket close handshake
PUBLISH_TIMEOUT = 2.0  # bound on the shielded ``call.closed`` append
HANDSHAKE_TIMEOUT = 10.0

CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TOO_BIG = 1009
CLOSE_POLICY = 1008  # a setup refused (gateway.calltoken) or never sent


class Stop:
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


async def _cancel_when_cancelled(stop: Stop) -> None:
    """Sleep until cancelled from outside, then cancel ``stop`` (see ``run_relay``)."""
    try:
        await trio.sleep_forever()
    finally:
        stop.cancel()


async def run_relay(ctx: GatewayContext, dispatcher: Dispatcher, stream: trio.abc.Stream) -> None:
    """Run one relay session on an upgraded connection; isolate its failures.

    The socket's reader task must outlive a shutdown so that the 1001 close
    handshake can complete instead of timing out: the session runs shielded,
    and a watcher outside the shield turns the outer cancel into ``stop``.
    """
    stop = Stop()
    ctx.open_sockets += 1
    try:
        async with trio.open_nursery() as watch:
            watch.start_soon(_cancel_when_cancelled, stop)
            with trio.CancelScope(shield=True):
                await _relay_session(ctx, dispatcher, stream, stop)
            watch.cancel_scope.cancel()
    finally:
        ctx.open_sockets -= 1


async def _relay_session(
    ctx: GatewayContext, dispatcher: Dispatcher, stream: trio.abc.Stream, stop: Stop
) -> None:
    ws: trio_websocket.WebSocketConnection | None = None
    async with trio.open_nursery() as nursery:  # holds trio-websocket's reader
        with stop.scope(), trio.move_on_after(HANDSHAKE_TIMEOUT):
            ws_request = await trio_websocket.wrap_server_stream(
                nursery, stream, max_message_size=ctx.config.max_frame_bytes
            )
            ws = await ws_request.accept()
        if ws is None:  # handshake timed out or shutdown came first
            nursery.cancel_scope.cancel()
            return
        outbox, inbox = trio.open_memory_channel[Outgoing](OUTBOX_FRAMES)
        session = Session(ws, RelayConnection(max_bytes=ctx.config.max_frame_bytes), outbox)
        code, reason = CLOSE_GOING_AWAY, "going away"  # unless the session ends by itself
        try:
            with stop.scope():
                await _run_session(ctx, dispatcher, session, inbox)
                code, reason = session.close_with or (1000, "session over")
        except* Exception as group:
            code, reason = CLOSE_INTERNAL_ERROR, "internal error"
            log.error("session_failed", **session.log_context(), exc_info=group)
        finally:
            with trio.CancelScope(shield=True):
                await _close(ctx, session, code, reason)
            nursery.cancel_scope.cancel()


async def _close(ctx: GatewayContext, session: Session, code: int, reason: str) -> None:
    """Close the socket and tell the bus; called shielded."""
    peer = session.ws.closed  # set when Twilio (or the size limit) closed first
    with trio.move_on_after(CLOSE_TIMEOUT):
        await session.ws.aclose(code, reason)
    _unregister(ctx, session)
    closed_code = peer.code if peer is not None else code
    closed_reason = (peer.reason or "") if peer is not None else reason
    with trio.move_on_after(PUBLISH_TIMEOUT):
        await inbound.publish_closed(ctx, session, closed_code, closed_reason)
    if session.call_sid:
        ctx.fact(session, "call_ended", code=closed_code, reason=closed_reason)


async def _run_session(
    ctx: GatewayContext,
    dispatcher: Dispatcher,
    session: Session,
    inbox: trio.MemoryReceiveChannel[Outgoing],
) -> None:
    setup_deadline = trio.current_time() + ctx.config.setup_timeout_s
    events = CallerEvents(ctx, session, interim_prompts=ctx.config.interim_prompts)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(events.run)
        while True:
            frame: str | bytes | None = None
            try:
                with trio.move_on_at(math.inf if session.call_sid else setup_deadline):
                    frame = await session.ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                session.peer_closed.set()
                _log_close(ctx, session, exc)
                break
            if frame is None:
                ctx.metrics.frames_rejected.labels("setup_timeout").inc()
                log.info("setup_timeout", timeout_s=ctx.config.setup_timeout_s)
                session.close_with = (CLOSE_POLICY, "no setup")
                break
            msg = inbound.receive(ctx, session, frame)
            if msg is None:
                continue
            if isinstance(msg, Setup):
                refusal = _refusal(ctx, session, msg)
                if refusal is not None:
                    ctx.metrics.frames_rejected.labels("session_refused").inc()
                    log.warning(
                        "session_refused",
                        reason=refusal,
                        call_sid=msg.call_sid,
                        session_id=msg.session_id,
                    )
                    session.close_with = (CLOSE_POLICY, "session refused")
                    break
                if calltoken.PARAMETER in msg.custom_parameters:
                    # The token has done its job; it is no business of the actors.
                    kept = {
                        k: v for k, v in msg.custom_parameters.items() if k != calltoken.PARAMETER
                    }
                    msg = replace(msg, custom_parameters=kept)
                _register(ctx, session, msg)
                nursery.start_soon(dispatcher.send_frames, session, inbox)
                deferred, waiting = trio.open_memory_channel[Deferred](DEFERRED_FRAMES)
                session.deferred = deferred
                nursery.start_soon(dispatcher.release_after_speech, session, waiting)
                nursery.start_soon(apologise_when_late, dispatcher, session)
            await events.publish(msg)
        nursery.cancel_scope.cancel()


def _refusal(ctx: GatewayContext, session: Session, setup: Setup) -> str | None:
    """Why ``setup`` may not start a session (None: it may); see gateway.calltoken."""
    token = setup.custom_parameters.get(calltoken.PARAMETER)
    try:
        grant = calltoken.check(ctx.token_secret, token, setup.call_sid, now=time.time())
    except calltoken.TokenRejected as exc:
        return f"token_{exc.reason}"
    live = ctx.sessions.get(setup.call_sid)
    if (
        live is not None
        and live is not session
        and live.session_id not in (grant.supersedes, setup.session_id)
    ):
        # Only Twilio's signed action callback (the resume path) ends a live
        # session; the same session's own socket may come back (a reconnect).
        return "call_already_live"
    return None


def _log_close(ctx: GatewayContext, session: Session, exc: trio_websocket.ConnectionClosed) -> None:
    reason = exc.reason
    code = reason.code if reason is not None else None
    if code == CLOSE_TOO_BIG:
        ctx.metrics.frames_rejected.labels("too_large").inc()
        log.warning(
            "frame_rejected",
            kind="too_large",
            detail=reason.reason if reason is not None else None,
            limit=ctx.config.max_frame_bytes,
            **session.log_context(),
        )
    log.info(
        "relay_socket_closed",
        code=code,
        reason=reason.reason if reason is not None else None,
        call_sid=session.call_sid or None,
        frames=session.seq,
    )


def _register(ctx: GatewayContext, session: Session, setup: Setup) -> None:
    session.call_sid = setup.call_sid
    session.session_id = session.fence.session_id = setup.session_id
    structlog.contextvars.bind_contextvars(call_sid=setup.call_sid, prompts=0)
    previous = ctx.sessions.get(setup.call_sid)
    if previous is not None:
        # A new <Connect> on the same call: the newest session is the live one.
        log.info("session_replaced", old_session_id=previous.session_id)
    ctx.sessions[setup.call_sid] = session
    ctx.touch_sessions()
    ctx.metrics.active_calls.set(len(ctx.sessions))
    relay = ctx.config.relay
    session.speech.speaker_events = relay.subscribed("speaker-events")
    session.speech.chars_per_s = ctx.config.speech_chars_per_second
    session.reply.deadline_s = ctx.config.reply_deadline_s
    resumed = setup.custom_parameters.get(RESUMED_PARAMETER) == "true"
    greeting = ctx.config.resume_greeting if resumed else relay.welcome_greeting
    if greeting:
        # Twilio speaks the welcome greeting itself: it counts as a reply.
        session.speech.text(greeting, True, trio.current_time())
        session.touch_speech()
    ctx.fact(session, "call_started", direction=setup.direction)
    log.info(
        "session_started",
        call_sid=setup.call_sid,
        session_id=setup.session_id,
        call_status=setup.call_status,
        direction=setup.direction,
    )


def _unregister(ctx: GatewayContext, session: Session) -> None:
    if session.call_sid and ctx.sessions.get(session.call_sid) is session:
        del ctx.sessions[session.call_sid]
        ctx.touch_sessions()
    ctx.metrics.active_calls.set(len(ctx.sessions))
    session.relay.closed()
    session.outbox.close()
    if session.deferred is not None:
        session.deferred.close()
