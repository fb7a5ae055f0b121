"""The LLM actor: streams completions to the gateway, results to the call.

Stateless: each ``llm.request`` carries the whole context. For one request:

1. The provider's deltas go to the owning gateway's stream
   (``keys.gateway(env.gateway)``) as ``llm.tokens``. The first delta goes out
   alone at once (time to first audio is what the caller feels); after that,
   entries go out at most every ``token_coalesce_ms`` (50 ms by default),
   each with everything produced since the previous one, so at a word every
   20 ms the bus, the gateway and the socket carry a few words per entry
   instead of one. Those later entries leave on a tick shared by every reply
   of the worker (a fifth of the floor: 10 ms), so the entries of many
   replies go out in the same scheduler pass, in one Redis pipeline, and
   reach the gateway as one batch. The end of the stream and a tool's frame do not wait; a
   slow bus still means fewer, larger entries rather than a growing backlog.
   Indexes count 0, 1, 2, ... per request; the final entry has ``last=true``
   (its text may be empty).
2. The ``llm.result`` goes to the call's partition stream, so the conversation
   sees it in order with the caller's events. The result and the final tokens
   entry are written together with ``append_many``, the result first, so a
   caller answering the closing token is always ordered after the reply.

On a provider error the caller hears a short apology (as the rest of the reply,
``last=true``) and the result carries the error text.

Tools (``actors/tools.py``): the request offers the enabled tools. When the
provider stops with ``tool_use``, the tools run (each with its timeout, at
most once per idempotency key) and the completion continues with their
results, up to ``max_tool_rounds`` rounds; text of every round streams to
the caller as above. Frames a tool sends (``sendDigits``, ``language``) go
to the gateway in order with the text; ``end`` frames (``after_speech``)
go after the closing token. The result carries ``messages``: the history
messages the reply produced (assistant text/``tool_use``, user
``tool_result``, ...), every ``tool_use`` followed by its result, and the
text blocks joined equal to ``text``; and a ``tool_calls`` summary.

Cancel (``control.cancel``, tail-read by every worker in ``background``,
starting ``cancel_memory_s`` back so a worker that (re)starts, e.g. to take
over a reclaimed request, knows the cancels published before it; requests
wait for that read-back, briefly, before generating): the generation of
that ``(call, session, reply_to)`` is cancelled at once, provider stream
and running tool alike; open tool uses get the result
``"cancelled: the caller interrupted"`` (``is_error``), a pending ``end``
is not sent, and the result is still written, with
``cancelled: true``, together with a ``generation_cancelled`` fact stamped
when the cancel was read. A cancel is remembered for ``cancel_memory_s``:
a request that arrives after its cancel is answered with an empty
cancelled result without calling the provider.

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
from actors.timers import SharedTimer
from actors.tools import (
    CANCELLED_RESULT,
    ToolContext,
    ToolOutcome,
    ToolRegistry,
    tool_registry,
)
from bus.base import Bus, BusError, Entry, Fields, MalformedEntry, parse_id
from bus.envelope import Envelope, Kind, now_ms
from bus.facts import fact_envelope, fact_item, wall_ms
from bus.keys import GROUP_LLM
from bus.retry import Backoff, missing_group

log = structlog.get_logger()

APOLOGY = "Sorry, I'm having trouble right now. Please try again in a moment."

# Stream ids come from the Redis server's clock, the request's ``ts`` from the
# conversation host's: look back this far before ``ts`` for sent tokens.
CLOCK_SKEW_MS = 2000
# Later token entries leave on a tick of floor / TICKS_PER_FLOOR (10 ms for
# the default 50 ms floor), shared by every reply of the worker.
TICKS_PER_FLOOR = 5
_RANGE_PAGE = 500
# The control tail reads back (and follows) in batches of this many entries.
CONTROL_BATCH = 100
# How long a request waits for that read-back before generating anyway.
CONTROL_READBACK_WAIT_S = 2.0


@dataclass(frozen=True, slots=True)
class SentSoFar:
    """What the caller was already sent for one reply (see ``_already_sent``)."""

    text: str = ""
    next_index: int = 0
    finished: bool = False
    result_written: bool = False


GenerationKey = tuple[str, str, int]  # (call, session, reply_to)


@dataclass(slots=True)
class _Generation:
    """One reply being generated: what a ``control.cancel`` needs to stop it."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    reason: str | None = None
    cancelled_ms: float | None = None


