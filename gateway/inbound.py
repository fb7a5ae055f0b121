"""Inbound: a frame from Twilio becomes a stamped caller event on the bus.

Each frame is parsed by the session's :class:`relay.RelayConnection`, strictly
in order. A bad frame is logged (``frame_rejected``), counted and dropped,
never answered and never a reason to close (Twilio counts every frame it
cannot parse against the session). A good one is stamped with the session's
next ``seq``, moves the reply fence and the speech model, and is appended to
the call's partition stream as its typed bus message (``call.setup``, ...).
The envelope's ``turn`` stays 0: turns are the conversation's to number; the
session's count of final prompts is logged as ``prompts``.
``call.closed`` is the gateway's own event: the socket closed.
"""

from __future__ import annotations

import structlog
import trio

from bus.base import BusError
from bus.envelope import Envelope
from bus.messages import (
    BusMessage,
    CallClosed,
    CallDtmf,
    CallError,
    CallEvent,
    CallInfo,
    CallInterrupt,
    CallPrompt,
    CallSetup,
)
from bus.messages import envelope as bus_envelope
from bus.retry import append_once
from gateway.context import GatewayContext
from gateway.session import Session
from relay import (
    Dtmf,
    Error,
    InboundMessage,
    Info,
    Interrupt,
    Prompt,
    ProtocolError,
    RemoteProtocolError,
    Setup,
    wire_type,
)

__all__ = ["append", "caller_event", "publish_closed", "receive", "stamped"]

log = structlog.get_logger()

# How long a caller's event waits for the bus before the session gives up: a
# Redis Cluster failover (node timeout plus election), a Redis restart that
# reloads its append-only file, and a Redis full for a while all fit inside
# it. Meanwhile the session's socket stays open and is not read, so what the
# caller sends next waits in the socket's buffers (bounded backpressure).
PUBLISH_PATIENCE_S = 30.0


def caller_event(msg: InboundMessage) -> CallEvent:
    """The bus message that carries a Twilio frame (same fields, same wire names)."""
    match msg:
        case Setup():
            return CallSetup(
                session_id=msg.session_id,
                call_sid=msg.call_sid,
                account_sid=msg.account_sid,
                parent_call_sid=msg.parent_call_sid,
                from_=msg.from_,
                to=msg.to,
                forwarded_from=msg.forwarded_from,
                caller_name=msg.caller_name,
                direction=msg.direction,
                call_type=msg.call_type,
                call_status=msg.call_status,
                custom_parameters=msg.custom_parameters,
            )
        case Prompt():
            return CallPrompt(msg.voice_prompt, msg.lang, msg.last)
        case Dtmf():
            return CallDtmf(msg.digit)
        case Interrupt():
            return CallInterrupt(msg.utterance_until_interrupt, msg.duration_until_interrupt_ms)
        case Info():
            return CallInfo(msg.name, msg.value)
        case Error():
            return CallError(msg.description)


def receive(ctx: GatewayContext, session: Session, frame: str | bytes) -> InboundMessage | None:
    """Parse and stamp one frame; a bad one is logged, counted and dropped (None)."""
    try:
        msg = session.relay.receive(frame)
    except RemoteProtocolError as exc:
        _rejected(ctx, session, exc)
        return None
    session.seq += 1
    final_prompt = isinstance(msg, Prompt) and msg.last
    if final_prompt:
        session.prompts += 1
        structlog.contextvars.bind_contextvars(prompts=session.prompts)
    # Fence at once: tokens of the reply being cut off must never play.
    interrupt = isinstance(msg, Interrupt)
    session.fence.caller_event(
        session.seq, cuts_reply=final_prompt or interrupt, interrupt=interrupt
    )
    if isinstance(msg, Prompt) and msg.last:
        # The caller's words ride along for analytics plug-ins (same retention
        # as the partition stream that already holds them).
        ctx.fact(session, "prompt_received", reply_to=session.seq, text=msg.voice_prompt)
        session.prompted(session.seq, trio.current_time())
    elif isinstance(msg, Interrupt):
        ctx.fact(session, "interrupt_received", heard=msg.utterance_until_interrupt)
    if isinstance(msg, Interrupt):
        session.speech.interrupted()
        session.touch_speech()
    elif isinstance(msg, Info) and session.speech.info(msg.name, msg.value):
        session.touch_speech()
    ctx.metrics.count_in.inc(wire_type(msg))
    return msg


def _stamp(ctx: GatewayContext, session: Session, message: BusMessage) -> Envelope:
    return bus_envelope(
        message,
        call=session.call_sid,
        session=session.session_id,
        gateway=ctx.config.gateway_id,
        seq=session.seq,
    )


def stamped(ctx: GatewayContext, session: Session, msg: InboundMessage) -> Envelope:
    """The caller event ``msg`` as its bus envelope, stamped with the current ``seq``."""
    return _stamp(ctx, session, caller_event(msg))


async def append(ctx: GatewayContext, session: Session, env: Envelope) -> None:
    """Append the stamped caller event ``env`` to its call's partition stream."""
    await append_once(
        ctx.bus,
        ctx.keys.calls_for(session.call_sid),
        env.encode(),
        patience_s=PUBLISH_PATIENCE_S,
        call_sid=session.call_sid,
    )
    session.mark_published(env.seq)


async def publish_closed(
    ctx: GatewayContext, session: Session, code: int | None, reason: str
) -> None:
    """Append ``call.closed`` for a session that was set up; a bus failure is logged."""
    if not session.call_sid:
        return  # never set up: nobody downstream knows this socket
    # The close is not a Twilio frame, but it gets the next seq so that it
    # orders after every caller event of the session and stays unique.
    session.seq += 1
    env = _stamp(ctx, session, CallClosed(code, reason))
    try:
        await ctx.bus.append(ctx.keys.calls_for(session.call_sid), env.encode())
    except BusError as exc:
        log.error("call_closed_not_published", call_sid=session.call_sid, error=repr(exc))


async def reply_withdrawn(ctx: GatewayContext, session: Session, seq: int | None) -> None:
    """The apology for prompt ``seq`` went out and its late reply is fenced: the
    ``reply_late`` fact, and ``call.interrupt`` (``withdrawn``) for the
    conversation, so its history keeps none of that reply. A bus failure is
    logged; the caller is not affected."""
    ctx.fact(session, "reply_late", reply_to=seq)
    if seq is None or not session.call_sid:
        return
    # After the prompt itself: read first, the withdrawal would find nothing
    # to cut. (Bounded: the prompt's own append gives up after this long.)
    with trio.move_on_after(PUBLISH_PATIENCE_S):
        while session.published < seq:
            await session.published_changed.wait()
    session.seq += 1
    env = _stamp(ctx, session, CallInterrupt(withdrawn=seq))
    try:
        await append(ctx, session, env)
    except BusError as exc:
        log.error("reply_withdrawn_not_published", reply_to=seq, error=repr(exc))


def _rejected(ctx: GatewayContext, session: Session, exc: ProtocolError) -> None:
    ctx.metrics.frames_rejected.labels(exc.kind.value).inc()
    ctx.fact(session, "frame_rejected", reason=exc.kind.value)
    log.warning(
        "frame_rejected",
        kind=exc.kind.value,
        detail=exc.detail,
        excerpt=exc.frame_excerpt,
        **session.log_context(),
    )
