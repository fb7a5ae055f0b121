"""Outbound: this gateway's bus stream to the callers' sockets.

One dispatcher tails ``keys.gateway(gateway_id)`` and routes each entry by
call sid to the live session, never blocking: ``llm.tokens`` become ``text``
frames after the reply fence (:mod:`gateway.fence`) admits them;
``gateway.send`` frames (validated as Twilio would) go at once or, with
``after_speech``, once the speech model (:mod:`gateway.speech`) says the
current reply has been spoken; ``held`` batches wait in the fence for
``gateway.adopt`` (its rule 6). Text is cleaned of what TTS must never get and
split into frames under ``max_text_frame_bytes`` (:mod:`gateway.spoken`).
Each frame is encoded by the session's
:class:`relay.RelayConnection` (which refuses anything after ``end``) into
the session's bounded outbox; a per-session sender drains it, so one slow
socket never blocks the dispatcher. When an outbox is full the frame is
dropped and counted (``outbound_dropped{reason="queue_full"}``): a socket
that cannot absorb ``OUTBOX_FRAMES`` frames is dead or hopelessly behind,
and waiting for it would stall every other call on this gateway.

After-speech frames of a session leave in order and die with their session.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import structlog
import trio
import trio_websocket

from bus.base import BusError, Entry, MalformedEntry, parse_id
from bus.envelope import Envelope, Kind, now_ms
from bus.messages import GatewayAdopt, GatewaySend, LlmTokens
from bus.retry import Backoff, retry_bus
from gateway.context import GatewayContext
from gateway.fence import Admission, HeldBatch
from gateway.session import Deferred, Outgoing, SentFacts, Session
from gateway.spoken import clean, clean_part, split_text
from relay import (
    FrameErrorKind,
    OutboundMessage,
    ProtocolError,
    RemoteProtocolError,
    Text,
    outbound_from_wire,
    serialize,
    wire_type,
)

__all__ = ["DEFERRED_FRAMES", "OUTBOX_FRAMES", "Dispatcher"]

log = structlog.get_logger()

OUTBOX_FRAMES = 256  # per-session outbound queue (frames)
DEFERRED_FRAMES = 16  # after_speech frames waiting per session
READ_BLOCK_MS = 1000  # dispatcher's blocking read on the gateway stream
END_CLOSE_TIMEOUT = 5.0  # after ``end``, how long Twilio gets to close the socket


def _context(env: Envelope) -> dict[str, str | int]:
    """The log context of an entry's call, passed to the (rare) logs that need it."""
    return {"call_sid": env.call, "turn": env.turn}


