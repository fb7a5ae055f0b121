"""The actor runtime: loops, acks, retries, dead letters and log context.

An ``Actor`` says what it reads (``streams()`` and its consumer ``group``) and
how to apply one entry (``handle``). ``serve_actor`` owns everything else.

Delivery, as the runtime implements it on top of ``bus.base``:

- On start, each stream loop first re-reads the consumer's *own* pending
  entries (``start="0"``): work a previous incarnation of this consumer took
  but never acked. Then it reads new entries (``">"``).
- An entry is acked only after its handler returned. A handler that raises is
  retried (``max_attempts`` in all, with a short backoff); if it still fails,
  the entry goes to the dead-letter stream with the error text and its original
  fields, and is then acked. A malformed entry (not an envelope) goes to the
  dead-letter stream at once. Nothing is dropped silently. A handler that
  fails with a retriable bus error (or a group of only those) is retried with
  backoff for as long as the outage lasts, using up no attempt: a Redis
  restart or a cluster failover is not the entry's fault.
- Bounded work per entry (opt-in, the conversation): a handler still
  running after ``Actor.handler_deadline_s`` is cancelled and the attempt
  fails (``handler_deadline_exceeded``); an entry delivered more than
  ``Actor.max_deliveries`` times (the delivery count of the group's pending
  list: its workers died, stalled or lost their lease while handling it) is
  dead-lettered without being handled again (``entry_delivered_too_often``).
  Whenever the runtime dead-letters an entry it then calls
  ``Actor.dead_lettered`` (the conversation: the caller hears an apology).
- Cancellation stops the loops where they are: an entry whose handler did not
  finish stays pending and is delivered again (to this consumer on restart, or
  to another one that claims it). Handlers are therefore idempotent.
- ``concurrency == 1`` handles the entries of one stream one after the other
  (per-stream order). With ``concurrency > 1`` up to that many handlers run at
  once per stream, and each entry is acked when its own handler finishes.

Writes: ``serve_actor`` attaches the bus to the actor (``actor.bus``) before
any loop starts, so handlers publish through ``self.bus``.

Partitioned actors (``partitioned = True``, the conversation) are served
differently: instead of one loop per stream, a ``PartitionManager``
(``actors.partitions``) takes a fair share of the partitions by lease and
runs one loop per *held* partition, reading ``partition_stream(p)`` as
consumer ``p{p}`` (so a new owner inherits the pending list). The handler
gets the partition's lease from ``current_lease()``: it stamps
``lease.epoch`` on what it publishes and persists with
``bus.set_if_lease``; if that returns False it calls ``await lease_lost()``,
which cancels the partition's work at once (nothing acked). ``consumer`` is
then the worker's member name in the liveness registry; ``lease_ttl_ms``
sets the lease TTL. A partitioned actor may also run a side task per held
partition (``partition_task``; the conversation's timers): it starts before
the partition's first entry is handled and is cancelled with the partition.

Stopping: cancelling ``serve_actor`` stops everything where it is (a
partitioned actor's leases are abandoned and expire, as if it had died).
Setting the ``stop`` event is the graceful path: the actor stops taking
entries and lets the ones in flight finish (at most ``drain_timeout_s``); a
partitioned actor then releases its leases and leaves the registry; then
``serve_actor`` returns.

Reclaim (opt-in, plain actors: ``reclaim = Reclaim(idle_ms, interval_s)``,
the LLM actor): every worker looks for entries pending longer than
``idle_ms`` on any consumer of its group (``Bus.claim_idle``, once per
``interval_s``) and handles them as its own, like any entry it read
(retries, dead letter, ack). While a handler runs, the runtime ``touch``es
its entry every third of ``idle_ms``, so only a dead or stuck worker loses
an entry; entries this worker is handling are never taken over by itself.
Without reclaim, a consumer that restarts under the same name picks its own
pending entries up.

Background: ``Actor.background`` runs as long as the actor, started with
``nursery.start`` before any stream is read: an actor whose side loop must
be ready first (the LLM actor's control tail) calls ``task_status.started()``
once it is.

The dead-letter stream is ``dead_letter_stream(actor.keys)``, i.e.
``"<namespace>:{dead}"``: the actor carries the ``Keys`` of its config, so the
composition root needs nothing beyond the actor to run it. Each record is the
entry's own fields plus ``dead.*`` fields saying where it came from and why
(``dead_letter_fields``); an actor that gives up on an entry itself writes the
same record with ``Actor.dead_letter``. A handler that raises
``MalformedEntry`` (its body is not the kind's message) is dead-lettered at
once: retrying cannot fix the entry.
"""

from __future__ import annotations

from actors.partitions import current_lease, lease_lost
from actors.runtime.actor import Actor, Reclaim, dead_letter_fields, dead_letter_stream
from actors.runtime.serve import serve_actor

__all__ = [
    "Actor",
    "Reclaim",
    "current_lease",
    "dead_letter_fields",
    "dead_letter_stream",
    "lease_lost",
    "serve_actor",
]
