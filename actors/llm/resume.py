"""Resume: take a request over from an earlier attempt, continuing what the caller heard.

A request delivered before (``deliveries > 1``, or a retry in this process)
may still be streaming elsewhere: a worker stalled past the claim timeout
(a pause, a Redis stall) wakes and goes on. So a resuming attempt takes a
*generation* higher than any before it and announces it first, with an
opening ``llm.tokens`` entry (``index`` -1, no text) on the owning
gateway's stream. The gateway reads its stream in order: from that entry
on it forwards nothing of an older generation of the reply
(``gateway.fence``). Then the attempt reads the stream back up to its
opening entry, from the request's own timestamp on, and folds the reply's
entries with the gateway's rule (:func:`forwarded`): exactly the text the
caller was sent. It continues from there (``CompletionRequest.prefill``,
indexes after the last one forwarded), so the caller hears neither a span
twice nor two texts spliced together. Nothing is written or read on the
hot path for this: the first delivery never resumes.

A generation is the attempt's start on its worker's wall clock (ms), and
above every generation found on the stream: it grows with every attempt
without any state in Redis, so a Redis that lost data cannot hand out an
old number again. Attempts of one request are at least the claim timeout
apart, far more than clocks of one deployment disagree; if they do
disagree, the read-back finds the newer generation and the attempt opens
again above it.

If the closing entry was forwarded, only a missing ``llm.result`` is written.

The older attempt, when it ends, must not write its ``llm.result`` too: the
conversation applies the first result for a turn, and the older one's text
is not what the caller heard. The newest generation of a reply is kept in a
key; an attempt that ran past the claim timeout (only such an attempt can
have been taken over) reads it before its result and, if a newer
generation opened, writes nothing more (``result_stale_generation``). A
Redis that lost the key lets the older result through, and the
conversation then keeps whichever result came first, once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from actors.llm.cancel import CLOCK_SKEW_MS
from actors.llm.stream import ReplyOut
from bus.base import Bus, MalformedEntry
from bus.envelope import Envelope, Kind
from bus.facts import wall_ms
from bus.keys import Keys
from bus.messages import LlmResult, LlmTokens, decode

log = structlog.get_logger()

_RANGE_PAGE = 500
_KINDS = (Kind.LLM_TOKENS, Kind.LLM_RESULT)
# Openings tried when other attempts keep opening above this one (clock skew).
_OPEN_TRIES = 3
# How long a reply's newest generation is kept: far beyond any attempt.
_KEPT_MS = 15 * 60 * 1000


async def superseded(bus: Bus, keys: Keys, env: Envelope, reply_to: int, generation: int) -> bool:
    """Whether a newer attempt at the reply to ``env`` opened above ``generation``.

    Asked only by an attempt that ran longer than the claim timeout (only
    then can another have taken the request over): its result would be a
    second one, with text the caller did not hear.
    """
    newest = await bus.get(keys.generation(env.call, env.session, reply_to))
    try:
        return newest is not None and int(newest) > generation
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class SentSoFar:
    """What the caller was already sent for one reply (see ``already_sent``)."""

    text: str = ""
    next_index: int = 0
    finished: bool = False
    result_written: bool = False
    generation: int = 0  # this attempt's: stamped on every entry it writes
    newest_seen: int = 0  # the newest generation found before this one's opening


def forwarded(batches: Iterable[LlmTokens]) -> SentSoFar:
    """What a gateway forwarded of one reply, given its batches in stream order.

    The same rule as ``gateway.fence.ReplyFence`` for one reply: a batch of a
    generation older than the newest seen is dropped, an opening entry only
    moves the newest generation, nothing passes after ``last``, and an index
    at or below the last forwarded one is a repeat.
    """
    newest, last_index, finished = 0, -1, False
    parts: list[str] = []
    for batch in batches:
        if batch.generation < newest:
            continue
        newest = batch.generation
        if batch.opening or finished or batch.index <= last_index:
            continue
        parts.append(batch.text)
        last_index, finished = batch.index, batch.last
    return SentSoFar("".join(parts), last_index + 1, finished, newest_seen=newest)


async def already_sent(
    bus: Bus, keys: Keys, env: Envelope, reply_to: int, *, since_ms: float | None = None
) -> SentSoFar:
    """Open a new generation of the reply to ``env`` and say what the caller was sent.

    Reads the owning gateway's stream from the request's timestamp on, or
    from ``since_ms`` if earlier (when the gateway received the words the
    reply answers: a request published again by a partition's new owner is
    younger than the reply's first entries), minus ``CLOCK_SKEW_MS`` (stream
    ids are the bus's clock, ``ts`` the writer's), up to this attempt's
    opening entry; and, if the closing entry is among what was forwarded,
    the call's partition stream for the ``llm.result``.
    """
    if not env.gateway:
        return SentSoFar()
    since = min(env.ts, since_ms) if since_ms else env.ts
    start = f"{max(int(since) - CLOCK_SKEW_MS, 0)}-0"
    stream = keys.gateway(env.gateway)
    generation = int(wall_ms())
    for attempt in range(_OPEN_TRIES):
        out = ReplyOut(bus, keys, env, reply_to, generation)
        opening = out.tokens("", LlmTokens.OPENING, last=False)
        opened_at = await bus.append(stream, opening)
        found = await _scan(bus, stream, start, env, reply_to, end=opened_at)
        sent = forwarded(m for m in found if isinstance(m, LlmTokens))
        if sent.newest_seen <= generation or attempt == _OPEN_TRIES - 1:
            break
        # Another attempt opened above ours (clocks apart): open above it.
        log.warning(
            "generation_opened_below_newer",
            reply_to=reply_to,
            generation=generation,
            newer=sent.newest_seen,
        )
        generation = sent.newest_seen + 1
    # For an older attempt still running: its result must not be written.
    await bus.set(
        keys.generation(env.call, env.session, reply_to), str(generation), ttl_ms=_KEPT_MS
    )
    result_written = False
    if sent.finished:
        partition = await _scan(bus, keys.calls_for(env.call), start, env, reply_to)
        result_written = any(isinstance(m, LlmResult) for m in partition)
    return SentSoFar(
        sent.text,
        sent.next_index,
        sent.finished,
        result_written,
        generation=generation,
        newest_seen=sent.newest_seen,
    )


async def _scan(
    bus: Bus, stream: str, start: str, env: Envelope, reply_to: int, *, end: str = "+"
) -> list[LlmTokens | LlmResult]:
    """Tokens and results on ``stream`` from ``start`` to ``end`` of ``env``'s call,
    session and reply, in stream order."""
    out: list[LlmTokens | LlmResult] = []
    while True:
        page = await bus.range(stream, start, end, count=_RANGE_PAGE)
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
