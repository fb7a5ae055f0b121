"""Resume: what earlier deliveries of a request already sent to the caller.

A request delivered before (``deliveries > 1``, or a retry in this process)
first reads what was sent for it: the ``llm.tokens`` entries of this call,
session and ``reply_to`` on the owning gateway's stream, from the request's
own timestamp on. Nothing is written on the hot path for this. If the
closing entry went out, only a missing ``llm.result`` is written. Otherwise
indexes continue after the last one sent and the provider is asked to
continue from the spoken text (``CompletionRequest.prefill``), so the caller
hears no span twice. The gateway's ``(reply_to, index)`` de-duplication
stays as a second line.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.llm.cancel import CLOCK_SKEW_MS
from bus.base import Bus, MalformedEntry
from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.messages import LlmResult, LlmTokens, decode

_RANGE_PAGE = 500
_KINDS = (Kind.LLM_TOKENS, Kind.LLM_RESULT)


@dataclass(frozen=True, slots=True)
class SentSoFar:
    """What the caller was already sent for one reply (see ``already_sent``)."""

    text: str = ""
    next_index: int = 0
    finished: bool = False
    result_written: bool = False


async def already_sent(bus: Bus, keys: Keys, env: Envelope, reply_to: int) -> SentSoFar:
    """What earlier deliveries of the request ``env`` sent to the caller.

    Reads the owning gateway's stream from the request's timestamp on (minus
    ``CLOCK_SKEW_MS``: stream ids are the bus's clock, ``ts`` the writer's)
    for ``llm.tokens`` of this call, session and ``reply_to``; and, if the
    closing entry is among them, the call's partition stream for the
    ``llm.result``.
    """
    if not env.gateway:
        return SentSoFar()
    start = f"{max(env.ts - CLOCK_SKEW_MS, 0)}-0"
    texts: dict[int, str] = {}
    finished = False
    for tokens in await _scan(bus, keys.gateway(env.gateway), start, env, reply_to):
        if isinstance(tokens, LlmTokens):
            texts[tokens.index] = tokens.text
            finished = finished or tokens.last
    text = "".join(texts[i] for i in sorted(texts))
    next_index = max(texts) + 1 if texts else 0
    result_written = False
    if finished:
        partition = await _scan(bus, keys.calls_for(env.call), start, env, reply_to)
        result_written = any(isinstance(m, LlmResult) for m in partition)
    return SentSoFar(text, next_index, finished, result_written)


async def _scan(
    bus: Bus, stream: str, start: str, env: Envelope, reply_to: int
) -> list[LlmTokens | LlmResult]:
    """Tokens and results on ``stream`` from ``start`` of ``env``'s call, session and reply."""
    out: list[LlmTokens | LlmResult] = []
    while True:
        page = await bus.range(stream, start, "+", count=_RANGE_PAGE)
        for item in page:
            if item.fields.get("c") != env.call or item.fields.get("k") not in _KINDS:
                continue  # other calls and kinds on the same stream: skip undecoded
            try:
                found = Envelope.decode(item.fields)
                message = decode(found)
            except MalformedEntry:
                continue
            if (
                isinstance(message, LlmTokens | LlmResult)
                and found.session == env.session
                and message.reply_to == reply_to
            ):
                out.append(message)
        if len(page) < _RANGE_PAGE:
            return out
        start = f"({page[-1].id}"
