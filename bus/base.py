"""The ``Bus`` protocol: what every part of Switchboard may ask of the bus.

Delivery contract (both implementations honour it, ``tests/bus`` proves it):

- ``append`` returns the entry id; ids are ``"<ms>-<seq>"`` and strictly
  increase within a stream. Every append trims the stream by age
  (``MINID ~ now - retention``): entries older than the retention may vanish.
- ``read_group`` hands each entry of a stream to exactly one consumer of a
  group. An entry handed out stays *pending* for that consumer until
  ``ack``. Reading with id ``"0"`` re-reads the caller's own pending entries
  (each re-read bumps the delivery count); ``">"`` reads new entries only.
- ``claim_idle`` moves entries pending longer than ``min_idle_ms`` (on any
  consumer) to the caller: how a dead consumer's work is taken over.
- ``touch`` resets the idle time of entries pending on the calling consumer
  without counting a delivery: a long-running handler calls it so its entry
  is not taken by ``claim_idle``. Ids not pending on that consumer are ignored.
- Delivery is therefore at least once; handlers must be idempotent.
- ``trim`` bounds a stream without appending to it: by age (the retention)
  and by size (``max_len``; Redis' ``~`` may keep up to one node of entries
  more). Entries trimmed while pending simply vanish from the group.
- ``expire`` gives a key (a stream too) a time to live: a stream nobody
  refreshes disappears, e.g. the stream of a gateway that stopped.
- ``read`` is a plain tail read with no group: every reader sees every entry.
- ``get``/``set``/``delete`` are a small key/value store with optional TTL.
  ``set(..., nx=True)`` writes only when the key is absent (``SET NX``) and
  says whether it wrote, atomically: how one worker claims a piece of work
  (a tool use, ``actors/tools/registry.py``) against every other.
- Leases: ``acquire_lease`` is ``SET NX PX`` plus a fencing epoch that grows
  on every acquisition; ``renew_lease``/``release_lease`` only act for the
  current holder (same owner *and* epoch).
- Fencing: ``set_if_lease`` writes a key only while the given lease is still
  held with that owner and epoch, atomically with the check. A stalled old
  owner's late writes therefore fail (``False``) instead of overwriting the
  new owner's state. Keep the key in the lease's hash tag (``bus.keys`` does
  for call states) so one script can check and write on a cluster.
- Liveness registry: ``heartbeat`` marks ``member`` of a registry alive for
  ``ttl_ms``; ``live_members`` drops expired members and returns the live
  ones sorted by name; ``leave`` removes a member at once (graceful exit).
  The registry name comes from ``bus.keys.Keys.members``.

Errors::

    BusError
    +-- ConnectionLost      (retriable: the command may or may not have run)
    +-- CommandError        (the server refused the command; retriable only when
    |                        the refusal is about the server's state, not the
    |                        command: OOM, READONLY, LOADING, BUSY, MASTERDOWN,
    |                        TRYAGAIN, CLUSTERDOWN, NOREPLICAS; those commands
    |                        did not run)
    +-- MalformedEntry      (an entry that is not a Switchboard envelope)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

Fields = Mapping[str, str]


class BusError(Exception):
    """Base of every bus error."""

    retriable: bool = False


class ConnectionLost(BusError):
    """The connection to the bus broke; the command's effect is unknown."""

    retriable = True


# Error-reply prefixes (the first word of Redis's reply) that describe the
# server's state rather than the command: the same command works once the
# server is well again (memory freed, a replica promoted, the data loaded, a
# script finished). Redis refuses these before running the command. ``BUSY``
# is matched as a whole word: ``BUSYGROUP`` (the group exists) and ``BUSYKEY``
# are answers, not weather.
WEATHER_REPLIES = frozenset(
    {"OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS"}
)


class CommandError(BusError):
    """The bus refused a command (wrong type, bad id, out of memory, ...).

    ``retriable`` is true when the refusal is one of ``WEATHER_REPLIES``: the
    server is unwell (full, read-only, loading, busy) and the command did not
    run, so the caller backs off and tries again instead of giving up.
    """

    @property
    def retriable(self) -> bool:  # type: ignore[override]
        text = str(self)
        return text[: text.find(" ") if " " in text else len(text)] in WEATHER_REPLIES


class MalformedEntry(BusError):
    """An entry on a Switchboard stream that does not decode as an envelope."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry as read from the bus."""

    stream: str
    id: str
    fields: dict[str, str]
    deliveries: int = 1  # how many times this entry was handed out (group reads)


@dataclass(frozen=True, slots=True)
class Lease:
    """A held lease: ``epoch`` is the fencing token stamped on writes."""

    name: str
    owner: str
    epoch: int


