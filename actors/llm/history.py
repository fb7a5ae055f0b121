"""The history of a request: rebuilt from what this worker saw, or from the call's state.

An ``llm.request`` carries only the history messages new since its call's
previous request, and a ``HistoryRef`` to the rest (``count`` messages from
``start``, numbered from the call's first message, with their digest;
``actors/conversation/delta.py`` builds it). Rebuilding, in order:

1. **From memory** (``HistoryCache``, no I/O): each worker keeps, per call,
   the history of the last request it rebuilt (an LRU of
   ``history_cache_calls`` calls). If it covers the reference and the
   covered messages have the reference's digest, they are the prefix.
2. **From the call's state** (a miss: another worker had the previous turn,
   this one restarted, the request was reclaimed, or the history changed in
   the covered range): one plain ``GET`` of ``keys.state(call)``. The state
   key lives in the call's partition slot and the request stream in its
   shard's, so nothing here spans two cluster slots. The conversation
   persists the state before it publishes the request, so the state is as
   new as the request or newer (``requests >= ref.n``), and the referenced
   messages are checked against the digest there too.
3. A state **older** than the request (its write was lost, say by a Redis
   failover, or it is not there yet) is read again with a growing pause
   (10 ms doubling, at most 250 ms; Redis tells nobody when a key changes)
   for up to ``history_wait_s``. If it never catches up the request is
   ``HistoryStale``: the conversation will apply its entry again and
   publish a new request, which answers; this one gets no reply at all, so
   nothing is heard twice.
4. A state as new as the request that does not hold the referenced messages
   (their digest differs, or the caps have dropped them since) is a
   ``HistoryMismatch``: a wrong history is never sent to the model; the
   caller hears the apology, as for a provider error.

A request without a reference (written before references existed, or made
by hand) carries the whole conversation and is used as it is. The rebuilt
history is shaped for the model by ``actors.history.request_messages``
(consecutive messages of one role merged), exactly as the conversation did
when requests carried everything.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import structlog
import trio
from prometheus_client import CollectorRegistry, Gauge

from actors.conversation.state import CallState
from actors.history import Message, request_messages
from bus.base import Bus
from bus.keys import Keys
from bus.messages import HistoryRef, LlmRequest, history_digest

log = structlog.get_logger()

_FIRST_PAUSE_S = 0.01
_MAX_PAUSE_S = 0.25


class HistoryError(Exception):
    """A request's history could not be rebuilt."""


class HistoryStale(HistoryError):
    """The call's state never caught up with the request: it gets no reply."""


class HistoryMismatch(HistoryError):
    """Neither this worker's copy nor the call's state holds the referenced messages."""


@dataclass(slots=True)
class _Seen:
    start: int  # the number of messages[0] in the call
    messages: list[Message]


def covered(start: int, messages: Sequence[Message], ref: HistoryRef) -> list[Message] | None:
    """The ``ref`` part of ``messages`` (numbered from ``start``), or None when they
    do not hold it or its digest differs."""
    if ref.count == 0:  # the call's first request: it refers to nothing
        return [] if history_digest([]) == ref.digest else None
    at = ref.start - start
    if at < 0 or at + ref.count > len(messages):
        return None
    part = list(messages[at : at + ref.count])
    return part if history_digest(part) == ref.digest else None


class HistoryCache:
    """The history of the last request rebuilt, per call (LRU of ``max_calls``)."""

    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls
        self._calls: OrderedDict[str, _Seen] = OrderedDict()

    def __len__(self) -> int:
        return len(self._calls)

    def rebuild(self, call: str, request: LlmRequest) -> list[Message] | None:
        """``request``'s whole history (as stored) from memory, or None."""
        ref = request.history
        if ref is None:
            return list(request.messages)
        seen = self._calls.get(call) or _Seen(ref.start, [])
        part = covered(seen.start, seen.messages, ref)
        if part is None:
            return None
        return part + list(request.messages)

    def follow(self, call: str, request: LlmRequest) -> list[Message] | None:
        """``rebuild``, and keep the result as the call's copy when it is one."""
        whole = self.rebuild(call, request)
        if whole is not None and request.history is not None:
            self.remember(call, request.history.start, whole)
        return whole

    def remember(self, call: str, start: int, messages: list[Message]) -> None:
        if self.max_calls <= 0:
            return
        self._calls[call] = _Seen(start, messages)
        self._calls.move_to_end(call)
        while len(self._calls) > self.max_calls:
            self._calls.popitem(last=False)


