"""The conversation actor: the I/O shell around the turn rules.

It reads the partition streams (``keys.calls(p)``), where the gateway puts
caller events and the LLM actor puts finished replies, so both arrive in one
order per call. It is a partitioned actor: each worker reads only the
partitions whose lease it holds (``actors.partitions``). For each entry it
loads the call's state (``cache``, else the bus key/value store at
``keys.state(call)``), applies the entry with the pure rules (``rules.apply``),
brings the partition's timer index in line, persists the state with its
outbox, and then publishes what the rules asked for.

Idempotency: the state records the id of the last entry applied
(``last_entry_id``); an entry at or below it is a redelivery and is skipped.

Persist, then publish: the state, with what the entry publishes (its
*outbox*: requests, cancels, frames; not facts), is written first, under
the lease; only then are the messages appended. A worker that lost its
lease gets its write refused and publishes nothing. If the process dies
between the write and the append, the entry comes back (it was not acked)
as the last one applied: its outbox is published again, stamped with the
new owner's epoch (downstream de-duplicates a repeat).

Fencing: the state is written with ``bus.set_if_lease`` under the partition's
lease, and what it publishes carries the lease's ``epoch``. A refused write
means another worker owns the partition now: ``lease_lost()`` stops this one
at once, without acking, so a stalled old owner can never overwrite the new
owner's state nor publish anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import structlog
import trio

from actors.config import ConversationConfig
from actors.conversation.cache import StateCache
from actors.conversation.effects import Effect, FactOut, Incoming
from actors.conversation.rules import apply
from actors.conversation.state import SETTLE, CallState
from actors.conversation.timers import PartitionTimers, fire_timers
from actors.runtime import Actor, current_lease, lease_lost
from bus.base import BusError, Entry, Fields, parse_id
from bus.envelope import Envelope
from bus.facts import fact_item, wall_ms
from bus.keys import GROUP_CONVERSATION, partition_of
from bus.messages import (
    ControlAdopt,
    ControlCancel,
    GatewaySend,
    LlmRequest,
    UnknownKind,
    envelope,
)
from bus.retry import Backoff
from relay import Text, to_wire

log = structlog.get_logger()

# Clock skew allowed between the host that stamped an entry and Redis.
_SKEW_MS = 2000


class ConversationActor(Actor):
    """Keeps each call's history and asks the LLM actor for every reply.

    ``clock`` gives wall-clock milliseconds (the time base every process
    shares, so a timer's deadline means the same to the next owner).
    """

    name = "conversation"
    group = GROUP_CONVERSATION
    concurrency = 1  # per-call order: a call lives on one partition stream
    partitioned = True  # one owner per partition, by lease
    has_partition_task = True  # the timers

    def __init__(self, config: ConversationConfig, *, clock: Callable[[], float] = wall_ms) -> None:
        self.config = config
        self.keys = config.keys
        # Bounded work per entry; the runtime cancels, retries, counts
        # deliveries and dead-letters (``dead_lettered`` below).
        self.handler_deadline_s = config.handler_deadline_s
        self.max_deliveries = config.max_deliveries
        self.clock = clock
        self._timers: dict[int, PartitionTimers] = {}
        self._cache = StateCache(config.state_cache_calls)

    def streams(self) -> Sequence[str]:
        return self.keys.all_calls()

    async def load_state(self, call: str) -> CallState | None:
        """The stored state of ``call``, or None when it has none."""
        raw = await self.bus.get(self.keys.state(call))
        return CallState.from_json(raw) if raw is not None else None

    # -- applying entries --------------------------------------------------------

    async def handle(self, env: Envelope, entry: Entry) -> None:
        try:
            # A body that is not its kind's message raises MalformedEntry
            # here, before any state is touched: the runtime dead-letters it.
            incoming = Incoming.of(env)
        except UnknownKind:
            log.warning("unexpected_kind", kind=str(env.kind), entry_id=entry.id)
            return
        lease = current_lease()
        # Taken out of the cache: it goes back only once persisted, so a
        # handler that fails half-way never leaves a half-applied state there.
        state = self._cache.take(env.call, lease)
        if state is None:
            state = await self.load_state(env.call)
        if state is not None and not env.turn:
            # Caller events carry no turn (the gateway does not number turns):
            # their logs get the call's current turn, the conversation's own.
            structlog.contextvars.bind_contextvars(turn=state.turn)
        written = await self._apply(incoming, entry, state)
        if lease is None:
            return  # outside a partition's lease nobody fences the state: no cache
        if written is None:
            # The entry changed nothing (a duplicate, an interim prompt...):
            # the state read or taken is still the stored one.
            written = state
        if written is None or written.closed:
            return
        partition = partition_of(written.call, self.keys.partitions)
        self._cache.put(written, lease, partition, self.config.state_ttl_ms)

    async def _apply(
        self, incoming: Incoming, entry: Entry, state: CallState | None
    ) -> CallState | None:
        """Apply one entry to ``state``; the state persisted, or None when nothing changed."""
        if (
            state is not None
            and state.last_entry_id
            and parse_id(entry.id) <= parse_id(state.last_entry_id)
        ):
            if entry.id == state.last_entry_id and state.outbox:
                # Persisted, perhaps never published (the worker died in
                # between): what is missing goes out now, under this lease.
                missing = await self._unpublished(state.outbox)
                if missing:
                    await self.bus.append_many(self._restamped(missing))
                log.info(
                    "outbox_checked",
                    entry_id=entry.id,
                    entries=len(state.outbox),
                    republished=len(missing),
                )
            log.info(
                "entry_skipped_duplicate",
                kind=incoming.message.KIND,
                entry_id=entry.id,
                last_entry_id=state.last_entry_id,
            )
            return None
        timers_before = dict(state.timers) if state is not None else {}
        applied = apply(state, incoming, config=self.config, now=self.clock(), wall_ms=wall_ms())
        state = applied.state
        if state is None:
            return None
        state.last_entry_id = entry.id
        items = [self._item(e) for e in applied.effects]
        effects = zip(items, applied.effects, strict=True)
        state.outbox = [(st, dict(f)) for (st, f), e in effects if not isinstance(e, FactOut)]
        await self._sync_timers(state, timers_before)
        # Persisted before anything is published (see the module docstring):
        # a refused write stops the partition here, with nothing published.
        await self._persist(state)
        if items:
            await self.bus.append_many(items)
        return state

    async def _unpublished(self, outbox: Sequence[tuple[str, Fields]]) -> list[tuple[str, Fields]]:
        """The entries of ``outbox`` not on their streams (looked up from their
        ``ts``, less 2 s of clock skew between hosts: only on a redelivery)."""
        missing: list[tuple[str, Fields]] = []
        for stream, fields in outbox:
            ts = Envelope.decode(dict(fields)).ts
            there = await self.bus.range(stream, f"{max(0, ts - _SKEW_MS)}-0", "+")
            if not any(e.fields == fields for e in there):
                missing.append((stream, fields))
        return missing

    def _restamped(self, outbox: Sequence[tuple[str, Fields]]) -> list[tuple[str, Fields]]:
        """``outbox`` with the current lease's epoch on every envelope."""
        epoch = _epoch()
        out: list[tuple[str, Fields]] = []
        for stream, fields in outbox:
            out.append((stream, replace(Envelope.decode(dict(fields)), epoch=epoch).encode()))
        return out

    def _item(self, effect: Effect) -> tuple[str, Fields]:
        """Where ``effect`` goes on the bus, and its entry (stamped with the lease's epoch)."""
        if isinstance(effect, FactOut):
            return fact_item(
                self.keys,
                effect.name,
                call=effect.call,
                session=effect.session,
                turn=effect.turn,
                gateway=effect.gateway,
                seq=effect.seq,
                t_ms=effect.t_ms,
                **effect.fields,
            )
        message = effect.message
        env = envelope(
            message,
            call=effect.call,
            session=effect.session,
            gateway=effect.gateway,
            seq=effect.seq,
            turn=effect.turn,
            epoch=_epoch(),
        )
        if isinstance(message, LlmRequest):
            stream = self.keys.llm_for(effect.call)
        elif isinstance(message, ControlCancel | ControlAdopt):
            stream = self.keys.control
        else:
            stream = self.keys.gateway(effect.gateway)
        return stream, env.encode()

    async def dead_lettered(self, env: Envelope, entry: Entry, error: str) -> None:
        """An entry of this call was given up on: the caller hears the apology.

        Only this call pays for a poison entry: the partition's other calls
        go on with their next entries. The entry's envelope names the call's
        gateway and session (no state is read: the state may be what made
        the entry poison).
        """
        if not env.call or not env.gateway:
            log.warning("apology_without_gateway", entry_id=entry.id, kind=str(env.kind))
            return
        message = GatewaySend(
            frame=to_wire(Text(token=self.config.apology_text, last=True)), origin="conversation"
        )
        out = envelope(
            message,
            call=env.call,
            session=env.session,
            gateway=env.gateway,
            turn=env.turn,
            epoch=_epoch(),
        )
        await self.bus.append(self.keys.gateway(env.gateway), out.encode())
        log.warning("caller_apology_sent", entry_id=entry.id, kind=str(env.kind), error=error)

    # -- persistence ---------------------------------------------------------------

    async def _persist(self, state: CallState) -> None:
        key, value, ttl_ms = self.keys.state(state.call), state.to_json(), self.config.state_ttl_ms
        await self._write(key, value, ttl_ms, what="state_write_fenced")

    async def _write(self, key: str, value: str, ttl_ms: int, *, what: str) -> None:
        lease = current_lease()
        if lease is None:
            # Handled outside a partition's lease (direct calls in tools/tests).
            await self.bus.set(key, value, ttl_ms=ttl_ms)
            return
        if not await self.bus.set_if_lease(key, value, lease, ttl_ms=ttl_ms):
            log.warning(what, epoch=lease.epoch, key=key)
            self._cache.drop_lease(lease)  # another worker writes these states now
            await lease_lost()

    async def _sync_timers(self, state: CallState, before: dict[str, int]) -> None:
        """Bring the partition's timer index in line with ``state.timers``."""
        after = state.timers
        if after == before:
            return
        p = partition_of(state.call, self.keys.partitions)
        timers = self._timers.get(p)
        if timers is None:
            # Handled outside a held partition (direct calls): load it once.
            timers = PartitionTimers.decode(await self.bus.get(self.keys.timers(p)))
            self._timers[p] = timers
        timers.update(state.call, after)
        if all(before.get(name) == d for name, d in after.items() if name != SETTLE):
            # Only cleared (a stale deadline in the stored index fires as a
            # no-op), or only the settle timer moved: it is not worth a
            # write per interim prompt, since a lost one only means no
            # preemptive reply (the final prompt is answered as usual).
            return
        await self._write(
            self.keys.timers(p),
            timers.encode(),
            self.config.state_ttl_ms,
            what="timer_index_write_fenced",
        )

    # -- the timer task ------------------------------------------------------------

    async def partition_task(
        self, partition: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Fire the timers of ``partition``'s calls while this worker holds it."""
        backoff = Backoff("timer_index_load", actor=self.name, partition=partition)
        while True:
            try:
                raw = await self.bus.get(self.keys.timers(partition))
                break
            except BusError as exc:
                await backoff.failed(exc)
        backoff.succeeded()
        timers = PartitionTimers.decode(raw)
        self._timers[partition] = timers
        log.debug("timers_loaded", partition=partition, calls=len(timers.index))
        task_status.started()
        try:
            await fire_timers(
                self.bus,
                self.keys.calls(partition),
                timers,
                partition=partition,
                clock=self.clock,
                epoch=_epoch,
            )
        finally:
            if self._timers.get(partition) is timers:
                del self._timers[partition]
            # Released or lost: the next owner writes these states from now on.
            self._cache.drop_partition(partition)


def _epoch() -> int:
    """The fencing epoch of the partition being handled (0 outside one)."""
    lease = current_lease()
    return lease.epoch if lease is not None else 0
