"""Facts: what happened, when, published on the event streams for telemetry and plug-ins.

A call's facts go to its event shard (``keys.events_for``); readers read
every shard (``keys.event_streams()``).

A fact is an ``Envelope(kind="event")`` whose body is ``{"fact": NAME,
"t_ms": T, ...}``, typed as ``bus.messages.Fact`` (readers use
``Fact.from_body``). ``T`` is wall-clock milliseconds (``time.time()``, with
sub-millisecond precision as a float): the only clock every process of a
deployment shares. Durations between facts of different processes are exact
only up to the clock skew between their hosts (NTP keeps it to ~1 ms).

Facts never sit on the caller's path. Two ways to publish one:

- ``fact_item(keys, ...)``: a ``(stream, fields)`` pair to put into an
  ``append_many`` the actor already makes (no extra round trip). The fact
  carries its own ``t_ms``, so it may be written later than it happened.
- ``FactPublisher``: a bounded fire-and-forget queue drained by one task
  (``serve``) in batches. ``emit`` never blocks; when the queue is full the
  fact is dropped and counted (``dropped``), because losing a measurement
  beats slowing a call down.

Fact names used by the built-in parts (body fields besides ``fact``/``t_ms``):

- gateway: ``call_started``, ``prompt_received`` (``reply_to``, ``text``: the
  caller's words, kept as long as the partition stream keeps them),
  ``interrupt_received`` (``seq``, ``heard``), ``first_token_sent`` and
  ``last_token_sent`` (``reply_to``; the first also ``latency_ms``, the
  caller's wait since the final prompt, when it answers one), ``frame_rejected`` (``reason``),
  ``call_ended`` (``code``, ``reason``), ``reply_late`` (``reply_to``: no
  reply started within the deadline, the caller heard the gateway's apology),
  ``held_released`` (``reply_to``: the final prompt; ``speculation``: the
  interim prompt the held reply answered; ``batches`` released at once);
- conversation: ``prompt_applied``, ``llm_requested`` (``reply_to``);
  preemptive replies: ``speculation_started``, ``speculation_adopted``,
  ``speculation_discarded``, ``speculation_wasted`` (fields in
  ``actors/conversation/speculation.py``), ``speculation_shed`` (``reason``:
  ``partial_lag`` or ``settle_lag``, ``lag_ms``: none started, the bus was
  behind);
- llm: ``request_taken``, ``provider_first_token``, ``completion_done``
  (``reply_to``, ``usage`` with ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens`` when the prompt cache was used,
  ``stop_reason``, ``cancelled``; ``held: true`` for a speculation),
  ``provider_error`` (``error``), ``tool_called`` (``name``, ``is_error``),
  ``generation_cancelled`` (``reason``; ``t_ms`` = when the cancel was read),
  ``speculation_shed`` (``reason: "queue_lag"``, ``lag_ms``: a held request
  taken too late, dropped unrun; ``actors/llm/shed.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import structlog
import trio

from bus.base import Bus, BusError, Fields
from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.messages import Fact
from bus.retry import Backoff

log = structlog.get_logger()

FACT_QUEUE = 4096  # facts a FactPublisher holds before it starts dropping
FACT_BATCH = 256  # facts written per append_many


def wall_ms() -> float:
    """Wall-clock milliseconds, the time base of every fact's ``t_ms``."""
    return round(time.time() * 1000, 3)


def fact_envelope(
    name: str,
    *,
    call: str,
    turn: int = 0,
    session: str = "",
    gateway: str = "",
    seq: int = 0,
    t_ms: float | None = None,
    extra: Mapping[str, Any] | None = None,
    **fields: Any,
) -> Envelope:
    """The envelope of one fact; ``t_ms`` defaults to now.

    ``extra``: more fields, for names the keywords cannot carry (a tool's
    ``name``, which would be this function's own ``name``).
    """
    fact = Fact(name, wall_ms() if t_ms is None else t_ms, {**fields, **(extra or {})})
    return Envelope(
        kind=Kind.EVENT,
        call=call,
        body=fact.to_body(),
        session=session,
        gateway=gateway,
        seq=seq,
        turn=turn,
    )


def fact_item(keys: Keys, name: str, **kwargs: Any) -> tuple[str, Fields]:
    """A fact as an ``append_many`` item for its call's event shard (see ``fact_envelope``)."""
    env = fact_envelope(name, **kwargs)
    return keys.events_for(env.call), env.encode()


class FactPublisher:
    """Fire-and-forget facts: ``emit`` queues (never blocks), ``serve`` writes.

    Run ``serve`` in a nursery for as long as facts may be emitted. Facts
    emitted while the bus is down wait in the queue until it overflows;
    overflowing facts, and a batch the bus refused or lost, are dropped and
    counted (``dropped``). ``serve`` never raises a bus error.
    """

    def __init__(self, bus: Bus, keys: Keys, *, capacity: int = FACT_QUEUE) -> None:
        self.bus = bus
        self.keys = keys
        self.dropped = 0
        self.published = 0
        self._send, self._receive = trio.open_memory_channel[tuple[str, Fields]](max(1, capacity))
        self._backoff = Backoff("facts_publish")

    def emit(self, name: str, **kwargs: Any) -> None:
        """Queue one fact (``fact_envelope`` arguments); drop it if the queue is full."""
        try:
            env = fact_envelope(name, **kwargs)
            self._send.send_nowait((self.keys.events_for(env.call), env.encode()))
        except trio.WouldBlock:
            self.dropped += 1
            if self.dropped == 1 or math.log2(self.dropped).is_integer():
                log.warning("facts_dropped", dropped=self.dropped, fact=name)
        except trio.ClosedResourceError:
            self.dropped += 1

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write queued facts in batches until cancelled."""
        task_status.started()
        while True:
            batch = [await self._receive.receive()]
            while len(batch) < FACT_BATCH:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                await self.bus.append_many(batch)
            except BusError as exc:
                # Facts are shed first: a refused or lost batch is dropped and
                # counted, never retried ahead of the callers' own events, and
                # never a reason to stop (a gateway that stopped here would drop
                # every call). Retriable failures back off and mark the outage.
                self.dropped += len(batch)
                if exc.retriable:
                    await self._backoff.failed(exc)
                else:
                    log.error("facts_refused", count=len(batch), error=repr(exc))
                    await trio.sleep(self._backoff.cap_s)
                continue
            self._backoff.succeeded()
            self.published += len(batch)
