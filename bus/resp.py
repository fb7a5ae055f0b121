"""A small Trio-native Redis client on ``hiredis``: the pool and auto-pipelining.

One connection (a socket, its parser, the TLS handshake) is
:mod:`bus.connection`; the URL and TLS options are :mod:`bus.redis_url`; both
are re-exported here, the public face. Rules:

1. One request (or one pipeline: one write, N reads) in flight per
   connection. Idle connections wait in a small pool.
1b. Automatic pipelining: a non-blocking command issued while the client
   is already busy is queued, and a flusher (a Trio system task, at most
   ``max_connections`` of them) sends everything queued as one pipeline on
   one connection. Under load, N concurrent callers cost one write and one
   read instead of N of each. An idle client skips the queue: the caller
   runs its command itself (no extra task hop on the quiet path).
2. THE RULE: a connection interrupted anywhere between the first byte sent
   and the last reply byte read (``Cancelled``, a timeout, an I/O error, any
   ``BaseException``) is closed and never reused. Its reply stream is unknown,
   and a reused connection would hand one command's reply to the next.
   A queued command's caller that is cancelled never interrupts anything:
   before its batch is taken the command is withdrawn (never sent); after,
   the flusher reads its reply and drops it (the command may have run, as
   with any interrupted command).
3. Blocking commands (``XREADGROUP``/``XREAD`` with ``BLOCK``) go through
   ``execute_blocking``: the connection is checked out for the whole wait, so
   nothing else is queued behind it, and it does not count against the
   pool's limit of concurrent non-blocking commands.
4. Errors are translated at this boundary: a Redis error reply becomes
   ``CommandError``; a broken or refused connection becomes ``ConnectionLost``
   (the command may or may not have run).

Reconnection is lazy: a broken connection is dropped (with every idle one,
since a broken connection usually means the server went away) and the next
command opens a fresh one. Retrying is the caller's decision
(``ConnectionLost.retriable``).
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
import structlog
import trio

from bus.base import BusError, CommandError, ConnectionLost
from bus.connection import IO_ERRORS, Arg, Command, Connection, TLSHandshakeFailed, tls_handshake
from bus.redis_url import InvalidRedisURL, RedisAddress, TLSConfig

__all__ = [
    "Arg",
    "Command",
    "InvalidRedisURL",
    "RedisAddress",
    "RedisClient",
    "TLSConfig",
    "TLSHandshakeFailed",
]

log = structlog.get_logger()


# How long a cancelled caller waits for its already-taken commands to finish.
_TAKEN_WAIT_S = 5.0


class _Queued:
    """Commands waiting for a flusher, and what came back for them."""

    __slots__ = ("commands", "done", "error", "replies", "taken")

    def __init__(self, commands: Sequence[Command]) -> None:
        self.commands = commands
        self.done = trio.Event()
        self.taken = False  # in a batch being sent: too late to withdraw
        self.replies: list[Any] = []
        self.error: BusError | None = None


class RedisClient:
    """A pool of connections to one Redis server.

    ``max_connections`` bounds concurrent round trips of non-blocking commands
    (callers beyond it queue and go out together in the next pipeline);
    ``max_idle`` bounds the connections kept open between commands (default:
    twice ``max_connections``, room for the blocking readers too).
    """

    def __init__(
        self,
        address: RedisAddress,
        *,
        max_connections: int = 8,
        max_idle: int | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self.address = address
        # Round trips of non-blocking commands in flight (direct or flushers).
        # Redis runs commands one at a time: a few connections carrying big
        # pipelines beat many carrying one command each (fewer syscalls on
        # both sides).
        self._max_active = max(1, max_connections)
        self._active = 0
        self._queue: deque[_Queued] = deque()
        # An idle bound below the concurrency bound churns connections under
        # load: with 200 calls streaming tokens, 16 idle of up to 64 busy made
        # the LLM actor spend ~11% of its CPU in connect/getaddrinfo/close.
        self._max_idle = max_connections * 2 if max_idle is None else max_idle
        self._connect_timeout = connect_timeout
        self._idle: list[Connection] = []
        self._all: set[Connection] = set()
        self._closed = False
        # Built once (reads the CA and certificate files): a bad path fails
        # here, at start-up, not on the first command.
        self._tls = address.tls.context() if address.tls is not None else None

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisClient:
        """A client for ``redis://[user:password@]host:port/db`` (no I/O yet)."""
        return cls(RedisAddress.from_url(url), **kwargs)

    # -- connections -------------------------------------------------------

    async def _connect(self) -> Connection:
        addr = self.address
        try:
            with trio.fail_after(self._connect_timeout):
                tcp = await trio.open_tcp_stream(addr.host, addr.port)
                stream: trio.abc.Stream = tcp
                if self._tls is not None:
                    stream = await tls_handshake(tcp, self._tls, addr)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            raise ConnectionLost(f"cannot connect to {addr}: {exc!r}") from exc
        conn = Connection(stream, tcp.socket)
        self._all.add(conn)
        setup: list[Command] = []
        if addr.password is not None:
            setup.append(
                ("AUTH", addr.username, addr.password) if addr.username else ("AUTH", addr.password)
            )
        if addr.db:
            setup.append(("SELECT", addr.db))
        if not setup and self._tls is not None:
            # Under TLS 1.3 a server that rejects our certificate says so only
            # after the handshake: one round trip now turns that into a clear
            # error at connect time instead of on some later command.
            setup.append(("PING",))
        if setup:
            try:
                with trio.fail_after(self._connect_timeout):
                    replies = await conn.roundtrip(setup)
            except trio.TooSlowError as exc:
                self._all.discard(conn)
                raise ConnectionLost(f"no answer to AUTH/SELECT from {addr}") from exc
            except IO_ERRORS as exc:
                self._all.discard(conn)
                if isinstance(exc.__cause__, ssl.SSLError):
                    raise TLSHandshakeFailed(
                        f"TLS to {addr} failed after the handshake: "
                        f"{exc.__cause__.reason or exc.__cause__} (does the server want a "
                        "client certificate? set ssl_certfile and ssl_keyfile)"
                    ) from exc
                hint = ""
                if addr.tls is not None and addr.tls.cert_file is None:
                    # Redis resets a TLS client without a certificate right
                    # after the handshake; a restart looks the same, so this
                    # stays retriable and only gains a hint.
                    hint = " (does the server want a client certificate? set ssl_certfile)"
                raise ConnectionLost(
                    f"connection to {addr} lost while connecting: {exc!r}{hint}"
                ) from exc
            except BaseException:
                self._all.discard(conn)
                raise
            for reply in replies:
                if isinstance(reply, hiredis.ReplyError):
                    conn.close()
                    self._all.discard(conn)
                    raise CommandError(f"{reply} (connecting to {addr})")
        log.debug("redis.connected", address=str(addr))
        return conn

    async def _checkout(self) -> Connection:
        if self._closed:
            raise BusError("redis client is closed")
        while self._idle:
            conn = self._idle.pop()
            if not conn.broken:
                return conn
        return await self._connect()

    def _checkin(self, conn: Connection) -> None:
        if conn.broken or self._closed or len(self._idle) >= self._max_idle:
            conn.close()
            self._all.discard(conn)
        else:
            self._idle.append(conn)

    def _drop_idle(self) -> None:
        # A connection broke: the server likely restarted or went away, and the
        # idle ones would each fail once more. Close them all now.
        for conn in self._idle:
            conn.close()
            self._all.discard(conn)
        self._idle.clear()

    def _lost(self, conn: Connection, exc: BaseException | None) -> ConnectionLost | None:
        """Account for a connection that failed; the error to raise instead, if any."""
        self._all.discard(conn)
        self._drop_idle()
        if exc is None:
            log.info("redis.connection_lost", address=str(self.address))
            return None
        log.info("redis.connection_lost", address=str(self.address), error=repr(exc))
        return ConnectionLost(f"connection to {self.address} lost: {exc!r}")

    async def _roundtrip(self, commands: Sequence[Command], *, blocking: bool) -> list[Any]:
        """One round trip on a pooled connection, or a place in the next pipeline.

        Plain try/finally instead of (async) context managers: this runs once
        per bus command, and the generator-based managers it replaced cost
        more CPU than the parse of the reply.
        """
        if blocking:
            return await self._roundtrip_on_checkout(commands)
        if self._active == 0 and not self._queue:
            # Quiet client: run it here, no task hop. Cancelling this caller
            # interrupts only its own connection (THE RULE).
            self._active += 1
            try:
                return await self._roundtrip_on_checkout(commands)
            finally:
                self._active -= 1
                if self._queue and self._active < self._max_active:
                    # Queued behind us with every slot taken: flush them.
                    self._active += 1
                    trio.lowlevel.spawn_system_task(self._flush, name="redis-flusher")
        queued = _Queued(commands)
        self._queue.append(queued)
        if self._active < self._max_active:
            self._active += 1
            trio.lowlevel.spawn_system_task(self._flush, name="redis-flusher")
        try:
            await queued.done.wait()
        except BaseException:
            if not queued.taken:
                self._queue.remove(queued)  # withdrawn: never sent
            else:
                # Already in a shared pipeline that may not have gone out yet:
                # it will run. Wait for it (shielded, bounded), so a cancelled
                # caller's write can never land after the caller's next one.
                with trio.CancelScope(shield=True), trio.move_on_after(_TAKEN_WAIT_S):
                    await queued.done.wait()
            raise
        if queued.error is not None:
            raise queued.error
        return queued.replies

    async def _flush(self) -> None:
        """Send what is queued as pipelines until the queue is empty.

        A system task, so no caller's cancel scope can interrupt a round trip
        that carries other callers' commands; it never raises (that would
        crash the run): failures go to the callers.
        """
        try:
            while self._queue:
                batch = list(self._queue)
                self._queue.clear()
                for queued in batch:
                    queued.taken = True
                commands = [c for queued in batch for c in queued.commands]
                try:
                    replies = await self._roundtrip_on_checkout(commands)
                except BusError as exc:
                    for queued in batch:
                        queued.error = type(exc)(str(exc))
                        queued.error.__cause__ = exc.__cause__
                        queued.done.set()
                    continue
                except Exception as exc:  # a bug: tell the callers, keep the run alive
                    log.error("redis.flush_failed", error=repr(exc))
                    for queued in batch:
                        queued.error = BusError(f"redis pipeline failed: {exc!r}")
                        queued.done.set()
                    continue
                start = 0
                for queued in batch:
                    end = start + len(queued.commands)
                    queued.replies = replies[start:end]
                    start = end
                    queued.done.set()
        finally:
            self._active -= 1

    async def _roundtrip_on_checkout(self, commands: Sequence[Command]) -> list[Any]:
        conn = await self._checkout()
        try:
            return await conn.roundtrip(commands)
        except IO_ERRORS as exc:
            lost = self._lost(conn, exc)
            assert lost is not None
            raise lost from exc
        except ConnectionLost:
            self._lost(conn, None)
            raise
        finally:
            if conn.broken:
                self._all.discard(conn)
            else:
                self._checkin(conn)

    # -- commands ----------------------------------------------------------

    async def execute(self, *args: Arg) -> Any:
        """Run one command; ``CommandError`` on an error reply."""
        (reply,) = await self._roundtrip((args,), blocking=False)
        return _raise_error(reply)

    async def execute_blocking(self, *args: Arg) -> Any:
        """Run one command that may block server-side (``BLOCK``) on its own connection."""
        (reply,) = await self._roundtrip((args,), blocking=True)
        return _raise_error(reply)

    async def pipeline_blocking(self, commands: Sequence[Command]) -> list[Any]:
        """Several commands, one of which may block (``WAIT``), on a connection of
        their own, in one write; error replies returned in place as ``CommandError``."""
        replies = await self._roundtrip(commands, blocking=True)
        return [CommandError(str(r)) if isinstance(r, hiredis.ReplyError) else r for r in replies]

    async def pipeline(
        self, commands: Sequence[Command], *, raise_on_error: bool = True
    ) -> list[Any]:
        """Run several commands in one write and return their replies in order.

        With ``raise_on_error`` (the default) the first error reply is raised
        as ``CommandError`` after every reply was read (the other commands did
        run). Otherwise error replies are returned in place as ``CommandError``
        instances.
        """
        if not commands:
            return []
        replies = await self._roundtrip(commands, blocking=False)
        out = [CommandError(str(r)) if isinstance(r, hiredis.ReplyError) else r for r in replies]
        if raise_on_error:
            for r in out:
                if isinstance(r, CommandError):
                    raise r
        return out

    async def aclose(self) -> None:
        """Close every connection, including those in use; idempotent.

        A command blocked on the server when its connection is closed fails
        with ``ConnectionLost``.
        """
        self._closed = True
        self._idle.clear()
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        await trio.lowlevel.checkpoint()


def _raise_error(reply: Any) -> Any:
    if isinstance(reply, hiredis.ReplyError):
        raise CommandError(str(reply))
    return reply