def resolve_in_order(requests: Iterable[tuple[str, LlmRequest]]) -> list[list[Message] | None]:
    """The model's messages of each ``(call, request)``, rebuilt from the ones before it.

    For reading recorded streams (replay, tests): each call's requests in
    stream order rebuild one another as a worker that took them all would.
    None where a request's reference is not covered (its predecessor was
    trimmed, say).
    """
    cache = HistoryCache(max_calls=1 << 30)
    out: list[list[Message] | None] = []
    for call, request in requests:
        whole = cache.follow(call, request)
        out.append(None if whole is None else request_messages(whole))
    return out


class Histories:
    """Rebuilds requests' histories for one LLM worker (see the module docstring)."""

    def __init__(self, keys: Keys, *, cache_calls: int, wait_s: float) -> None:
        self.keys = keys
        self.wait_s = wait_s
        self.cache = HistoryCache(cache_calls)
        # Counted since start: rebuilt from memory, from the state, given up on.
        self.hits = 0
        self.misses = 0
        self.stale = 0
        self.mismatches = 0

    def skipped(self, call: str, request: LlmRequest) -> None:
        """``request`` is not generated (cancelled before it started): keep the
        worker's copy in step if memory allows, so the call's next request,
        which refers to this one, needs no read either."""
        self.cache.follow(call, request)

    async def messages(self, bus: Bus, call: str, request: LlmRequest) -> list[Message]:
        """The messages to send the model for ``request``; ``HistoryError`` if there are none."""
        ref = request.history
        whole = self.cache.rebuild(call, request)
        if ref is None:
            return request_messages(whole or [])
        if whole is not None:
            self.hits += 1
        else:
            self.misses += 1
            try:
                whole = await self._from_state(bus, call, ref, request.messages)
            except HistoryStale:
                self.stale += 1
                raise
            except HistoryMismatch:
                self.mismatches += 1
                raise
        self.cache.remember(call, ref.start, whole)
        return request_messages(whole)

    async def _from_state(
        self, bus: Bus, call: str, ref: HistoryRef, new: Sequence[Message]
    ) -> list[Message]:
        deadline = trio.current_time() + self.wait_s
        pause = _FIRST_PAUSE_S
        reads = 0
        while True:
            raw = await bus.get(self.keys.state(call))
            reads += 1
            state = CallState.from_json(raw) if raw is not None else None
            if state is not None and state.requests >= ref.n:
                part = covered(state.history_base, state.history, ref)
                if part is None:
                    raise HistoryMismatch(
                        f"request {ref.n} refers to messages {ref.start}..{ref.start + ref.count} "
                        f"(digest {ref.digest}); the call's state (request {state.requests}, "
                        f"messages {state.history_base}..{state.history_base + len(state.history)})"
                        " does not hold them"
                    )
                log.info("request_history_from_state", request_no=ref.n, reads=reads)
                return part + list(new)
            if trio.current_time() + pause > deadline:
                have = "no state" if state is None else f"state at request {state.requests}"
                raise HistoryStale(
                    f"request {ref.n} still not in the call's state after {self.wait_s:g} s "
                    f"({have}, {reads} reads)"
                )
            await trio.sleep(pause)
            pause = min(pause * 2, _MAX_PAUSE_S)


def history_metrics(histories: Histories, registry: CollectorRegistry) -> None:
    """``switchboard_llm_history{outcome}``: requests since start whose history was
    rebuilt from ``memory`` or the ``state``, or not at all (``stale``, ``mismatch``);
    read at scrape time."""
    gauge = Gauge(
        "switchboard_llm_history",
        "Requests since start by how their history was rebuilt (memory, state) or not.",
        ["outcome"],
        registry=registry,
    )
    counts: dict[str, Callable[[], int]] = {
        "memory": lambda: histories.hits,
        "state": lambda: histories.misses - histories.stale - histories.mismatches,
        "stale": lambda: histories.stale,
        "mismatch": lambda: histories.mismatches,
    }
    for outcome, read in counts.items():
        gauge.labels(outcome).set_function(partial(_as_float, read))


def _as_float(read: Callable[[], int]) -> float:
    return float(read())
