"""The key/value half of ``MemoryBus``: entries with TTLs, fenced leases, liveness.

``MemoryBus`` (:mod:`bus.memory`) is this plus streams and consumer groups.
Semantics are those of ``bus.base.Bus``: a key's TTL, a lease's expiry and a
heartbeat's lifetime run on ``trio.current_time()`` (tests drive them with
``autojump_clock``); a fresh lease acquisition bumps the name's epoch, so a
write fenced by ``set_if_lease`` from an older holder is refused. Every
operation starts with a checkpoint and fails once the bus is closed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import trio

from bus.base import BusError, CommandError, Lease

__all__ = ["MemoryKeyValue"]


@dataclass(slots=True)
class LeaseState:
    """Who holds a lease, and until when (trio clock, seconds)."""

    owner: str
    expires_at: float


class MemoryKeyValue:
    """Key/value entries, leases and the liveness registry, in process."""

    def __init__(self) -> None:
        self._kv: dict[str, tuple[str, float]] = {}  # value, expires_at (inf: never)
        self._leases: dict[str, LeaseState] = {}
        self._epochs: dict[str, int] = {}
        self._members: dict[str, dict[str, float]] = {}  # registry -> member -> expires_at
        self._closed = False

    async def _enter(self) -> None:
        # A checkpoint first, so every operation is a cancellation point that
        # has no effect when cancelled, as a Redis command that was never sent.
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise BusError("bus is closed")

    # -- key/value ---------------------------------------------------------

    async def get(self, key: str) -> str | None:
        """Read a key/value entry."""
        await self._enter()
        item = self._kv.get(key)
        if item is None:
            return None
        value, expires_at = item
        if trio.current_time() >= expires_at:
            del self._kv[key]
            return None
        return value

    async def set(
        self, key: str, value: str, *, ttl_ms: int | None = None, nx: bool = False
    ) -> bool:
        """Write a key/value entry, optionally expiring; with ``nx`` only if absent."""
        await self._enter()
        if ttl_ms is not None and ttl_ms <= 0:
            raise CommandError("ERR invalid expire time in 'set' command")
        now = trio.current_time()
        if nx:
            held = self._kv.get(key)
            if held is not None and now < held[1]:
                return False
        expires_at = math.inf if ttl_ms is None else now + ttl_ms / 1000
        self._kv[key] = (value, expires_at)
        return True

    async def delete(self, key: str) -> None:
        """Remove a key/value entry."""
        await self._enter()
        self._kv.pop(key, None)

    # -- leases ------------------------------------------------------------

    def _live_lease(self, name: str) -> LeaseState | None:
        state = self._leases.get(name)
        if state is not None and trio.current_time() >= state.expires_at:
            del self._leases[name]
            return None
        return state

    async def acquire_lease(self, name: str, owner: str, ttl_ms: int) -> Lease | None:
        """Take the lease if free (or already ours); None when someone else holds it.

        A fresh acquisition bumps the epoch; re-acquiring a lease we still hold
        extends it and keeps the epoch.
        """
        await self._enter()
        if ttl_ms <= 0:
            raise CommandError("ERR invalid expire time")
        expires_at = trio.current_time() + ttl_ms / 1000
        state = self._live_lease(name)
        if state is not None:
            if state.owner != owner:
                return None
            state.expires_at = expires_at
            return Lease(name, owner, self._epochs[name])
        epoch = self._epochs.get(name, 0) + 1
        self._epochs[name] = epoch
        self._leases[name] = LeaseState(owner, expires_at)
        return Lease(name, owner, epoch)

    def _holds(self, lease: Lease) -> LeaseState | None:
        state = self._live_lease(lease.name)
        if state is None or state.owner != lease.owner:
            return None
        if self._epochs.get(lease.name) != lease.epoch:
            return None
        return state

    async def renew_lease(self, lease: Lease, ttl_ms: int) -> bool:
        """Extend the lease; False when it was lost (expired and maybe taken)."""
        await self._enter()
        if ttl_ms <= 0:
            raise CommandError("ERR invalid expire time")
        state = self._holds(lease)
        if state is None:
            return False
        state.expires_at = trio.current_time() + ttl_ms / 1000
        return True

    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up if we still hold it."""
        await self._enter()
        if self._holds(lease) is not None:
            del self._leases[lease.name]

    async def set_if_lease(
        self, key: str, value: str, lease: Lease, *, ttl_ms: int | None = None
    ) -> bool:
        """Write ``key`` only while ``lease`` is held (owner and epoch); False: not written."""
        await self._enter()
        if ttl_ms is not None and ttl_ms <= 0:
            raise CommandError("ERR invalid expire time in 'set' command")
        if self._holds(lease) is None:
            return False
        expires_at = math.inf if ttl_ms is None else trio.current_time() + ttl_ms / 1000
        self._kv[key] = (value, expires_at)
        return True

    # -- liveness registry -------------------------------------------------

    async def heartbeat(self, group: str, member: str, ttl_ms: int) -> None:
        """Mark ``member`` of registry ``group`` alive for the next ``ttl_ms``."""
        await self._enter()
        if ttl_ms <= 0:
            raise CommandError("ERR invalid expire time")
        self._members.setdefault(group, {})[member] = trio.current_time() + ttl_ms / 1000

    async def live_members(self, group: str) -> list[str]:
        """Members of registry ``group`` whose heartbeat has not expired, sorted."""
        await self._enter()
        registry = self._members.get(group, {})
        now = trio.current_time()
        for member in [m for m, expires_at in registry.items() if expires_at <= now]:
            del registry[member]
        return sorted(registry)

    async def leave(self, group: str, member: str) -> None:
        """Remove ``member`` from registry ``group`` at once (graceful exit)."""
        await self._enter()
        self._members.get(group, {}).pop(member, None)