@dataclass(slots=True)
class _Wake:
    """How the producer cuts the sender's coalescing wait short.

    Set when a tool's frame is queued and when the stream ends (finished,
    failed or cancelled); the sender replaces ``event`` before each wait.
    Plain deltas do not set it: the sender sleeps until its deadline instead
    of waking once per word.
    """

    event: trio.Event = field(default_factory=trio.Event)


@dataclass(frozen=True, slots=True)
class _Frame:
    """An app-to-Twilio frame a tool sends, in order with the reply's text."""

    frame: dict[str, Any]


class ReplyMessages:
    """The history messages one reply produces, built as it streams.

    Assistant text and ``tool_use`` blocks of a round form one assistant
    message; the round's tool results form the user message after it. The
    text blocks joined in order always equal the reply's ``text`` (what was
    streamed to the caller), which is what the conversation truncates by.
    ``close`` leaves no ``tool_use`` without its ``tool_result``.
    """

    def __init__(self, prefix: str = "") -> None:
        self.messages: list[dict[str, Any]] = []
        self._round_text: list[str] = [prefix] if prefix else []
        self._pending: list[dict[str, Any]] = []
        self._results: dict[str, ToolOutcome] = {}
        self.outcomes: list[ToolOutcome] = []

    def add_text(self, delta: str) -> None:
        self._round_text.append(delta)

    def end_round(self, tool_uses: Sequence[dict[str, Any]]) -> None:
        """The round's text and tool uses become one assistant message."""
        content: list[dict[str, Any]] = []
        text = "".join(self._round_text)
        if text:
            content.append({"type": "text", "text": text})
        for use in tool_uses:
            content.append(
                {
                    "type": "tool_use",
                    "id": str(use["id"]),
                    "name": str(use["name"]),
                    "input": dict(use.get("input") or {}),
                }
            )
        if content:
            self.messages.append({"role": "assistant", "content": content})
        self._round_text = []
        self._pending = [dict(u) for u in tool_uses]
        self._results = {}

    def add_outcome(self, outcome: ToolOutcome) -> None:
        self._results[outcome.tool_use_id] = outcome
        self.outcomes.append(outcome)

    def end_tools(self, *, cancelled_ids: frozenset[str] = frozenset()) -> None:
        """The user message with a result for every pending tool use.

        A use without an outcome, or listed in ``cancelled_ids`` (its effect
        was dropped), gets the cancelled error result.
        """
        if not self._pending:
            return
        blocks = []
        for use in self._pending:
            use_id = str(use["id"])
            done = self._results.get(use_id)
            if done is None or use_id in cancelled_ids:
                done = ToolOutcome(
                    use_id,
                    str(use["name"]),
                    dict(use.get("input") or {}),
                    CANCELLED_RESULT,
                    True,
                )
                self.outcomes = [o for o in self.outcomes if o.tool_use_id != use_id]
                self.outcomes.append(done)
            blocks.append(done.result_block())
        self.messages.append({"role": "user", "content": blocks})
        self._pending = []
        self._results = {}

    def close(self, *, cancelled_ids: frozenset[str] = frozenset()) -> None:
        """Flush text of an unfinished round; close open tool uses (see class doc)."""
        if self._round_text:
            self.end_round(())
        self.end_tools(cancelled_ids=cancelled_ids)
        if not cancelled_ids:
            return
        # Tools that already answered but whose effect was dropped.
        for message in self.messages:
            if message["role"] != "user" or not isinstance(message["content"], list):
                continue
            for i, block in enumerate(message["content"]):
                if block.get("type") == "tool_result" and block["tool_use_id"] in cancelled_ids:
                    message["content"][i] = {
                        "type": "tool_result",
                        "tool_use_id": block["tool_use_id"],
                        "content": CANCELLED_RESULT,
                        "is_error": True,
                    }
        self.outcomes = [
            ToolOutcome(o.tool_use_id, o.name, o.input, CANCELLED_RESULT, True)
            if o.tool_use_id in cancelled_ids
            else o
            for o in self.outcomes
        ]

    def compact(self) -> list[dict[str, Any]]:
        """The messages, a lone text block stored as a plain string (same meaning).

        A reply without tools then reads exactly like the plain assistant
        message histories held before tools existed (replays compare them).
        """
        out: list[dict[str, Any]] = []
        for m in self.messages:
            content = m["content"]
            if len(content) == 1 and content[0].get("type") == "text":
                out.append({"role": m["role"], "content": content[0]["text"]})
            else:
                out.append({"role": m["role"], "content": content})
        return out

    def append_text(self, text: str) -> None:
        """Text said after the reply closed (the apology)."""
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "assistant":
            last["content"].append({"type": "text", "text": text})
        else:
            self.messages.append({"role": "assistant", "content": [{"type": "text", "text": text}]})


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
    reply: ReplyMessages | None = None
    # Frames tools asked to send once the reply was spoken (``end``), with
    # the tool use that asked for each.
    deferred: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    cancelled: str | None = None  # the reason, once cancelled
    cancelled_ms: float | None = None

    def messages(self) -> ReplyMessages:
        if self.reply is None:
            self.reply = ReplyMessages(self.prefix)
        return self.reply