class Dispatcher:
    """Routes this gateway's stream to sessions; runs each session's sender."""

    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tail this gateway's stream and route entries to sessions, forever."""
        ctx = self.ctx
        stream = ctx.keys.gateway(ctx.config.gateway_id)
        backoff = Backoff("gateway_tail", stream=stream)
        after = await retry_bus("gateway_tail", lambda: ctx.bus.last_id(stream), backoff=backoff)
        task_status.started()
        while True:
            try:
                entries = await ctx.bus.read(stream, after, count=100, block_ms=READ_BLOCK_MS)
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
                ctx.metrics.dispatch_lag.set(max(0, lag_ms) / 1000)
            for entry in entries:
                after = entry.id
                try:
                    self.route(entry)
                except Exception:
                    # One unexpected entry must not stop delivery to every call.
                    log.exception("dispatch_failed", entry_id=entry.id)

    def route(self, entry: Entry) -> None:
        """Route one entry of the gateway stream; never blocks."""
        try:
            env = Envelope.decode(entry.fields)
        except MalformedEntry as exc:
            log.warning("bus_entry_malformed", entry_id=entry.id, error=str(exc))
            return
        # No context binding per entry (it was a measurable share of the
        # dispatcher's time): the rare logs below name the call themselves.
        try:
            if env.kind == Kind.LLM_TOKENS:
                self._route_tokens(env, LlmTokens.from_body(env.body))
            elif env.kind == Kind.GATEWAY_SEND:
                self._route_send(env, GatewaySend.from_body(env.body))
            elif env.kind == Kind.GATEWAY_ADOPT:
                self._route_adopt(env, GatewayAdopt.from_body(env.body))
            else:
                log.debug("bus_entry_ignored", kind=env.kind, entry_id=entry.id, **_context(env))
        except MalformedEntry as exc:
            log.warning("bus_body_invalid", kind=env.kind, error=str(exc), **_context(env))

    def _live(self, env: Envelope, *, strict: bool) -> Session | None:
        session = self.ctx.sessions.get(env.call)
        if session is None:
            self._dropped(env, "no_session")
            return None
        if not session.fence.admits_session(env.session, strict=strict):
            self._dropped(env, "stale_session")
            return None
        return session

    def _dropped(self, env: Envelope, reason: str, **fields: int) -> None:
        self.ctx.metrics.count_dropped.inc(reason)
        log.debug("outbound_dropped", kind=env.kind, reason=reason, **_context(env), **fields)

    def _route_tokens(self, env: Envelope, tokens: LlmTokens) -> None:
        session = self._live(env, strict=True)
        if session is None:
            return
        reply_to, index = tokens.reply_to, tokens.index
        admission = session.fence.admit(reply_to, index, tokens.generation, held=tokens.held)
        if admission is Admission.OPENED:
            log.info(
                "reply_generation_opened",
                reply_to=reply_to,
                generation=tokens.generation,
                **_context(env),
            )
            return
        batch = HeldBatch(index, tokens.text, tokens.last, env.turn)
        if admission is Admission.HOLD:
            if not session.fence.keep(reply_to, batch):
                self._dropped(env, "held_overflow", reply_to=reply_to, index=index)
            return
        if admission is not Admission.SEND:
            fields = {"fence": session.fence.fence} if admission is Admission.FENCED else {}
            self._dropped(env, admission.value, reply_to=reply_to, index=index, **fields)
            return
        self._forward(session, env, reply_to, batch)

    def _forward(self, session: Session, env: Envelope, reply_to: int, batch: HeldBatch) -> None:
        """Send an admitted batch; its facts name the prompt the reply answers."""
        fence = session.fence
        names: tuple[str, ...] = ("first_token_sent",) if fence.is_first(reply_to) else ()
        if batch.last:
            names += ("last_token_sent",)
        sent = SentFacts(names, fence.answers(reply_to), batch.turn)
        held = session.held_escape
        token, hold = clean_part(held.pop(reply_to, ""), batch.text)
        for stale in [r for r in held if not fence.still_current(r)]:
            del held[stale]
        if hold and not batch.last:
            held[reply_to] = hold
        text = Text(token=token, last=batch.last)
        if self.offer(session, env, text, sent):
            fence.forwarded(reply_to, batch.index, last=batch.last)

    def _route_adopt(self, env: Envelope, adopt: GatewayAdopt) -> None:
        """A held reply answers the final prompt ``adopt.seq``: send what is kept."""
        session = self._live(env, strict=True)
        if session is None:
            return
        kept = session.fence.adopt(adopt.reply_to, adopt.seq)
        if kept is None:
            self._dropped(env, "adopt_too_late", reply_to=adopt.reply_to, seq=adopt.seq)
            return
        # Admitted when kept (order, repeats, generations): sent as they are.
        for batch in kept:
            self._forward(session, env, adopt.reply_to, batch)
        self.ctx.fact(
            session,
            "held_released",
            reply_to=adopt.seq,
            speculation=adopt.reply_to,
            batches=len(kept),
        )

    def _route_send(self, env: Envelope, send: GatewaySend) -> None:
        try:
            msg = outbound_from_wire(send.frame)
        except RemoteProtocolError as exc:
            log.warning(
                "gateway_send_invalid", kind=exc.kind.value, detail=exc.detail, **_context(env)
            )
            return
        if isinstance(msg, Text):
            msg = replace(msg, token=clean(msg.token))
        session = self._live(env, strict=send.after_speech)
        if session is None:
            return
        if not send.after_speech:
            self.offer(session, env, msg)
            return
        if session.deferred is None:
            self._dropped(env, "session_closing")
            return
        try:
            session.deferred.send_nowait((env, msg))
        except trio.WouldBlock:
            self._dropped(env, "queue_full")
            log.warning("after_speech_queue_full", capacity=DEFERRED_FRAMES, **_context(env))

    def offer(
        self,
        session: Session,
        env: Envelope | None,
        msg: OutboundMessage,
        sent: SentFacts | None = None,
    ) -> bool:
        """Encode ``msg`` (a long text as several frames) and queue it for the
        socket; False when it was dropped. ``env`` is the bus entry the frame
        came from, None for the gateway's own."""
        if isinstance(msg, Text):
            parts = self._text_parts(msg, sent)
            if len(parts) > 1:
                where = _context(env) if env is not None else session.log_context()
                log.info("text_split", frames=len(parts), chars=len(msg.token), **where)
            return all(self._offer_one(session, env, part, facts) for part, facts in parts)
        return self._offer_one(session, env, msg, sent)

    def _text_parts(self, msg: Text, sent: SentFacts | None) -> list[tuple[Text, SentFacts | None]]:
        """``msg`` as frames under ``max_text_frame_bytes`` (gateway.spoken), each
        with its facts: ``first_token_sent`` on the first, ``last_token_sent`` on
        the last, and every one fenced at write time like the whole."""
        overhead = len(serialize(replace(msg, token="", last=True)))
        budget = max(6, self.ctx.config.max_text_frame_bytes - overhead)
        tokens = split_text(msg.token, budget)
        if len(tokens) == 1:
            return [(msg, sent)]
        parts: list[tuple[Text, SentFacts | None]] = []
        for i, token in enumerate(tokens):
            final = i == len(tokens) - 1
            facts = None if sent is None else sent.part(first=i == 0, final=final)
            parts.append((replace(msg, token=token, last=msg.last and final), facts))
        return parts

    def _offer_one(
        self, session: Session, env: Envelope | None, msg: OutboundMessage, sent: SentFacts | None
    ) -> bool:
        where: Mapping[str, object] = _context(env) if env is not None else session.log_context()
        try:
            frame = session.relay.send(msg)
        except ProtocolError as exc:
            if exc.kind is FrameErrorKind.AFTER_END:
                # ``end`` is already on its way: Twilio closes the session after
                # it, so nothing later would be spoken anyway.
                self._not_sent(where, msg, "session_ending")
                return False
            log.warning("outbound_invalid", kind=exc.kind.value, detail=exc.detail, **where)
            return False
        kind = wire_type(msg)
        try:
            session.outbox.send_nowait((frame, kind, sent))
        except trio.WouldBlock:
            self._not_sent(where, msg, "queue_full")
            log.warning("outbox_full", capacity=OUTBOX_FRAMES, **where)
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._not_sent(where, msg, "session_closing")
            return False
        if isinstance(msg, Text):
            session.speech.text(msg.token, msg.last, trio.current_time())
            session.touch_speech()
            session.reply.spoke()
        return True

    def _not_sent(self, where: Mapping[str, object], msg: OutboundMessage, reason: str) -> None:
        self.ctx.metrics.count_dropped.inc(reason)
        log.debug("outbound_dropped", frame=wire_type(msg), reason=reason, **where)

    async def send_frames(
        self, session: Session, inbox: trio.MemoryReceiveChannel[Outgoing]
    ) -> None:
        """Drain the session's outbox to the socket, in order (the session's sender)."""
        async with inbox:
            async for frame, kind, sent in inbox:
                if (
                    kind == "text"
                    and sent is not None
                    and not session.fence.still_current(sent.reply_to)
                ):
                    # Queued before the interrupt (or a newer prompt) arrived.
                    self.ctx.metrics.count_dropped.inc("fenced")
                    continue
                try:
                    await session.ws.send_message(frame)
                except trio_websocket.ConnectionClosed:
                    return
                self.ctx.metrics.count_out.inc(kind)
                if sent is not None:
                    self._sent(session, sent)
                if kind == "end":
                    await self._await_close_after_end(session)
                    return

    def _sent(self, session: Session, sent: SentFacts) -> None:
        for name in sent.names:
            fields: dict[str, object] = {}
            if name == "first_token_sent":
                fields = self._response_latency(session, sent.reply_to)
            self.ctx.facts.emit(
                name,
                call=session.call_sid,
                session=session.session_id,
                gateway=self.ctx.config.gateway_id,
                turn=sent.turn,
                reply_to=sent.reply_to,
                **fields,
            )

    def _response_latency(self, session: Session, reply_to: int) -> dict[str, object]:
        """What the caller waited for the reply to the final prompt ``reply_to``
        (received -> first token written to the socket, this process's clock),
        observed on /metrics; the fact's ``latency_ms`` (none for a reply to no
        final prompt, such as a keypad entry's)."""
        at = session.prompt_at.pop(reply_to, None)
        if at is None:
            return {}
        seconds = max(0.0, trio.current_time() - at)
        self.ctx.metrics.response_latency.observe(seconds)
        return {"latency_ms": round(seconds * 1000, 3)}

    async def _await_close_after_end(self, session: Session) -> None:
        # Twilio closes the socket after ``end``; close it ourselves only if it does not.
        with trio.move_on_after(END_CLOSE_TIMEOUT):
            await session.peer_closed.wait()
        if not session.peer_closed.is_set():
            log.info("end_not_followed_by_close", timeout_s=END_CLOSE_TIMEOUT)
            await session.ws.aclose(1000, "session ended")

    async def release_after_speech(
        self, session: Session, waiting: trio.MemoryReceiveChannel[Deferred]
    ) -> None:
        """Release after_speech frames, in order, once the reply has been spoken."""
        async with waiting:
            async for env, msg in waiting:
                queued = trio.current_time()
                while True:
                    changed = session.speech_changed
                    release = session.speech.release_at()
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
                self.offer(session, env, msg)
