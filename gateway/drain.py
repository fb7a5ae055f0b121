"""Draining a gateway: stop taking calls, let live ones go on, hand the rest over.

A call is a WebSocket pinned to one gateway process, so stopping a gateway
must not stop its calls. At the first SIGTERM (:func:`drain`):

1. **No new calls.** ``/readyz`` answers 503 at once, so the load balancer
   stops sending webhooks here; a voice webhook or a ``/relay`` upgrade that
   still arrives gets a fast 503. ``/action`` and ``/status`` are still
   answered: they belong to calls already up.
2. **Live calls go on** for up to ``drain_deadline_s``; most end by themselves
   on a short rolling restart.
3. **The rest are handed over.** Each remaining session gets ``end`` with
   handoffData ``{"reason": "handover"}``, queued like any after-speech frame
   (a reply being spoken is heard to its end; one that has not started yet
   gets until the reply deadline to start). Twilio then calls ``/action``,
   which answers with a fresh ``<Connect><ConversationRelay>`` (resumed, with
   the resume greeting); the load balancer sends that upgrade to a gateway
   that is ready, and the call continues there with its history.
4. **Nothing silently.** Sessions still open ``HANDOVER_TIMEOUT_S`` after
   their ``end`` are logged (``calls_not_handed_over``) and closed with 1001
   when the process stops; Twilio reports those as failed sessions, which
   ``/action`` resumes within the resume budget.
"""

from __future__ import annotations

import structlog
import trio

from gateway.context import GatewayContext
from gateway.session import Session
from relay.handoff import Handoff

__all__ = ["HANDOVER_TIMEOUT_S", "drain"]

log = structlog.get_logger()

# After its ``end``, how long a handed-over session gets to close (its reply
# spoken, Twilio's close), before the gateway stops anyway.
HANDOVER_TIMEOUT_S = 15.0


async def _until_no_sessions(ctx: GatewayContext) -> None:
    while ctx.sessions:
        await ctx.sessions_changed.wait()


async def _hand_over(ctx: GatewayContext, session: Session) -> None:
    """Queue the handover ``end`` of one session, after the reply it owes."""
    with trio.move_on_after(ctx.config.reply_deadline_s):
        # A prompt waits for its reply: let the reply start first (the ``end``
        # then waits for it to be spoken), or give up at the reply deadline.
        while session.reply.due_at is not None:
            await session.speech_changed.wait()
    if session.deferred is None:
        return
    try:
        session.deferred.send_nowait((None, Handoff.handover().end()))
    except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
        return  # closing already, or stuck: the summary below names it
    log.info("call_handing_over", **session.log_context())


async def drain(ctx: GatewayContext) -> None:
    """Stop taking calls, wait for live ones up to the deadline, hand the rest over."""
    config = ctx.config
    ctx.draining = True
    ctx.ready = False
    ctx.metrics.draining.set(1)
    log.info("gateway_draining", calls=len(ctx.sessions), deadline_s=config.drain_deadline_s)
    with trio.move_on_after(config.drain_deadline_s):
        await _until_no_sessions(ctx)
    remaining = list(ctx.sessions.values())
    if remaining:
        log.info("calls_handed_over", calls=len(remaining))
        async with trio.open_nursery() as nursery:
            for session in remaining:
                nursery.start_soon(_hand_over, ctx, session)
        with trio.move_on_after(HANDOVER_TIMEOUT_S):
            await _until_no_sessions(ctx)
    if ctx.sessions:
        log.warning(
            "calls_not_handed_over",
            calls=len(ctx.sessions),
            call_sids=sorted(ctx.sessions),
            hint="closed with 1001; Twilio reports them failed and /action resumes them",
        )
    log.info("gateway_drained", handed_over=len(remaining))
