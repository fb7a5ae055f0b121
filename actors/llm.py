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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

from actors.config import LLMConfig
from actors.providers.base import CompletionRequest, Provider, Usage
from actors.runtime import Actor
from bus.base import Entry, Fields
from bus.envelope import Envelope, Kind
from bus.facts import fact_item, wall_ms
from bus.keys import GROUP_LLM

log = structlog.get_logger()

APOLOGY = "Sorry, I'm having trouble right now. Please try again in a moment."


@dataclass(slots=True)
class _Outcome:
    """What the producer learned, read by the sender once the stream ended."""

    started: float
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

    def streams(self) -> Sequence[str]:
        return [self.keys.llm]

    async def handle(self, env: Envelope, entry: Entry) -> None:
        if env.kind != Kind.LLM_REQUEST:
            log.warning("unexpected_kind", kind=env.kind, entry_id=entry.id)
            return
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
        )
        reply_to = int(body.get("reply_to", env.seq))
        outcome = _Outcome(started=trio.current_time())
        send, receive = trio.open_memory_channel[str](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._produce, request, send, outcome)
            index, leftover = await self._send_tokens(env, reply_to, receive)
        await self._finish(env, reply_to, index, leftover, outcome)

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
        self, env: Envelope, reply_to: int, receive: trio.MemoryReceiveChannel[str]
    ) -> tuple[int, str]:
        """Forward deltas as coalesced entries until the stream ends.

        Returns the next index and the text received but not yet sent (it
        goes out in the final entry).
        """
        index = 0
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
        self, env: Envelope, reply_to: int, index: int, leftover: str, outcome: _Outcome
    ) -> None:
        spoken = "".join(outcome.text)
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
        if env.gateway:
            items.append(
                (
                    self.keys.gateway(env.gateway),
                    self._tokens(env, reply_to, final, index, last=True),
                )
            )
        else:
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