def parse_id(entry_id: str) -> tuple[int, int]:
    """Split a stream id into its (milliseconds, sequence) parts for ordering."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Bus(Protocol):
    """The operations the rest of Switchboard uses. See the module docstring."""

    async def append(self, stream: str, fields: Fields) -> str:
        """Append one entry (trimming by retention); return its id."""
        ...

    async def append_replicated(self, stream: str, fields: Fields) -> str:
        """``append``, confirmed by a replica where the bus has replicas.

        ``ConnectionLost`` (retriable) when no replica confirmed it in time:
        the entry may be lost in a failover (``bus.retry.append_once`` looks).
        """
        ...

    async def append_many(self, items: Sequence[tuple[str, Fields]]) -> list[str]:
        """Append several entries in one round trip (a pipeline); ids in order."""
        ...

    async def ensure_group(self, stream: str, group: str, start: str = "0") -> None:
        """Create the consumer group (and the stream) if missing; idempotent."""
        ...

    async def trim(self, stream: str, *, max_len: int) -> int:
        """Drop entries older than the retention, then all but about ``max_len``; how many went."""
        ...

    async def expire(self, key: str, ttl_ms: int) -> None:
        """Delete ``key`` (any type) ``ttl_ms`` from now unless refreshed; no-op if missing."""
        ...

    async def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        start: str = ">",
        count: int = 100,
        block_ms: int | None = None,
    ) -> list[Entry]:
        """Read as ``consumer`` of ``group``; ``start="0"`` re-reads own pending.

        ``block_ms`` None returns at once; otherwise waits up to that long for
        new entries (only meaningful with ``start=">"``).
        """
        ...

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge entries; returns how many were pending."""
        ...

    async def claim_idle(
        self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100
    ) -> list[Entry]:
        """Take over entries pending (on any consumer) for at least ``min_idle_ms``."""
        ...

    async def touch(self, stream: str, group: str, consumer: str, ids: Sequence[str]) -> None:
        """Reset the idle time of ``ids`` pending on ``consumer``; deliveries unchanged.

        Entries not pending on ``consumer`` (acked, or owned by another) are left alone.
        """
        ...

    async def pending_count(self, stream: str, group: str) -> int:
        """How many entries of the group are delivered but not acked."""
        ...

    async def group_lag(self, stream: str, group: str) -> int | None:
        """How many entries of ``stream`` the group has not been delivered yet.

        The consumer-group lag (Redis 7's ``XINFO GROUPS`` ``lag``): entries
        appended after the group's last delivered id. ``None`` when the bus
        cannot tell (Redis after an ``XDEL`` inside the undelivered range).
        A missing group is a :class:`CommandError`, as for ``pending_count``.
        """
        ...

    async def read(
        self, stream: str, after: str, *, count: int = 100, block_ms: int | None = None
    ) -> list[Entry]:
        """Plain tail read of entries with id > ``after`` (``"$"``: only new ones)."""
        ...

    async def last_id(self, stream: str) -> str:
        """The id of the newest entry, ``"0-0"`` when the stream is empty or missing."""
        ...

    async def range(
        self, stream: str, start: str = "-", end: str = "+", count: int | None = None
    ) -> list[Entry]:
        """Entries between two ids inclusive, oldest first (replay)."""
        ...

    async def get(self, key: str) -> str | None:
        """Read a key/value entry."""
        ...

    async def set(
        self, key: str, value: str, *, ttl_ms: int | None = None, nx: bool = False
    ) -> bool:
        """Write a key/value entry, optionally expiring; True when written.

        With ``nx`` the write happens only if the key is absent (or expired),
        atomically with that check; False: someone else's value is there.
        Without ``nx`` it always writes (and clears any earlier TTL).
        """
        ...

    async def delete(self, key: str) -> None:
        """Remove a key/value entry."""
        ...

    async def acquire_lease(self, name: str, owner: str, ttl_ms: int) -> Lease | None:
        """Take the lease if free (or already ours); None when someone else holds it."""
        ...

    async def renew_lease(self, lease: Lease, ttl_ms: int) -> bool:
        """Extend the lease; False when it was lost (expired and maybe taken)."""
        ...

    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up if we still hold it."""
        ...

    async def set_if_lease(
        self, key: str, value: str, lease: Lease, *, ttl_ms: int | None = None
    ) -> bool:
        """Write ``key`` only while ``lease`` is held (owner and epoch); False: not written."""
        ...

    async def heartbeat(self, group: str, member: str, ttl_ms: int) -> None:
        """Mark ``member`` of registry ``group`` alive for the next ``ttl_ms``."""
        ...

    async def live_members(self, group: str) -> list[str]:
        """Members of registry ``group`` whose heartbeat has not expired, sorted."""
        ...

    async def leave(self, group: str, member: str) -> None:
        """Remove ``member`` from registry ``group`` at once (graceful exit)."""
        ...

    async def aclose(self) -> None:
        """Close every connection; idempotent."""
        ...
