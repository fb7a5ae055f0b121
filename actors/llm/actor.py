"""The LLM actor: takes ``llm.request`` entries, one reply each.

Stateless as far as correctness goes: a request carries the history new
since its call's previous request and a reference to the rest, which any
worker rebuilds from its own copy or from the call's state (``history``;
a history that cannot be rebuilt is never guessed at). The runtime reads the
requests (consumer group ``llm``), reclaims those a dead worker left pending
and keeps a long reply's entry claimed (``Actor.reclaim``); this module ties
the parts of one reply together: resume (``resume``), cancellation
(``cancel``), generation (``generate``), the token stream (``stream``), and
the result with its facts (``result``, ``facts``).

Held replies: a request with ``held: true`` is a speculation the
conversation started on an interim prompt (``actors.conversation.speculation``).
It streams like any other, but every token entry (the closing one too) is
marked ``held``, so the gateway keeps it from the caller until the
conversation adopts the reply; it never gets the filler line (a ``text``
frame that would not be held); and when the model asks for a tool, the
tools wait until ``control.adopt`` says the reply was adopted (a cancel
stops it as any other; ``HELD_TOOL_WAIT_S`` bounds the wait), so a
speculation that is discarded never acts on the call. One taken too late
(the workers are behind) is dropped unrun (``shed``).

Dead letter: a request delivered more than ``max_deliveries`` times goes to
the dead-letter stream and the caller's reply is closed with the apology.

Stale requests: every request carries the fencing epoch of the conversation
worker that published it. A conversation worker publishes only after its
fenced state write succeeded, and a new owner first re-publishes what the
last entry it inherits left unpublished (with its own, newer epoch); so a
request for a turn (call, session, ``reply_to``) that this worker already
saw *earlier in the stream* under a newer epoch was published late by a
worker that had lost the partition, and is dropped (``request_stale_epoch``).
Only such duplicates are dropped: epochs start again after Redis loses its
data, so an older epoch alone proves nothing. A duplicate that reaches
another worker is still caught by the gateway's ``(reply_to, index)``
de-duplication.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import structlog
import trio

from actors.config import LLMConfig
from actors.llm.cancel import Cancels, GenerationKey
from actors.llm.facts import request_facts
from actors.llm.generate import Engine, Producer, deferred_frames
from actors.llm.history import Histories, HistoryMismatch, HistoryStale
from actors.llm.result import Outcome, ending
from actors.llm.resume import SentSoFar, already_sent, superseded
from actors.llm.shed import Taken, shed_items, shed_lag
from actors.llm.stream import TICKS_PER_FLOOR, Piece, ReplyOut, TokenSender, Wake
from actors.providers.base import CompletionRequest, Provider
from actors.runtime import Actor, Reclaim
from actors.timers import SharedTimer
from actors.tools import ToolRegistry, tool_registry
from bus.base import Bus, Entry, Fields, parse_id
from bus.envelope import Envelope, Kind
from bus.facts import wall_ms
from bus.keys import GROUP_LLM
from bus.messages import LlmRequest

log = structlog.get_logger()

# Turns remembered for fencing stale requests (a few minutes of a busy worker).
_TURNS_KEPT = 50_000


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
        self.reclaim = Reclaim(idle_ms=config.claim_idle_ms, interval_s=config.claim_interval_s)
        self.tools = tools if tools is not None else tool_registry(config)
        # Entries this process started handling: a retry of one of them
        # resumes like a redelivery.
        self._attempted: set[str] = set()
        # Recent turns (call, session, reply_to): the newest epoch their
        # request came with and where in the stream (stale requests).
        self._epochs: OrderedDict[tuple[str, str, int], tuple[int, tuple[int, int]]] = OrderedDict()
        self.cancels = Cancels(self.keys, memory_s=config.cancel_memory_s, actor=self.name)
        self.histories = Histories(
            self.keys, cache_calls=config.history_cache_calls, wait_s=config.history_wait_s
        )
        # The coalescing waits of every reply, on one timer and one grid.
        self._ticks = SharedTimer(max(0.0, config.token_coalesce_ms) / 1000 / TICKS_PER_FLOOR)

    def streams(self) -> Sequence[str]:
        return self.keys.llm_streams()

    async def background(
        self, bus: Bus, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The control tail; ready (requests are read) once it read back."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.cancels.serve, bus)
            task_status.started()

    def cancel(self, call: str, session: str, reply_to: int, reason: str) -> bool:
        """Stop a generation now, or before it starts (see ``Cancels.cancel``)."""
        return self.cancels.cancel(call, session, reply_to, reason)

    def adopt(self, call: str, session: str, reply_to: int) -> None:
        """A held reply was adopted: its tools may run (see ``Cancels.adopt``)."""
        self.cancels.adopt(call, session, reply_to)

    async def handle(self, env: Envelope, entry: Entry) -> None:
        if env.kind != Kind.LLM_REQUEST:
            log.warning("unexpected_kind", kind=env.kind, entry_id=entry.id)
            return
        request = LlmRequest.from_body(env.body)
        reply_to = env.seq if request.reply_to is None else request.reply_to
        if self._stale(env, entry, reply_to):
            return
        if entry.deliveries > self.config.max_deliveries:
            await self._give_up(env, entry, reply_to, held=request.held)
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
        sent = (
            await already_sent(self.bus, self.keys, env, reply_to, since_ms=request.prompt_ms)
            if resumed
            else SentSoFar()
        )
        if sent.finished:
            await self._close_finished(env, reply_to, sent, held=request.held)
        else:
            if resumed:
                log.info(
                    "completion_resumed",
                    entry_id=entry.id,
                    deliveries=entry.deliveries,
                    reply_to=reply_to,
                    next_index=sent.next_index,
                    chars_sent=len(sent.text),
                    generation=sent.generation,
                )
            await self._complete(env, request, reply_to, sent, deliveries=entry.deliveries)
        self._attempted.discard(entry.id)

    def _stale(self, env: Envelope, entry: Entry, reply_to: int) -> bool:
        """True when ``env`` repeats a turn already seen, earlier in the stream,
        under a newer epoch: a late publish by a worker that lost its partition."""
        if not env.epoch:
            return False  # published outside a lease (tools, tests): nothing to fence
        key = (env.call, env.session, reply_to)
        at = parse_id(entry.id)
        seen = self._epochs.get(key)
        if seen is not None and seen[0] > env.epoch and seen[1] < at:
            log.warning(
                "request_stale_epoch",
                entry_id=entry.id,
                reply_to=reply_to,
                epoch=env.epoch,
                newer_epoch=seen[0],
            )
            return True
        if seen is None or env.epoch > seen[0] or (env.epoch == seen[0] and at < seen[1]):
            self._epochs[key] = (env.epoch, at)
            self._epochs.move_to_end(key)
            while len(self._epochs) > _TURNS_KEPT:
                self._epochs.popitem(last=False)
        return False

    async def _complete(
        self, env: Envelope, request: LlmRequest, reply_to: int, sent: SentSoFar, *, deliveries: int
    ) -> None:
        outcome = Outcome(started=trio.current_time(), prefix=sent.text, held=request.held)
        outcome.asked_ms = request.prompt_ms or env.ts or None
        key: GenerationKey = (env.call, env.session, reply_to)
        early = self.cancels.early(key)
        if early is not None:
            # The cancel overtook the request: nothing is generated.
            outcome.cancelled, outcome.cancelled_ms = early.reason, early.t_ms
            log.info("generation_cancelled", reply_to=reply_to, reason=early.reason, early=True)
            self.histories.skipped(env.call, request)
            await self._finish(env, reply_to, sent.next_index, "", outcome, sent.generation)
            return
        adopted = self.cancels.adopted(key)
        taken = Taken(request.held, env.ts, wall_ms(), adopted, deliveries, bool(sent.text))
        lag = shed_lag(taken, limit_ms=self.config.speculation_max_lag_ms)
        if lag is not None:
            log.info("speculation_shed", reply_to=reply_to, reason="queue_lag", lag_ms=round(lag))
            self.histories.skipped(env.call, request)
            await self.bus.append_many(
                shed_items(ReplyOut(self.bus, self.keys, env, reply_to), env, lag)
            )
            return
        try:
            messages = await self.histories.messages(self.bus, env.call, request)
        except HistoryStale as exc:
            # Its entry is applied again and a new request answers: no reply here.
            log.warning("request_stale_history", reply_to=reply_to, error=str(exc))
            return
        except HistoryMismatch as exc:
            log.error("request_history_mismatch", reply_to=reply_to, error=str(exc))
            outcome.error = f"history mismatch: {exc}"
            await self._finish(env, reply_to, sent.next_index, "", outcome, sent.generation)
            return
        completion = CompletionRequest(
            system=request.system,
            messages=messages,
            model=self.config.model,
            max_tokens=self.config.max_tokens,
            prefill=sent.text,
            tools=self.tools.definitions(),
            first_token_deadline_s=self._budget_left(env, request, sent),
        )
        index, leftover = await self._generate(env, reply_to, completion, outcome, sent)
        await self._finish(env, reply_to, index, leftover, outcome, sent.generation)

    def _budget_left(self, env: Envelope, request: LlmRequest, sent: SentSoFar) -> float | None:
        """What is left of the first-token deadline, counted from the prompt.

        The caller has waited since the gateway received its words (the
        request's ``prompt_ms``; else the request's own ``ts``, when the
        conversation asked). A resumed reply (the caller already heard its
        start) gets the whole.
        """
        asked = request.prompt_ms or env.ts
        if sent.text or not asked:
            return None
        waited = max(0.0, (wall_ms() - asked) / 1000)
        return max(self.config.first_token_deadline_s - waited, 0.0)

    async def _generate(
        self,
        env: Envelope,
        reply_to: int,
        completion: CompletionRequest,
        outcome: Outcome,
        sent: SentSoFar,
    ) -> tuple[int, str]:
        """Stream the reply to the caller; the next index and the unsent text."""
        key: GenerationKey = (env.call, env.session, reply_to)
        generation = self.cancels.start(key)
        try:
            send, receive = trio.open_memory_channel[Piece](math.inf)
            wake = Wake()
            engine = Engine(self.config, self.provider, self.tools, self.bus)
            producer = Producer(engine, env, reply_to, completion, outcome, generation, wake, send)
            sender = TokenSender(
                ReplyOut(self.bus, self.keys, env, reply_to, sent.generation, held=outcome.held),
                floor_s=max(0.0, self.config.token_coalesce_ms) / 1000,
                ticks=self._ticks,
                wake=wake,
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(producer.run)
                nursery.start_soon(producer.filler)
                index, leftover = await sender.run(receive, start_index=sent.next_index)
        finally:
            self.cancels.finish(key)
        if generation.reason is not None:
            outcome.cancelled = generation.reason
            outcome.cancelled_ms = generation.cancelled_ms
        return index, leftover

    async def _finish(
        self,
        env: Envelope,
        reply_to: int,
        index: int,
        leftover: str,
        outcome: Outcome,
        generation: int = 0,
        *,
        close_reply: bool = True,
    ) -> None:
        """Write the result, the closing entry, deferred frames and the facts at once
        (nothing, when a newer attempt took the reply over)."""
        ran_s = trio.current_time() - outcome.started
        if ran_s * 1000 > self.config.claim_idle_ms and await superseded(
            self.bus, self.keys, env, reply_to, generation
        ):
            log.warning(
                "result_stale_generation", reply_to=reply_to, generation=generation, ran_s=ran_s
            )
            return
        end = ending(
            outcome, reply_to, leftover, trio.current_time(), refusal_line=self.config.refusal_line
        )
        out = ReplyOut(self.bus, self.keys, env, reply_to, generation, held=outcome.held)
        unsaid = self._unsaid(env, reply_to, outcome, end.result.text)
        # The result goes first: once the caller has the closing token it may
        # answer at once, and its next prompt must land on the partition stream
        # after this reply, or the conversation would see them out of order.
        items: list[tuple[str, Fields]] = []
        if not unsaid:
            items.append((self.keys.calls_for(env.call), out.envelope(end.result).encode()))
        if env.gateway and close_reply and not unsaid:
            items.append((out.stream, out.tokens(end.final, index, last=True)))
            # ``end`` and the like: after the closing token, held by the
            # gateway until the caller has heard the reply.
            for frame in deferred_frames(outcome):
                items.append((out.stream, out.frame(frame, after_speech=True)))
        elif not env.gateway:
            log.warning("request_without_gateway", reply_to=reply_to)
        items += request_facts(self.keys, env, reply_to, outcome)
        await self.bus.append_many(items)
        result = end.result
        log.info(
            "completion_done",
            reply_to=reply_to,
            token_entries=index + 1,
            chars=len(result.text),
            first_token_ms=result.timings.first_token_ms,
            total_ms=result.timings.total_ms,
            stop_reason=result.stop_reason,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            cache_read_tokens=result.usage.cache_read_input_tokens,
            cache_write_tokens=result.usage.cache_creation_input_tokens,
            error=result.error,
            cancelled=outcome.cancelled,
            tool_calls=len(result.tool_calls),
        )

    def _unsaid(self, env: Envelope, reply_to: int, outcome: Outcome, text: str) -> bool:
        """A speculation cancelled before it said anything: nobody waits for it
        (the conversation discarded it, the gateway holds nothing of it), so
        only its facts are written. A partition entry per interim prompt was
        a large share of what preemptive replies cost."""
        return (
            outcome.held
            and outcome.cancelled is not None
            and not text
            and not self.cancels.adopted((env.call, env.session, reply_to))
        )

    async def _close_finished(
        self, env: Envelope, reply_to: int, sent: SentSoFar, *, held: bool = False
    ) -> None:
        """The caller heard the whole reply already: write only a missing result."""
        log.info(
            "completion_already_sent",
            reply_to=reply_to,
            chars=len(sent.text),
            result_written=sent.result_written,
        )
        if sent.result_written:
            return
        outcome = Outcome(started=trio.current_time(), prefix=sent.text, held=held)
        await self._finish(
            env, reply_to, sent.next_index, "", outcome, sent.generation, close_reply=False
        )

    async def _give_up(self, env: Envelope, entry: Entry, reply_to: int, *, held: bool) -> None:
        """Dead-letter a request delivered too often; close the caller's reply."""
        error = (
            f"delivered {entry.deliveries} times (max {self.config.max_deliveries}); "
            "the workers that took it died or stalled"
        )
        dead_id = await self.dead_letter(entry, error, attempts=0)
        log.error(
            "request_dead_lettered",
            entry_id=entry.id,
            deliveries=entry.deliveries,
            dead_id=dead_id,
            reply_to=reply_to,
        )
        sent = await already_sent(self.bus, self.keys, env, reply_to)
        if sent.finished:
            await self._close_finished(env, reply_to, sent, held=held)
            return
        outcome = Outcome(started=trio.current_time(), prefix=sent.text, error=error, held=held)
        await self._finish(env, reply_to, sent.next_index, "", outcome, sent.generation)
