"""The LLM actor: streams completions to the gateway, results to the call.

Stateless: each ``llm.request`` carries the whole context. For one request:

1. The provider's deltas go to the owning gateway's stream
   (``keys.gateway(env.gateway)``) as ``llm.tokens``. The first delta goes out
   alone at once (time to first audio is what the caller feels); after that,
   everything produced while the previous append was in flight goes out as one
   entry, so a slow bus means fewer, larger entries rather than a growing
   backlog. Indexes count 0, 1, 2, ... per request; the final entry has
   ``last=true`` (its text may be empty).
2. The ``llm.result`` goes to the call's partition stream, so the conversation
   sees it in order with the caller's events. The result and the final tokens
   entry are written together with ``append_many``, the result first, so a
   caller answering the closing token is always ordered after the reply.

On a provider error the caller hears a short apology (as the rest of the reply,
``last=true``) and the result carries the error text.

Failover (at-least-once without repeats):

- Reclaim: every worker looks for requests pending longer than
  ``claim_idle_ms`` on any worker (``Bus.claim_idle``, once per
  ``claim_interval_s``, in ``background``) and handles them as its own. A
  worker streaming a long reply ``touch``es its entry every third of
  ``claim_idle_ms``, so only a dead or stuck worker loses its request.
- Resume: a request delivered before (``deliveries > 1``, or a retry in this
  process) first reads what was already sent for it: the ``llm.tokens``
  entries of this call, session and ``reply_to`` on the owning gateway's
  stream, from the request's own timestamp on (``_already_sent``). Nothing is
  written on the hot path for this. If the closing entry went out, only a
  missing ``llm.result`` is written. Otherwise indexes continue after the
  last one sent and the provider is asked to continue from the spoken text
  (``CompletionRequest.prefill``), so the caller hears no span twice. The
  gateway's ``(reply_to, index)`` de-duplication stays as a second line.
- Dead letter: a request delivered more than ``max_deliveries`` times goes to
  the dead-letter stream and the caller's reply is closed with the apology.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

from actors.config import LLMConfig
from actors.providers.base import CompletionRequest, Provider, Usage
from actors.runtime import Actor, dead_letter_stream
from bus.base import Bus, BusError, Entry, Fields, MalformedEntry
from bus.envelope import Envelope, Kind, now_ms
from bus.facts import fact_item, wall_ms
from bus.keys import GROUP_LLM
from bus.retry import Backoff, missing_group

log = structlog.get_logger()

APOLOGY = "Sorry, I'm having trouble right now. Please try again in a moment."

# Stream ids come from the Redis server's clock, the request's ``ts`` from the
# conversation host's: look back this far before ``ts`` for sent tokens.
CLOCK_SKEW_MS = 2000
_RANGE_PAGE = 500


@dataclass(frozen=True, slots=True)
class SentSoFar:
    """What the caller was already sent for one reply (see ``_already_sent``)."""

    text: str = ""
    next_index: int = 0
    finished: bool = False
    result_written: bool = False


@dataclass(slots=True)
class _Outcome:
    """What the producer learned, read by the sender once the stream ended."""

    started: float
    # Text the caller heard from an earlier delivery of this request.
    prefix: str = ""
    first_token_at: float | None = None
    # Wall-clock stamps for the turn's facts (bus.facts: one time base).
    taken_ms: float = field(default_factory=wall_ms)
    first_token_ms: float | None = None
    text: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    error: str | None = None


class LLMActor(Actor):
    """Turns ``llm.request`` entries into streamed tokens and a result."""

    name = "llm"
    group = GROUP_LLM

    def __init__(self, config: LLMConfig, provider: Provider) -> None:
        self.config = config
        self.keys = config.keys
        self.provider = provider
        self.concurrency = max(1, config.concurrency)
        # Entries this process started handling: a retry of one of them
        # resumes like a redelivery. Entries being handled right now are
        # never taken over again by this process's own reclaimer.
        self._attempted: set[str] = set()
        self._inflight: set[str] = set()

    def streams(self) -> Sequence[str]:
        return [self.keys.llm]

    async def handle(self, env: Envelope, entry: Entry) -> None:
        if env.kind != Kind.LLM_REQUEST:
            log.warning("unexpected_kind", kind=env.kind, entry_id=entry.id)
            return
        reply_to = int(env.body.get("reply_to", env.seq))
        if entry.deliveries > self.config.max_deliveries:
            await self._give_up(env, entry, reply_to)
            return
        resumed = entry.deliveries > 1 or entry.id in self._attempted
        # Which worker took which request: what an operator (or a failover
        # test) looks for when a worker dies mid-reply.
        log.info(
            "completion_started",
            entry_id=entry.id,
            deliveries=entry.deliveries,
            reply_to=reply_to,
            worker=self.consumer,
        )
        self._attempted.add(entry.id)
        self._inflight.add(entry.id)
        try:
            async with self._kept_claimed(entry):
                sent = await self._already_sent(env, reply_to) if resumed else SentSoFar()
                if sent.finished:
                    await self._close_finished(env, reply_to, sent)
                else:
                    if resumed:
                        log.info(
                            "completion_resumed",
                            entry_id=entry.id,
                            deliveries=entry.deliveries,
                            reply_to=reply_to,
                            next_index=sent.next_index,
                            chars_sent=len(sent.text),
                        )
                    await self._complete(env, reply_to, sent)
        finally:
            self._inflight.discard(entry.id)
        self._attempted.discard(entry.id)

    async def _complete(self, env: Envelope, reply_to: int, sent: SentSoFar) -> None:
        body = env.body
        request = CompletionRequest(
            system=str(body.get("system", "")),
            messages=[
                {"role": str(m.get("role", "")), "content": str(m.get("content", ""))}
                for m in body.get("messages", [])
                if isinstance(m, dict)
            ],
            model=self.config.model,
            max_tokens=self.config.max_tokens,
            prefill=sent.text,
        )
        outcome = _Outcome(started=trio.current_time(), prefix=sent.text)
        send, receive = trio.open_memory_channel[str](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._produce, request, send, outcome)
            index, leftover = await self._send_tokens(
                env, reply_to, receive, start_index=sent.next_index
            )
        await self._finish(env, reply_to, index, leftover, outcome)

    # ------------------------------------------------------------- failover

    @asynccontextmanager
    async def _kept_claimed(self, entry: Entry) -> AsyncIterator[None]:
        """While the block runs, ``touch`` the entry so no one reclaims it."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._touch_loop, entry)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()

    async def _touch_loop(self, entry: Entry) -> None:
        interval = self.config.claim_idle_ms / 3000
        while True:
            await trio.sleep(interval)
            try:
                await self.bus.touch(entry.stream, self.group, self.consumer, [entry.id])
            except BusError as exc:
                # Next round tries again; if Redis stays away the entry may be
                # reclaimed, and the resume logic keeps the caller whole.
                log.warning("touch_failed", entry_id=entry.id, error=f"{type(exc).__name__}: {exc}")

    async def _already_sent(self, env: Envelope, reply_to: int) -> SentSoFar:
        """What earlier deliveries of this request sent to the caller.

        Reads the owning gateway's stream from the request's timestamp on
        (minus ``CLOCK_SKEW_MS``) for ``llm.tokens`` of this call, session and
        ``reply_to``; and, if the closing entry is among them, the call's
        partition stream for the ``llm.result``.
        """
        if not env.gateway:
            return SentSoFar()
        start = f"{max(env.ts - CLOCK_SKEW_MS, 0)}-0"
        texts: dict[int, str] = {}
        finished = False
        for found in await self._scan(self.keys.gateway(env.gateway), start, env, reply_to):
            if found.kind != Kind.LLM_TOKENS:
                continue
            index = found.body.get("index")
            if isinstance(index, int):
                texts[index] = str(found.body.get("text", ""))
                finished = finished or found.body.get("last") is True
        text = "".join(texts[i] for i in sorted(texts))
        next_index = max(texts) + 1 if texts else 0
        result_written = False
        if finished:
            partition = await self._scan(self.keys.calls_for(env.call), start, env, reply_to)
            result_written = any(e.kind == Kind.LLM_RESULT for e in partition)
        return SentSoFar(text, next_index, finished, result_written)

    async def _scan(
        self, stream: str, start: str, env: Envelope, reply_to: int
    ) -> list[Envelope]:
        """Envelopes on ``stream`` from ``start`` of this call, session and reply."""
        out: list[Envelope] = []
        while True:
            page = await self.bus.range(stream, start, "+", count=_RANGE_PAGE)
            for item in page:
                if item.fields.get("c") != env.call:
                    continue  # other calls on the same stream: skip undecoded
                try:
                    found = Envelope.decode(item.fields)
                except MalformedEntry:
                    continue
                if found.session == env.session and found.body.get("reply_to") == reply_to:
                    out.append(found)
            if len(page) < _RANGE_PAGE:
                return out
            start = f"({page[-1].id}"

    async def _close_finished(self, env: Envelope, reply_to: int, sent: SentSoFar) -> None:
        """The caller heard the whole reply already: write only a missing result."""
        log.info(
            "completion_already_sent",
            reply_to=reply_to,
            chars=len(sent.text),
            result_written=sent.result_written,
        )
        if sent.result_written:
            return
        outcome = _Outcome(started=trio.current_time(), prefix=sent.text)
        await self._finish(env, reply_to, sent.next_index, "", outcome, close_reply=False)

    async def _give_up(self, env: Envelope, entry: Entry, reply_to: int) -> None:
        """Dead-letter a request delivered too often; close the caller's reply."""
        error = (
            f"delivered {entry.deliveries} times (max {self.config.max_deliveries}); "
            "the workers that took it died or stalled"
        )
        fields = dict(entry.fields)
        fields.update(
            {
                "dead.stream": entry.stream,
                "dead.id": entry.id,
                "dead.group": self.group,
                "dead.actor": self.name,
                "dead.consumer": self.consumer,
                "dead.error": error,
                "dead.attempts": "0",
                "dead.deliveries": str(entry.deliveries),
                "dead.ts": str(now_ms()),
            }
        )
        dead_id = await self.bus.append(dead_letter_stream(self.keys), fields)
        log.error(
            "request_dead_lettered",
            entry_id=entry.id,
            deliveries=entry.deliveries,
            dead_id=dead_id,
            reply_to=reply_to,
        )
        sent = await self._already_sent(env, reply_to)
        if sent.finished:
            await self._close_finished(env, reply_to, sent)
            return
        outcome = _Outcome(started=trio.current_time(), prefix=sent.text, error=error)
        await self._finish(env, reply_to, sent.next_index, "", outcome)

    async def background(self, bus: Bus) -> None:
        """The reclaimer: take over requests a dead worker left pending."""
        backoff = Backoff("llm_reclaim", actor=self.name)
        limiter = trio.CapacityLimiter(self.concurrency)
        async with trio.open_nursery() as nursery:
            while True:
                await trio.sleep(self.config.claim_interval_s)
                room = min(100, int(limiter.available_tokens))
                if room <= 0:
                    continue
                try:
                    claimed = await bus.claim_idle(
                        self.keys.llm,
                        self.group,
                        self.consumer,
                        min_idle_ms=self.config.claim_idle_ms,
                        count=room,
                    )
                except BusError as exc:
                    if missing_group(exc):
                        continue  # Redis lost it; the read loop re-creates it
                    await backoff.failed(exc)
                    continue
                backoff.succeeded()
                for entry in claimed:
                    if entry.id in self._inflight:
                        continue  # ours, still running: our touches had failed
                    token = object()
                    limiter.acquire_on_behalf_of_nowait(token)
                    nursery.start_soon(self._handle_claimed, limiter, token, entry)

    async def _handle_claimed(
        self, limiter: trio.CapacityLimiter, token: object, entry: Entry
    ) -> None:
        """Handle one reclaimed entry and ack it; on failure it stays pending."""
        try:
            try:
                env = Envelope.decode(entry.fields)
            except MalformedEntry:
                # The read loop dead-letters these on first delivery; one that
                # gets here was left by a worker that died doing just that.
                log.warning("reclaimed_entry_malformed", entry_id=entry.id)
                await self.bus.ack(entry.stream, self.group, [entry.id])
                return
            with structlog.contextvars.bound_contextvars(
                call_sid=env.call, actor=self.name, turn=env.turn
            ):
                log.info(
                    "request_reclaimed",
                    entry_id=entry.id,
                    deliveries=entry.deliveries,
                    reply_to=env.body.get("reply_to"),
                )
                try:
                    await self.handle(env, entry)
                    await self.bus.ack(entry.stream, self.group, [entry.id])
                except Exception:  # trio.Cancelled is a BaseException: never caught
                    # Left pending: it is reclaimed again after claim_idle_ms,
                    # with one more delivery, until max_deliveries dead-letters it.
                    log.exception("reclaimed_request_failed", entry_id=entry.id)
        finally:
            limiter.release_on_behalf_of(token)

    async def _produce(
        self,
        request: CompletionRequest,
        send: trio.MemorySendChannel[str],
        outcome: _Outcome,
    ) -> None:
        async with send:
            try:
                async with self.provider.complete(request) as completion:
                    async for delta in completion.deltas():
                        if not delta:
                            continue
                        if outcome.first_token_at is None:
                            outcome.first_token_at = trio.current_time()
                            outcome.first_token_ms = wall_ms()
                        outcome.text.append(delta)
                        send.send_nowait(delta)  # unbounded: never blocks
                    outcome.stop_reason = completion.stop_reason
                    outcome.usage = completion.usage
            except Exception as exc:  # trio.Cancelled is a BaseException: never caught
                outcome.error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "provider_failed",
                    error=outcome.error,
                    retriable=bool(getattr(exc, "retriable", False)),
                    chars_before_error=sum(len(t) for t in outcome.text),
                )

    async def _send_tokens(
        self,
        env: Envelope,
        reply_to: int,
        receive: trio.MemoryReceiveChannel[str],
        *,
        start_index: int = 0,
    ) -> tuple[int, str]:
        """Forward deltas as coalesced entries until the stream ends.

        Returns the next index and the text received but not yet sent (it
        goes out in the final entry). A resumed reply starts at
        ``start_index``, after the entries an earlier delivery sent.
        """
        index = start_index
        async with receive:
            while True:
                try:
                    parts = [await receive.receive()]
                except trio.EndOfChannel:
                    return index, ""
                ended = False
                # The first delta goes out alone: time to first audio matters
                # more than entry count. Later ones take whatever piled up.
                while index > 0:
                    try:
                        parts.append(receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                    except trio.EndOfChannel:
                        ended = True
                        break
                if ended:
                    return index, "".join(parts)
                if env.gateway:
                    await self.bus.append(
                        self.keys.gateway(env.gateway),
                        self._tokens(env, reply_to, "".join(parts), index, last=False),
                    )
                index += 1

    async def _finish(
        self,
        env: Envelope,
        reply_to: int,
        index: int,
        leftover: str,
        outcome: _Outcome,
        *,
        close_reply: bool = True,
    ) -> None:
        spoken = outcome.prefix + "".join(outcome.text)
        final = leftover
        if outcome.error is not None:
            # Whatever was already said stays said; the apology completes it.
            apology = f" {APOLOGY}" if spoken else APOLOGY
            final += apology
            spoken += apology
        now = trio.current_time()
        first_ms = (
            None
            if outcome.first_token_at is None
            else round((outcome.first_token_at - outcome.started) * 1000, 3)
        )
        total_ms = round((now - outcome.started) * 1000, 3)
        result = Envelope(
            kind=Kind.LLM_RESULT,
            call=env.call,
            session=env.session,
            gateway=env.gateway,
            seq=env.seq,
            turn=env.turn,
            body={
                "text": spoken,
                "reply_to": reply_to,
                "stop_reason": outcome.stop_reason,
                "usage": {
                    "input_tokens": outcome.usage.input_tokens,
                    "output_tokens": outcome.usage.output_tokens,
                },
                "timings": {"first_token_ms": first_ms, "total_ms": total_ms},
                "error": outcome.error,
            },
        )
        # The result goes first: once the caller has the closing token it may
        # answer at once, and its next prompt must land on the partition stream
        # after this reply, or the conversation would see them out of order.
        items: list[tuple[str, Fields]] = [(self.keys.calls_for(env.call), result.encode())]
        if env.gateway and close_reply:
            items.append(
                (
                    self.keys.gateway(env.gateway),
                    self._tokens(env, reply_to, final, index, last=True),
                )
            )
        elif not env.gateway:
            log.warning("request_without_gateway", reply_to=reply_to)
        items += self._facts(env, reply_to, outcome)
        await self.bus.append_many(items)
        log.info(
            "completion_done",
            reply_to=reply_to,
            token_entries=index + 1,
            chars=len(spoken),
            first_token_ms=first_ms,
            total_ms=total_ms,
            stop_reason=outcome.stop_reason,
            input_tokens=outcome.usage.input_tokens,
            output_tokens=outcome.usage.output_tokens,
            error=outcome.error,
        )

    def _facts(
        self, env: Envelope, reply_to: int, outcome: _Outcome
    ) -> list[tuple[str, Fields]]:
        """The request's facts, written with its result: no extra round trip."""
        ctx: dict[str, Any] = {"call": env.call, "session": env.session, "turn": env.turn}
        ctx.update(gateway=env.gateway, seq=env.seq, reply_to=reply_to)
        facts = [fact_item(self.keys, "request_taken", t_ms=outcome.taken_ms, **ctx)]
        if outcome.first_token_ms is not None:
            facts.append(
                fact_item(self.keys, "provider_first_token", t_ms=outcome.first_token_ms, **ctx)
            )
        if outcome.error is not None:
            facts.append(fact_item(self.keys, "provider_error", error=outcome.error, **ctx))
        usage = {"input_tokens": outcome.usage.input_tokens}
        usage["output_tokens"] = outcome.usage.output_tokens
        facts.append(
            fact_item(
                self.keys,
                "completion_done",
                usage=usage,
                stop_reason=outcome.stop_reason,
                error=outcome.error,
                **ctx,
            )
        )
        return facts

    def _tokens(
        self, env: Envelope, reply_to: int, text: str, index: int, *, last: bool
    ) -> dict[str, str]:
        body: dict[str, Any] = {"text": text, "index": index, "last": last, "reply_to": reply_to}
        return Envelope(
            kind=Kind.LLM_TOKENS,
            call=env.call,
            session=env.session,
            gateway=env.gateway,
            seq=env.seq,
            turn=env.turn,
            body=body,
        ).encode()
