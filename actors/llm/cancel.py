"""Cancellation: the control tail and the generations a ``control.cancel`` stops.

Every worker tail-reads ``control`` (``Cancels.serve``, started by the actor's
``background``), starting ``cancel_memory_s`` back, so a worker that (re)starts,
e.g. to take over a reclaimed request, knows the cancels published before it.
``serve`` reports readiness once that read-back caught up (or after
``CONTROL_READBACK_WAIT_S``, so a bus outage cannot hold replies): the
runtime reads no request before then.

A cancel of ``(call, session, reply_to)`` stops that generation at once
(provider stream and running tool alike) and is remembered for
``cancel_memory_s``: a request that arrives after its cancel is answered
with an empty cancelled result without calling the provider.

A ``control.adopt`` of ``(call, session, reply_to)`` says a held
(speculative) reply became the caller's turn: its generation's ``adopted``
event is set, and remembered like a cancel, so a worker that takes the
request over later knows it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
import trio

from bus.base import Bus, BusError, Entry, MalformedEntry, parse_id
from bus.envelope import Envelope, Kind, now_ms
from bus.facts import wall_ms
from bus.keys import Keys
from bus.messages import ControlAdopt, ControlCancel
from bus.retry import Backoff

log = structlog.get_logger()

# Stream ids come from the Redis server's clock, ours may differ by this much.
CLOCK_SKEW_MS = 2000
# The control tail reads back (and follows) in batches of this many entries.
CONTROL_BATCH = 100
# How long the worker waits for that read-back before taking requests anyway.
CONTROL_READBACK_WAIT_S = 2.0

GenerationKey = tuple[str, str, int]  # (call, session, reply_to)


@dataclass(slots=True)
class Generation:
    """One reply being generated: what a ``control.cancel`` needs to stop it."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    reason: str | None = None
    cancelled_ms: float | None = None
    adopted: trio.Event = field(default_factory=trio.Event)  # control.adopt seen


@dataclass(frozen=True, slots=True)
class EarlyCancel:
    """A cancel that arrived before its request: why, and when it was read."""

    reason: str
    t_ms: float


class Cancels:
    """The generations running in this worker and the cancels it has seen."""

    def __init__(self, keys: Keys, *, memory_s: float, actor: str) -> None:
        self.keys = keys
        self.memory_s = memory_s
        self.actor = actor
        self._generations: dict[GenerationKey, Generation] = {}
        # Oldest first (insertion order): key -> (expiry on the trio clock, cancel).
        self._seen: dict[GenerationKey, tuple[float, EarlyCancel]] = {}
        # Adopted held replies, oldest first: key -> expiry on the trio clock.
        self._adopted: dict[GenerationKey, float] = {}

    def early(self, key: GenerationKey) -> EarlyCancel | None:
        """The cancel already seen for ``key``, if any."""
        seen = self._seen.get(key)
        return None if seen is None else seen[1]

    def start(self, key: GenerationKey) -> Generation:
        """Register a generation; ``finish`` it when it ends."""
        generation = Generation()
        if key in self._adopted:
            generation.adopted.set()
        self._generations[key] = generation
        return generation

    def adopted(self, key: GenerationKey) -> bool:
        """Whether ``control.adopt`` named the held reply ``key`` (within ``memory_s``)."""
        return key in self._adopted

    def adopt(self, call: str, session: str, reply_to: int) -> None:
        """The held reply of ``(call, session, reply_to)`` was adopted: its tools may run."""
        now = trio.current_time()
        for old, expiry in list(self._adopted.items()):
            if expiry > now:
                break
            del self._adopted[old]
        key: GenerationKey = (call, session, reply_to)
        self._adopted.setdefault(key, now + self.memory_s)
        generation = self._generations.get(key)
        if generation is not None:
            generation.adopted.set()

    def finish(self, key: GenerationKey) -> None:
        self._generations.pop(key, None)

    def cancel(self, call: str, session: str, reply_to: int, reason: str) -> bool:
        """Stop the generation of ``(call, session, reply_to)`` now, or before it starts.

        Returns whether a running generation was cancelled; the cancel is
        remembered for ``memory_s`` either way.
        """
        now = trio.current_time()
        t_ms = wall_ms()
        key: GenerationKey = (call, session, reply_to)
        for old, (expiry, _) in list(self._seen.items()):
            if expiry > now:
                break
            del self._seen[old]
        self._seen.setdefault(key, (now + self.memory_s, EarlyCancel(reason, t_ms)))
        generation = self._generations.get(key)
        if generation is None or generation.reason is not None:
            return False
        generation.reason = reason
        generation.cancelled_ms = t_ms
        generation.scope.cancel()
        with structlog.contextvars.bound_contextvars(call_sid=call, actor=self.actor):
            log.info("generation_cancelled", reply_to=reply_to, reason=reason)
        return True

    async def serve(
        self, bus: Bus, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Follow ``control`` until cancelled; ready once the read-back caught up."""
        caught_up = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tail, bus, caught_up)
            with trio.move_on_after(CONTROL_READBACK_WAIT_S):
                await caught_up.wait()
            task_status.started()

    async def _tail(self, bus: Bus, caught_up: trio.Event) -> None:
        backoff = Backoff("llm_control", actor=self.actor)
        after: str | None = None
        while True:
            try:
                if after is None:
                    after = await self._read_back_from(bus)
                # Non-blocking until caught up: an empty window must not
                # delay readiness by a whole block.
                entries = await bus.read(
                    self.keys.control,
                    after,
                    count=CONTROL_BATCH,
                    block_ms=1000 if caught_up.is_set() else None,
                )
            except BusError as exc:
                await backoff.failed(exc)
                continue
            backoff.succeeded()
            for entry in entries:
                after = entry.id
                self._apply(entry)
            if len(entries) < CONTROL_BATCH:
                caught_up.set()

    async def _read_back_from(self, bus: Bus) -> str:
        """Where the tail starts: ``memory_s`` back (entry ids are wall-clock ms)."""
        memory_ms = round(max(0.0, self.memory_s) * 1000)
        # Allow for skew against the bus's clock. Nothing that recent:
        # follow from the newest.
        newest = await bus.last_id(self.keys.control)
        since = now_ms() - memory_ms - CLOCK_SKEW_MS
        return newest if parse_id(newest)[0] < since else f"{since}-0"

    def _apply(self, entry: Entry) -> None:
        kind = entry.fields.get("k")
        if kind not in (Kind.CONTROL_CANCEL, Kind.CONTROL_ADOPT):
            return
        try:
            env = Envelope.decode(entry.fields)
            if kind == Kind.CONTROL_ADOPT:
                adopt = ControlAdopt.from_body(env.body)
                self.adopt(env.call, env.session, adopt.reply_to)
                return
            cancel = ControlCancel.from_body(env.body)
        except MalformedEntry as exc:
            log.warning("control_entry_malformed", entry_id=entry.id, error=str(exc))
            return
        self.cancel(env.call, env.session, cancel.reply_to, cancel.reason)
