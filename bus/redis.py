"""``RedisBus``: the ``Bus`` protocol on Redis Streams (Redis >= 7.0).

Built on ``bus.resp.RedisClient``. How each operation maps to Redis:

- ``append``: ``XADD key MINID ~ <now - retention> * k v ...``. ``~`` trims
  whole internal nodes only (up to 100 entries each), so a few entries older
  than the retention may remain; the contract only says they *may* vanish.
- ``append_replicated``: the same XADD, then ``WAIT`` for a replica on a
  cluster master that has one (:mod:`bus.replicated`, ``wait``).
- ``append_many``: the same XADDs in one pipeline (one write, N replies).
- ``ensure_group``: ``XGROUP CREATE ... MKSTREAM``; ``BUSYGROUP`` is success.
- ``read_group`` with ``">"``: ``XREADGROUP``; with ``BLOCK`` it runs on a
  connection of its own (``RedisClient.execute_blocking``).
- ``read_group`` with an id (``"0"``: own pending): a Lua script that lists
  the caller's pending ids (``XPENDING ... consumer``) and ``XCLAIM``s them to
  the caller again, atomically. Plain ``XREADGROUP 0`` would neither count
  the re-read as a delivery nor reset the idle time; the script does both,
  as the contract (and ``MemoryBus``) say, and returns true delivery counts.
- ``claim_idle``: ``XAUTOCLAIM`` steps (each a small script that also reads
  the new delivery counts) looped from Python until the cursor wraps or
  ``count`` entries were claimed, so no single script scans a whole PEL.
- Pending entries whose stream entry was trimmed are dropped from the PEL
  (Redis 7 does this in ``XCLAIM``/``XAUTOCLAIM``; the scripts ``XACK`` them
  for older servers), logged, and never returned.
- ``read``: ``XREAD``; ``last_id``: ``XREVRANGE + - COUNT 1``; ``range``:
  ``XRANGE``; ``get``/``set``/``delete``: ``GET``/``SET [PX] [NX]``/``DEL``.
- Leases: the lease key holds the owner (``SET NX PX``); the fencing epoch
  is ``INCR``-ed on ``<name>:epoch`` in the same script. Keep a hash tag in
  ``name`` (``bus.keys.Keys.lease`` does) so both keys share a cluster slot.
  Renew and release compare owner *and* epoch, so a stale ``Lease`` from an
  earlier acquisition by the same owner cannot act.
- ``set_if_lease``: one script checks owner and epoch and ``SET``s the key;
  the key must share the lease's hash tag (call states do).
- ``touch``: a script keeps only the ids pending on the caller (``XPENDING``)
  and ``XCLAIM``s them to it again with min-idle 0 and ``JUSTID``, which
  resets their idle time without bumping the delivery count.
- Liveness registry: a sorted set of members scored by expiry time in
  milliseconds of the *server's* clock (``TIME`` inside the scripts), so
  workers with skewed clocks agree on who is alive. ``live_members`` removes
  expired members (``ZREMRANGEBYSCORE``) and returns the rest.

The scripts live in :mod:`bus.redis_scripts`; they are sent with ``EVALSHA``
and fall back to ``EVAL`` after a server restart (``NOSCRIPT``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from itertools import chain

import structlog

from bus import redis_replies as replies
from bus import redis_scripts as scripts
from bus.base import CommandError, Entry, Fields, Lease
from bus.cluster import CommandClient, open_redis_client
from bus.envelope import now_ms
from bus.replicated import WaitPolicy, append_replicated
from bus.resp import Arg, RedisClient

log = structlog.get_logger()


DEFAULT_RETENTION_MS = 24 * 3600 * 1000


# group_lag counts undelivered entries itself (when Redis does not) up to this many.
LAG_COUNT_CAP = 10_000


class RedisBus:
    """``bus.base.Bus`` on Redis Streams. Owns its client: ``aclose`` closes it.

    Construction does no I/O; the first command connects.
    """

    def __init__(
        self,
        client: CommandClient,
        retention_ms: int = DEFAULT_RETENTION_MS,
        *,
        clock_ms: Callable[[], int] = now_ms,
        wait: WaitPolicy | None = None,
    ) -> None:
        self.client = client
        self.wait = wait if wait is not None else WaitPolicy()
        self.retention_ms = retention_ms
        self._clock_ms = clock_ms

    @classmethod
    def from_url(cls, url: str, retention_ms: int = DEFAULT_RETENTION_MS) -> RedisBus:
        """A bus on one node at ``url`` (no I/O yet); ``open_redis_bus`` also detects a cluster."""
        return cls(RedisClient.from_url(url), retention_ms)

    # -- streams -----------------------------------------------------------

    def _min_id(self) -> int:
        return max(self._clock_ms() - self.retention_ms, 0)

    def _xadd(self, stream: str, fields: Fields, min_id: int) -> list[Arg]:
        if not fields:
            raise CommandError("ERR wrong number of arguments for 'xadd' command")
        cmd: list[Arg] = ["XADD", stream, "MINID", "~", min_id, "*"]
        cmd.extend(chain.from_iterable(fields.items()))
        return cmd

    async def append(self, stream: str, fields: Fields) -> str:
        """Append one entry (trimming by retention); return its id."""
        entry_id: str = await self.client.execute(*self._xadd(stream, fields, self._min_id()))
        return entry_id

    async def append_replicated(self, stream: str, fields: Fields) -> str:
        """``append`` confirmed by a replica (``XADD`` + ``WAIT``; :mod:`bus.replicated`)."""
        return await append_replicated(
            self.client, self._xadd(stream, fields, self._min_id()), self.wait
        )

    async def append_many(self, items: Sequence[tuple[str, Fields]]) -> list[str]:
        """Append several entries in one pipeline; ids in order."""
        # One trim bound for the whole batch: the clock read per entry was a
        # measurable share of a 100-entry pipeline.
        min_id = self._min_id()
        commands = [self._xadd(stream, fields, min_id) for stream, fields in items]
        return [str(r) for r in await self.client.pipeline(commands)]

    async def append_with_id(self, stream: str, entry_id: str, fields: Fields) -> str:
        """Append with an explicit id (imports and tests); no trimming."""
        cmd: list[Arg] = ["XADD", stream, entry_id]
        for k, v in fields.items():
            cmd += (k, v)
        result: str = await self.client.execute(*cmd)
        return result

    async def trim(self, stream: str, *, max_len: int) -> int:
        """``XTRIM MINID ~`` (retention) then ``XTRIM MAXLEN ~ max_len``; entries removed."""
        replies = await self.client.pipeline(
            [
                ("XTRIM", stream, "MINID", "~", self._min_id()),
                ("XTRIM", stream, "MAXLEN", "~", max_len),
            ]
        )
        return sum(int(r) for r in replies)

    async def expire(self, key: str, ttl_ms: int) -> None:
        """``PEXPIRE key ttl_ms``."""
        await self.client.execute("PEXPIRE", key, ttl_ms)

    async def ensure_group(self, stream: str, group: str, start: str = "0") -> None:
        """Create the consumer group (and the stream) if missing; idempotent."""
        try:
            await self.client.execute("XGROUP", "CREATE", stream, group, start, "MKSTREAM")
        except CommandError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise

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
        """Read as ``consumer`` of ``group``; ``start="0"`` re-reads own pending."""
        if start != ">":
            out, trimmed = await scripts.REREAD_PENDING.run(
                self.client, [stream], [group, consumer, start, count]
            )
            replies.log_trimmed(stream, group, trimmed)
            return replies.scripted_entries(stream, out)
        cmd: list[Arg] = ["XREADGROUP", "GROUP", group, consumer, "COUNT", count]
        if block_ms is None:
            reply = await self.client.execute(*cmd, "STREAMS", stream, ">")
        else:
            reply = await self.client.execute_blocking(
                *cmd, "BLOCK", block_ms, "STREAMS", stream, ">"
            )
        return replies.stream_reply(stream, reply)

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge entries; returns how many were pending."""
        if not ids:
            return 0
        done: int = await self.client.execute("XACK", stream, group, *ids)
        return done

    async def claim_idle(
        self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100
    ) -> list[Entry]:
        """Take over entries pending (on any consumer) for at least ``min_idle_ms``."""
        out: list[Entry] = []
        cursor = "0-0"
        while len(out) < count:
            cursor, raw, trimmed = await scripts.AUTOCLAIM_STEP.run(
                self.client, [stream], [group, consumer, min_idle_ms, cursor, count - len(out)]
            )
            replies.log_trimmed(stream, group, trimmed)
            out += replies.scripted_entries(stream, raw)
            if cursor == "0-0":
                break
        return out

    async def touch(self, stream: str, group: str, consumer: str, ids: Sequence[str]) -> None:
        """Reset the idle time of ``ids`` pending on ``consumer``; deliveries unchanged."""
        if not ids:
            # Still check the group exists, as MemoryBus does.
            await self.client.execute("XPENDING", stream, group)
            return
        await scripts.TOUCH.run(self.client, [stream], [group, consumer, *ids])

    async def pending_count(self, stream: str, group: str) -> int:
        """How many entries of the group are delivered but not acked."""
        reply = await self.client.execute("XPENDING", stream, group)
        return int(reply[0])

    async def group_lag(self, stream: str, group: str) -> int | None:
        """How many entries of ``stream`` the group has not been delivered yet.

        ``XINFO GROUPS`` reports ``lag`` from Redis 7.0 on (entries added minus
        entries read). It is nil when Redis cannot tell (a group created at
        ``$`` after entries were added, an ``XDEL`` in the range) and missing
        before 7.0; then the entries after the group's last delivered id are
        counted, up to ``LAG_COUNT_CAP`` (a lag that large is alarming
        enough). None only if even that fails to parse.
        """
        reply = await self.client.execute("XINFO", "GROUPS", stream)
        for info in reply:
            fields = replies.info_fields(info)
            if fields.get("name") != group:
                continue
            lag = fields.get("lag")
            if lag is not None:
                return int(lag)
            last = fields.get("last-delivered-id")
            if not isinstance(last, str):
                return None
            after = await self.client.execute(
                "XRANGE", stream, f"({last}", "+", "COUNT", LAG_COUNT_CAP
            )
            return len(after)
        raise CommandError(f"NOGROUP No such consumer group '{group}' for key '{stream}'")

    async def read(
        self, stream: str, after: str, *, count: int = 100, block_ms: int | None = None
    ) -> list[Entry]:
        """Plain tail read of entries with id > ``after`` (``"$"``: only new ones)."""
        if block_ms is None:
            reply = await self.client.execute("XREAD", "COUNT", count, "STREAMS", stream, after)
        else:
            reply = await self.client.execute_blocking(
                "XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", stream, after
            )
        return replies.stream_reply(stream, reply)

    async def last_id(self, stream: str) -> str:
        """The id of the newest entry, ``"0-0"`` when the stream is empty or missing."""
        reply = await self.client.execute("XREVRANGE", stream, "+", "-", "COUNT", 1)
        return str(reply[0][0]) if reply else "0-0"

    async def range(
        self, stream: str, start: str = "-", end: str = "+", count: int | None = None
    ) -> list[Entry]:
        """Entries between two ids inclusive (``(`` makes a bound exclusive)."""
        cmd: list[Arg] = ["XRANGE", stream, start, end]
        if count is not None:
            cmd += ("COUNT", count)
        return replies.entries(stream, await self.client.execute(*cmd))

    # -- key/value ---------------------------------------------------------

    async def get(self, key: str) -> str | None:
        """Read a key/value entry."""
        value: str | None = await self.client.execute("GET", key)
        return value

    async def set(
        self, key: str, value: str, *, ttl_ms: int | None = None, nx: bool = False
    ) -> bool:
        """Write a key/value entry, optionally expiring; with ``nx`` only if absent."""
        args: list[str | int] = ["SET", key, value]
        if ttl_ms is not None:
            args += ["PX", ttl_ms]
        if nx:
            args.append("NX")
        # SET answers OK, or nil when NX found the key.
        return await self.client.execute(*args) is not None

    async def delete(self, key: str) -> None:
        """Remove a key/value entry."""
        await self.client.execute("DEL", key)

    # -- leases ------------------------------------------------------------

    @staticmethod
    def _lease_keys(name: str) -> list[str]:
        return [name, f"{name}:epoch"]

    async def acquire_lease(self, name: str, owner: str, ttl_ms: int) -> Lease | None:
        """Take the lease if free (or already ours); None when someone else holds it.

        A fresh acquisition bumps the epoch; re-acquiring a lease we still hold
        extends it and keeps the epoch.
        """
        if ttl_ms <= 0:
            raise CommandError("ERR invalid expire time")
        epoch = await scripts.ACQUIRE.run(self.client, self._lease_keys(name), [owner, ttl_ms])
        return None if epoch is None else Lease(name, owner, int(epoch))

    async def renew_lease(self, lease: Lease, ttl_ms: int) -> bool:
        """Extend the lease; False when it was lost (expired and maybe taken)."""
        if ttl_ms <= 0:
            raise CommandError("ERR invalid expire time")
        done = await scripts.RENEW.run(
            self.client, self._lease_keys(lease.name), [lease.owner, lease.epoch, ttl_ms]
        )
        return bool(done)

    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up if we still hold it."""
        await scripts.RELEASE.run(
            self.client, self._lease_keys(lease.name), [lease.owner, lease.epoch]
        )

    async def set_if_lease(
        self, key: str, value: str, lease: Lease, *, ttl_ms: int | None = None
    ) -> bool:
        """Write ``key`` only while ``lease`` is held (owner and epoch); False: not written."""
        if ttl_ms is not None and ttl_ms <= 0:
            raise CommandError("ERR invalid expire time in 'set' command")
        done = await scripts.SET_IF_LEASE.run(
            self.client,
            [*self._lease_keys(lease.name), key],
            [lease.owner, lease.epoch, value, "" if ttl_ms is None else ttl_ms],
        )
        return bool(done)

    # -- liveness registry -------------------------------------------------

    async def heartbeat(self, group: str, member: str, ttl_ms: int) -> None:
        """Mark ``member`` of registry ``group`` alive for the next ``ttl_ms``."""
        if ttl_ms <= 0:
            raise CommandError("ERR invalid expire time")
        await scripts.HEARTBEAT.run(self.client, [group], [member, ttl_ms])

    async def live_members(self, group: str) -> list[str]:
        """Members of registry ``group`` whose heartbeat has not expired, sorted."""
        members = await scripts.LIVE_MEMBERS.run(self.client, [group], [])
        return sorted(str(m) for m in members)

    async def leave(self, group: str, member: str) -> None:
        """Remove ``member`` from registry ``group`` at once (graceful exit)."""
        await self.client.execute("ZREM", group, member)

    async def aclose(self) -> None:
        """Close the client and every connection; idempotent."""
        await self.client.aclose()


@contextlib.asynccontextmanager
async def open_redis_bus(
    url: str, *, retention_ms: int = DEFAULT_RETENTION_MS, wait: WaitPolicy | None = None
) -> AsyncIterator[RedisBus]:
    """A ``RedisBus`` for one node or a cluster (detected), closed on exit.

    Connects on entry (fail fast: a wrong URL, password or certificate
    raises here).
    """
    bus = RedisBus(await open_redis_client(url), retention_ms, wait=wait)
    try:
        yield bus
    finally:
        await bus.aclose()