class LLMActor(Actor):
    """Turns ``llm.request`` entries into streamed tokens and a result."""

    name = "llm"
    group = GROUP_LLM

    def __init__(
        self, config: LLMConfig, provider: Provider, tools: ToolRegistry | None = None
    ) -> None:
        self.config = config
        self.keys = config.keys
        self.provider = provider
        self.concurrency = max(1, config.concurrency)
        self.tools = tools if tools is not None else tool_registry(config)
        # Entries this process started handling: a retry of one of them
        # resumes like a redelivery. Entries being handled right now are
        # never taken over again by this process's own reclaimer.
        self._attempted: set[str] = set()
        self._inflight: set[str] = set()
        # Replies being generated, by (call, session, reply_to): what a
        # control.cancel stops. And cancels seen, remembered for
        # ``cancel_memory_s`` (a request may arrive after its cancel).
        self._generations: dict[GenerationKey, _Generation] = {}
        self._cancelled: dict[GenerationKey, tuple[float, str, float]] = {}
        # Set once the control stream's last ``cancel_memory_s`` were read
        # back and the tail is live (tests wait for it); ``_control_started``
        # once the tail runs (only then do requests wait for the read-back).
        self.control_ready = trio.Event()
        self._control_started = False
        # The coalescing waits of every reply, on one timer and one grid.
        self._ticks = SharedTimer(max(0.0, config.token_coalesce_ms) / 1000 / TICKS_PER_FLOOR)

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
                {"role": str(m.get("role", "")), "content": m.get("content", "")}
                for m in body.get("messages", [])
                if isinstance(m, dict)
            ],
            model=self.config.model,
            max_tokens=self.config.max_tokens,
            prefill=sent.text,
            tools=self.tools.definitions(),
        )
        outcome = _Outcome(started=trio.current_time(), prefix=sent.text)
        key: GenerationKey = (env.call, env.session, reply_to)
        if self._control_started and not self.control_ready.is_set():
            # A cancel published before this worker started must be known
            # before generating; bounded, so a bus outage cannot hold replies.
            with trio.move_on_after(CONTROL_READBACK_WAIT_S):
                await self.control_ready.wait()
        early = self._cancelled.get(key)
        if early is not None:
            # The cancel overtook the request: nothing is generated.
            _, outcome.cancelled, outcome.cancelled_ms = early
            log.info(
                "generation_cancelled", reply_to=reply_to, reason=outcome.cancelled, early=True
            )
            await self._finish(env, reply_to, sent.next_index, "", outcome)
            return
        generation = _Generation()
        self._generations[key] = generation
        try:
            send, receive = trio.open_memory_channel[str | _Frame](math.inf)
            wake = _Wake()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    self._produce, env, reply_to, request, send, outcome, generation, wake
                )
                index, leftover = await self._send_tokens(
                    env, reply_to, receive, start_index=sent.next_index, wake=wake
                )
        finally:
            self._generations.pop(key, None)
        if generation.reason is not None:
            outcome.cancelled = generation.reason
            outcome.cancelled_ms = generation.cancelled_ms
        await self._finish(env, reply_to, index, leftover, outcome)

    # ------------------------------------------------------------- cancelling

    async def _tail_control(self, bus: Bus) -> None:
        """Cancel generations named by ``control.cancel`` entries.

        Starts ``cancel_memory_s`` back (entry ids are wall-clock ms), so the
        cancels of that window are remembered before ``control_ready`` is
        set; then follows new entries.
        """
        self._control_started = True  # also when run without ``background``
        backoff = Backoff("llm_control", actor=self.name)
        memory_ms = round(max(0.0, self.config.cancel_memory_s) * 1000)
        after: str | None = None
        caught_up = False
        while True:
            try:
                if after is None:
                    # Ids are the bus's wall clock (allow for skew against
                    # ours). Nothing that recent: follow from the newest.
                    newest = await bus.last_id(self.keys.control)
                    since = now_ms() - memory_ms - CLOCK_SKEW_MS
                    after = newest if parse_id(newest)[0] < since else f"{since}-0"
                # Non-blocking until caught up: an empty window must not
                # delay readiness by a whole block.
                entries = await bus.read(
                    self.keys.control,
                    after,
                    count=CONTROL_BATCH,
                    block_ms=1000 if caught_up else None,
                )
            except BusError as exc:
                await backoff.failed(exc)
                continue
            backoff.succeeded()
            for entry in entries:
                after = entry.id
                if entry.fields.get("k") != Kind.CONTROL_CANCEL:
                    continue
                try:
                    env = Envelope.decode(entry.fields)
                    reply_to = int(env.body["reply_to"])
                except (MalformedEntry, KeyError, ValueError, TypeError):
                    log.warning("control_entry_malformed", entry_id=entry.id)
                    continue
                self.cancel(env.call, env.session, reply_to, str(env.body.get("reason", "")))
            if not caught_up and len(entries) < CONTROL_BATCH:
                caught_up = True
                self.control_ready.set()

    def cancel(self, call: str, session: str, reply_to: int, reason: str) -> bool:
        """Stop the generation of ``(call, session, reply_to)`` now, or before it starts.

        Returns whether a running generation was cancelled. The cancel is
        remembered for ``cancel_memory_s`` so a request arriving later is
        answered with an empty cancelled result instead of being generated.
        """
        now = trio.current_time()
        t_ms = wall_ms()
        key: GenerationKey = (call, session, reply_to)
        # Oldest first (insertion order): drop the expired ones.
        for old, (expiry, _, _) in list(self._cancelled.items()):
            if expiry > now:
                break
            del self._cancelled[old]
        self._cancelled.setdefault(key, (now + self.config.cancel_memory_s, reason, t_ms))
        generation = self._generations.get(key)
        if generation is None or generation.reason is not None:
            return False
        generation.reason = reason
        generation.cancelled_ms = t_ms
        generation.scope.cancel()
        with structlog.contextvars.bound_contextvars(call_sid=call, actor=self.name):
            log.info("generation_cancelled", reply_to=reply_to, reason=reason)
        return True

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

    async def _scan(self, stream: str, start: str, env: Envelope, reply_to: int) -> list[Envelope]:
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
        """The control tail (cancels) and the reclaimer, side by side."""
        # Set before any request can be handled: they now wait for the read-back.
        self._control_started = True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tail_control, bus)
            nursery.start_soon(self._reclaim, bus)

    async def _reclaim(self, bus: Bus) -> None:
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
        env: Envelope,
        reply_to: int,
        request: CompletionRequest,
        send: trio.MemorySendChannel[str | _Frame],
        outcome: _Outcome,
        generation: _Generation,
        wake: _Wake,
    ) -> None:
        """Run the completion rounds (tools in between) into ``send``.

        Cancelled by ``generation.scope`` (a ``control.cancel``): the provider
        stream and any running tool stop at once; the reply's messages are
        then closed so every tool use keeps its result.
        """
        reply = outcome.messages()
        base = list(request.messages)
        current_use = ""

        async def sink(frame: dict[str, Any], *, after_speech: bool) -> None:
            if after_speech:
                outcome.deferred.append((current_use, frame))
            else:
                send.send_nowait(_Frame(frame))  # unbounded: never blocks
                wake.event.set()

        async with send:
            with generation.scope:
                try:
                    for round_no in range(max(1, self.config.max_tool_rounds)):
                        this = CompletionRequest(
                            system=request.system,
                            messages=base + reply.messages,
                            model=request.model,
                            max_tokens=request.max_tokens,
                            prefill=request.prefill if round_no == 0 else "",
                            tools=request.tools,
                        )
                        # Rounds stream back to back: keep a word break
                        # between "...now." and "Done." for the voice.
                        spaced = round_no == 0
                        async with self.provider.complete(this) as completion:
                            async for delta in completion.deltas():
                                if not delta:
                                    continue
                                if not spaced:
                                    spaced = True
                                    said = "".join(outcome.text[-1:])
                                    if said and not said[-1].isspace() and not delta[0].isspace():
                                        delta = " " + delta
                                if outcome.first_token_at is None:
                                    outcome.first_token_at = trio.current_time()
                                    outcome.first_token_ms = wall_ms()
                                outcome.text.append(delta)
                                reply.add_text(delta)
                                send.send_nowait(delta)  # unbounded: never blocks
                            outcome.stop_reason = completion.stop_reason
                            outcome.usage.input_tokens += completion.usage.input_tokens
                            outcome.usage.output_tokens += completion.usage.output_tokens
                            uses = list(getattr(completion, "tool_uses", None) or [])
                        if outcome.stop_reason != "tool_use" or not uses:
                            reply.end_round(())
                            break
                        reply.end_round(uses)
                        for use in uses:
                            current_use = str(use["id"])
                            ctx = ToolContext(
                                call=env.call,
                                session=env.session,
                                turn=env.turn,
                                reply_to=reply_to,
                                tool_use_id=current_use,
                                transfer_number=self.config.transfer_number,
                                transfer_queue=self.config.transfer_queue,
                                languages=self.config.languages,
                                _sink=sink,
                            )
                            reply.add_outcome(
                                await self.tools.run(
                                    self.bus,
                                    self.keys,
                                    ctx,
                                    str(use["name"]),
                                    dict(use.get("input") or {}),
                                )
                            )
                        reply.end_tools()
                except Exception as exc:  # trio.Cancelled is a BaseException: never caught
                    outcome.error = f"{type(exc).__name__}: {exc}"
                    log.error(
                        "provider_failed",
                        error=outcome.error,
                        retriable=bool(getattr(exc, "retriable", False)),
                        chars_before_error=sum(len(t) for t in outcome.text),
                    )
            # Reached on a normal end, an error and a cancel alike (the scope
            # absorbs its own cancel). A cancelled reply's ``end`` is not
            # sent (the caller is still talking): its tool result says so.
            dropped: frozenset[str] = frozenset()
            if generation.reason is not None:
                dropped = frozenset(use_id for use_id, _ in outcome.deferred)
                outcome.deferred.clear()
            reply.close(cancelled_ids=dropped)
        # ``send`` is closed (finished, failed or cancelled): the sender stops
        # its coalescing wait and sends the closing entry now. (Only an outer
        # cancel skips this, and it cancels the sender too.)
        wake.event.set()

    async def _send_tokens(
        self,
        env: Envelope,
        reply_to: int,
        receive: trio.MemoryReceiveChannel[str | _Frame],
        *,
        start_index: int = 0,
        wake: _Wake | None = None,
    ) -> tuple[int, str]:
        """Forward deltas as coalesced entries (and tools' frames) until the end.

        Returns the next index and the text received but not yet sent (it
        goes out in the final entry). A resumed reply starts at
        ``start_index``, after the entries an earlier delivery sent. A frame
        goes out after the text received before it, so e.g. a ``language``
        switch lands between the sentences around it.

        Pacing: the first entry of a delivery carries the first delta alone,
        at once. Each later entry goes out no sooner than
        ``token_coalesce_ms`` after the previous one started, with everything
        produced since; the end of the stream (finished, failed or
        cancelled) and a tool's frame end the wait at once. With
        ``token_coalesce_ms = 0`` an entry takes whatever piled up while the
        previous append was in flight.
        """
        floor_s = max(0.0, self.config.token_coalesce_ms) / 1000
        wake = wake if wake is not None else _Wake()
        index = start_index
        # When the previous token entry was handed to the bus (None: none yet).
        sent_at: float | None = None
        async with receive:
            while True:
                try:
                    first = await receive.receive()
                except trio.EndOfChannel:
                    return index, ""
                if isinstance(first, _Frame):
                    await self._send_frame(env, first.frame)
                    continue
                parts = [first]
                frame: _Frame | None = None
                ended = False
                if sent_at is not None:
                    # The first delta goes out alone: time to first audio
                    # matters more than entry count. Later ones gather until
                    # the floor (TTS speaks by clause: 50 ms is not heard).
                    frame, ended = await self._gather(receive, parts, sent_at + floor_s, wake)
                if ended:
                    return index, "".join(parts)
                sent_at = trio.current_time()
                if env.gateway:
                    await self.bus.append(
                        self.keys.gateway(env.gateway),
                        self._tokens(env, reply_to, "".join(parts), index, last=False),
                    )
                index += 1
                if frame is not None:
                    await self._send_frame(env, frame.frame)

    async def _gather(
        self,
        receive: trio.MemoryReceiveChannel[str | _Frame],
        parts: list[str],
        deadline: float,
        wake: _Wake,
    ) -> tuple[_Frame | None, bool]:
        """Add deltas to ``parts`` until ``deadline`` (trio time), a frame or the end.

        Returns the frame that stopped the gathering (it goes out after the
        text) and whether the stream ended. Sleeps until the deadline (on the
        worker's shared tick) rather than waking for every delta: only the
        producer's ``wake`` (a frame, the end of the stream) cuts the wait
        short. Whatever is queued is taken, even past the deadline.
        """
        while True:
            # A fresh event before draining: a wake-up after the drain is seen.
            wake.event = trio.Event()
            while True:
                try:
                    more = receive.receive_nowait()
                except trio.WouldBlock:
                    break
                except trio.EndOfChannel:
                    return None, True
                if isinstance(more, _Frame):
                    return more, False
                parts.append(more)
            if trio.current_time() >= deadline:
                return None, False
            self._ticks.set_at(deadline, wake.event)
            await wake.event.wait()

    async def _send_frame(self, env: Envelope, frame: dict[str, Any]) -> None:
        if env.gateway:
            await self.bus.append(
                self.keys.gateway(env.gateway), self._gateway_send(env, frame).encode()
            )

    def _gateway_send(
        self, env: Envelope, frame: dict[str, Any], *, after_speech: bool = False
    ) -> Envelope:
        return Envelope(
            kind=Kind.GATEWAY_SEND,
            call=env.call,
            session=env.session,
            gateway=env.gateway,
            seq=env.seq,
            turn=env.turn,
            # ``origin`` tells replay which frames the conversation sent itself.
            body={"frame": frame, "after_speech": after_speech, "origin": "llm"},
        )

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
        reply = outcome.messages()
        reply.close()
        final = leftover
        if outcome.error is not None:
            # Whatever was already said stays said; the apology completes it.
            apology = f" {APOLOGY}" if spoken else APOLOGY
            final += apology
            spoken += apology
            reply.append_text(apology)
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
                "cancelled": outcome.cancelled is not None,
                "messages": reply.compact(),
                "tool_calls": [o.summary() for o in reply.outcomes],
            },
        )
        # The result goes first: once the caller has the closing token it may
        # answer at once, and its next prompt must land on the partition stream
        # after this reply, or the conversation would see them out of order.
        items: list[tuple[str, Fields]] = [(self.keys.calls_for(env.call), result.encode())]
        if env.gateway and close_reply:
            out = self.keys.gateway(env.gateway)
            items.append((out, self._tokens(env, reply_to, final, index, last=True)))
            # ``end`` and the like: after the closing token, held by the
            # gateway until the caller has heard the reply.
            for _, frame in outcome.deferred:
                items.append((out, self._gateway_send(env, frame, after_speech=True).encode()))
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
            cancelled=outcome.cancelled,
            tool_calls=len(reply.outcomes),
        )

    def _facts(self, env: Envelope, reply_to: int, outcome: _Outcome) -> list[tuple[str, Fields]]:
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
        for tool_outcome in outcome.messages().outcomes:
            # Telemetry reads the tool's name from the fact's ``name`` field,
            # which ``fact_item``'s own ``name`` parameter would shadow.
            called = fact_envelope("tool_called", is_error=tool_outcome.is_error, **ctx)
            called.body["name"] = tool_outcome.name
            facts.append((self.keys.events, called.encode()))
        if outcome.cancelled is not None:
            facts.append(
                fact_item(
                    self.keys,
                    "generation_cancelled",
                    t_ms=outcome.cancelled_ms,
                    reason=outcome.cancelled,
                    **ctx,
                )
            )
        usage = {"input_tokens": outcome.usage.input_tokens}
        usage["output_tokens"] = outcome.usage.output_tokens
        facts.append(
            fact_item(
                self.keys,
                "completion_done",
                usage=usage,
                stop_reason=outcome.stop_reason,
                error=outcome.error,
                cancelled=outcome.cancelled is not None,
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
