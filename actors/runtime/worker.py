"""The read loops of a plain actor: deliveries, retries, dead letters, acks, reclaim."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
import trio

from actors.runtime.actor import Actor, Reclaim, dead_letter_fields, dead_letter_stream
from bus.base import Bus, BusError, Entry, MalformedEntry
from bus.envelope import Envelope
from bus.retry import Backoff, missing_group

log = structlog.get_logger()


def _bus_outage(exc: BaseException) -> BusError | None:
    """The retriable bus error ``exc`` is, or (a group) consists of only; else None."""
    if isinstance(exc, BusError):
        return exc if exc.retriable else None
    if isinstance(exc, BaseExceptionGroup):
        found = [_bus_outage(e) for e in exc.exceptions]
        if found and all(f is not None for f in found):
            return found[0]
    return None


class HandlerOverran(Exception):
    """A handler ran past its actor's ``handler_deadline_s`` and was cancelled."""


# Backoff between attempts of a failing handler; doubled each time up to the cap.
_RETRY_BASE_S = 0.05
_RETRY_CAP_S = 2.0


class StreamWorker:
    """The loops of one actor: one ``serve`` task per stream."""

    def __init__(
        self, bus: Bus, actor: Actor, consumer: str, block_ms: int, max_attempts: int
    ) -> None:
        self.bus = bus
        self.actor = actor
        self.consumer = consumer
        self.block_ms = block_ms
        self.max_attempts = max(1, max_attempts)
        self.dead = dead_letter_stream(actor.keys)
        # Graceful stop: each stream's read loop runs in a scope of its own.
        self._reading: list[trio.CancelScope] = []
        self._stopped_reading = False
        # Entries being handled right now: never reclaimed by this worker.
        self._inflight: set[str] = set()

    def stop_reading(self) -> None:
        """Graceful stop: take no new entries; handlers in flight run to the end."""
        self._stopped_reading = True
        for scope in self._reading:
            scope.cancel()

    async def serve(self, stream: str) -> None:
        limiter = trio.CapacityLimiter(max(1, self.actor.concurrency))
        backoff = Backoff("actor_read", actor=self.actor.name, stream=stream)
        # The nursery outlives the read loop: after ``stop_reading`` the
        # handlers already started finish, then ``serve`` returns.
        reading = trio.CancelScope()
        self._reading.append(reading)
        if self._stopped_reading:
            reading.cancel()
        async with trio.open_nursery() as nursery:
            with reading:
                await self._drain_pending(stream, limiter)
                while True:
                    try:
                        entries = await self.bus.read_group(
                            stream,
                            self.actor.group,
                            self.consumer,
                            start=">",
                            block_ms=self.block_ms,
                        )
                    except BusError as exc:
                        await self._recover(stream, exc, backoff)
                        continue
                    backoff.succeeded()
                    for entry in entries:
                        await self._dispatch(nursery, limiter, entry)

    async def _drain_pending(self, stream: str, limiter: trio.CapacityLimiter) -> None:
        """Handle what this consumer took before (a restart) until none is left."""
        seen: set[str] = set()
        backoff = Backoff("actor_pending", actor=self.actor.name, stream=stream)
        while True:
            try:
                entries = await self.bus.read_group(
                    stream, self.actor.group, self.consumer, start="0"
                )
            except BusError as exc:
                await self._recover(stream, exc, backoff)
                continue
            backoff.succeeded()
            fresh = [e for e in entries if e.id not in seen]
            if not fresh:
                # Empty, or only entries whose ack failed: the ">" loop and a
                # later claim take it from here rather than spinning on them.
                return
            seen.update(e.id for e in fresh)
            log.info("pending_redelivered", stream=stream, count=len(fresh))
            # Wait for the whole batch before re-reading "0", or in-flight
            # entries would come back as still pending.
            async with trio.open_nursery() as batch:
                for entry in fresh:
                    await self._dispatch(batch, limiter, entry)

    async def _dispatch(
        self, nursery: trio.Nursery, limiter: trio.CapacityLimiter, entry: Entry
    ) -> None:
        if self.actor.concurrency <= 1:
            await self.process(entry)
            return
        # Acquire before spawning, so a full limiter stops the read loop too.
        # Entry holds a dict (unhashable), so a fresh token borrows the slot.
        token = object()
        await limiter.acquire_on_behalf_of(token)
        nursery.start_soon(self._process_and_release, limiter, token, entry)

    async def _process_and_release(
        self, limiter: trio.CapacityLimiter, token: object, entry: Entry
    ) -> None:
        try:
            await self.process(entry)
        finally:
            limiter.release_on_behalf_of(token)

    async def reclaim(self, stream: str, reclaim: Reclaim) -> None:
        """Take over entries of ``stream`` that a dead consumer left pending."""
        backoff = Backoff("actor_reclaim", actor=self.actor.name, stream=stream)
        limiter = trio.CapacityLimiter(max(1, self.actor.concurrency))
        async with trio.open_nursery() as nursery:
            while True:
                await trio.sleep(reclaim.interval_s)
                room = min(reclaim.batch, int(limiter.available_tokens))
                if room <= 0:
                    continue
                try:
                    claimed = await self.bus.claim_idle(
                        stream,
                        self.actor.group,
                        self.consumer,
                        min_idle_ms=reclaim.idle_ms,
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
                    log.info(
                        "entry_reclaimed",
                        actor=self.actor.name,
                        stream=stream,
                        entry_id=entry.id,
                        deliveries=entry.deliveries,
                    )
                    token = object()
                    limiter.acquire_on_behalf_of_nowait(token)
                    nursery.start_soon(self._process_and_release, limiter, token, entry)

    @asynccontextmanager
    async def _kept_claimed(self, entry: Entry) -> AsyncIterator[None]:
        """While the block runs, ``touch`` the entry (reclaiming actors) so no one takes it."""
        reclaim = self.actor.reclaim
        if reclaim is None:
            yield
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._touch_loop, entry, reclaim.idle_ms / 3000)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()

    async def _touch_loop(self, entry: Entry, interval_s: float) -> None:
        while True:
            await trio.sleep(interval_s)
            try:
                await self.bus.touch(entry.stream, self.actor.group, self.consumer, [entry.id])
            except BusError as exc:
                # Next round tries again; if the bus stays away the entry may
                # be reclaimed, and the handler's idempotence keeps it whole.
                log.warning("touch_failed", entry_id=entry.id, error=f"{type(exc).__name__}: {exc}")

    async def process(self, entry: Entry) -> None:
        self._inflight.add(entry.id)
        try:
            await self._process_one(entry)
        finally:
            self._inflight.discard(entry.id)

    async def _process_one(self, entry: Entry) -> None:
        try:
            env = Envelope.decode(entry.fields)
        except MalformedEntry as exc:
            log.warning(
                "entry_malformed",
                actor=self.actor.name,
                stream=entry.stream,
                entry_id=entry.id,
                error=str(exc),
            )
            if await self._dead_letter(entry, str(exc), attempts=0):
                await self._ack(entry)
            return
        with structlog.contextvars.bound_contextvars(
            call_sid=env.call, actor=self.actor.name, turn=env.turn
        ):
            limit = self.actor.max_deliveries
            if limit is not None and entry.deliveries > limit:
                # Its workers died, stalled or lost their lease while handling
                # it: handling it again would cost the next one the same.
                error: str | None = (
                    f"delivered {entry.deliveries} times (max {limit}); the workers "
                    "that took it died, stalled or lost their lease"
                )
                attempts = 0
                log.error(
                    "entry_delivered_too_often",
                    kind=env.kind,
                    stream=entry.stream,
                    entry_id=entry.id,
                    deliveries=entry.deliveries,
                    max_deliveries=limit,
                )
            else:
                async with self._kept_claimed(entry):
                    error, attempts = await self._handle_with_retries(env, entry)
            if error is not None:
                if not await self._dead_letter(entry, error, attempts=attempts):
                    return  # not recorded anywhere: leave it pending for redelivery
                await self._tell_dead_lettered(env, entry, error)
            await self._ack(entry)

    async def _tell_dead_lettered(self, env: Envelope, entry: Entry, error: str) -> None:
        """``actor.dead_lettered``, bounded; its failure never keeps the entry pending."""
        deadline = self.actor.handler_deadline_s
        with trio.move_on_after(deadline if deadline is not None else math.inf) as scope:
            try:
                await self.actor.dead_lettered(env, entry, error)
            except Exception:
                log.exception("dead_lettered_hook_failed", entry_id=entry.id)
        if scope.cancelled_caught:
            log.error("dead_lettered_hook_timed_out", entry_id=entry.id, deadline_s=deadline)

    async def _handle_once(self, env: Envelope, entry: Entry) -> None:
        """Run the handler once, within ``actor.handler_deadline_s`` if set."""
        deadline = self.actor.handler_deadline_s
        if deadline is None:
            await self.actor.handle(env, entry)
            return
        with trio.move_on_after(deadline) as scope:
            await self.actor.handle(env, entry)
        if scope.cancelled_caught:
            raise HandlerOverran(f"the handler overran its deadline of {deadline:g} s")

    async def _handle_with_retries(self, env: Envelope, entry: Entry) -> tuple[str | None, int]:
        """Run the handler up to ``max_attempts`` times: the last error text (None:
        handled) and the attempts made. A malformed body is not retried.

        A retriable bus error (Redis restarting, a cluster failing over) is the
        bus's fault, not the entry's: the handler is run again after a backoff
        without using up an attempt, for as long as the outage lasts, so an
        outage of a few seconds dead-letters nothing.
        """
        error = ""
        outage = Backoff("handler", stream=entry.stream, entry_id=entry.id)
        attempt = 0
        while attempt < self.max_attempts:
            attempt += 1
            try:
                await self._handle_once(env, entry)
                outage.succeeded()
                return None, attempt
            except MalformedEntry as exc:
                log.warning(
                    "entry_malformed",
                    kind=env.kind,
                    stream=entry.stream,
                    entry_id=entry.id,
                    error=str(exc),
                )
                return f"{type(exc).__name__}: {exc}", attempt
            except HandlerOverran as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "handler_deadline_exceeded",
                    kind=env.kind,
                    stream=entry.stream,
                    entry_id=entry.id,
                    attempt=attempt,
                    max_attempts=self.max_attempts,
                    deadline_s=self.actor.handler_deadline_s,
                )
            except Exception as exc:  # trio.Cancelled is a BaseException: never caught
                lost = _bus_outage(exc)
                if lost is not None:
                    attempt -= 1
                    await outage.failed(lost)
                    continue
                error = f"{type(exc).__name__}: {exc}"
                log.exception(
                    "handler_failed",
                    kind=env.kind,
                    stream=entry.stream,
                    entry_id=entry.id,
                    attempt=attempt,
                    max_attempts=self.max_attempts,
                )
            if attempt < self.max_attempts:
                await trio.sleep(min(_RETRY_CAP_S, _RETRY_BASE_S * 2 ** (attempt - 1)))
        return error, self.max_attempts

    async def _dead_letter(self, entry: Entry, error: str, *, attempts: int) -> bool:
        """Record ``entry`` on the dead-letter stream; False if the bus failed."""
        fields = dead_letter_fields(
            entry, actor=self.actor, consumer=self.consumer, error=error, attempts=attempts
        )
        try:
            dead_id = await self.bus.append(self.dead, fields)
        except BusError as exc:
            if not exc.retriable:
                raise
            log.error(
                "dead_letter_failed",
                stream=entry.stream,
                entry_id=entry.id,
                error=f"{type(exc).__name__}: {exc}",
            )
            return False
        log.error(
            "entry_dead_lettered",
            stream=entry.stream,
            entry_id=entry.id,
            dead_stream=self.dead,
            dead_id=dead_id,
            error=error,
        )
        return True

    async def _ack(self, entry: Entry) -> None:
        try:
            await self.bus.ack(entry.stream, self.actor.group, [entry.id])
        except BusError as exc:
            if not exc.retriable:
                raise
            # The entry stays pending and comes back; handlers are idempotent.
            log.warning(
                "ack_failed",
                stream=entry.stream,
                entry_id=entry.id,
                error=f"{type(exc).__name__}: {exc}",
            )

    async def _recover(self, stream: str, exc: BusError, backoff: Backoff) -> None:
        """After a failed read: re-create a lost group, else back off (jittered)."""
        if missing_group(exc):
            # Redis lost its data (a restart without persistence): the group
            # is gone with it. Re-create it and read on; nothing was pending.
            log.warning("consumer_group_recreated", actor=self.actor.name, stream=stream)
            try:
                await self.bus.ensure_group(stream, self.actor.group)
                return
            except BusError as again:
                exc = again
        await backoff.failed(exc)
