"""A small Trio-native Redis client on ``hiredis``.

``hiredis.pack_command`` builds requests and ``hiredis.Reader`` parses replies
(decoded as UTF-8 ``str``); the I/O is plain ``trio.SocketStream``. Rules:

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
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import hiredis
import structlog
import trio

from bus.base import BusError, CommandError, ConnectionLost


class TLSHandshakeFailed(BusError):
    """The server's certificate was not trusted, or it refused ours.

    Not retriable: the same certificates will fail the same way. (A
    connection reset during the handshake is a ``ConnectionLost``.)
    """


log = structlog.get_logger()


Arg = str | bytes | int | float
Command = Sequence[Arg]

_IO_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, hiredis.ProtocolError)


class InvalidRedisURL(ValueError):
    """A Redis URL or TLS setting that cannot work: says which part and why."""


# Query parameters of a Redis URL, named as redis-py names them so that one
# URL serves both the hot-path client and redis-py on the admin paths.
_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_TLS_PARAMS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """How to speak TLS to Redis (``rediss://``).

    ``ca_file``: the CA bundle that signed the server's certificate (None: the
    system's trust store, right for managed Redis with a public CA).
    ``cert_file``/``key_file``: a client certificate, for servers that ask for
    one (``tls-auth-clients yes``, Redis's default). ``cert_reqs`` and
    ``check_hostname`` loosen verification; leave them alone in production.
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_reqs: str = "required"
    check_hostname: bool = True

    def context(self) -> ssl.SSLContext:
        """A client ``SSLContext``; ``InvalidRedisURL`` when a file cannot be used."""
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file is not None:
                ctx.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidRedisURL(f"cannot use the Redis TLS files: {exc}") from exc
        ctx.check_hostname = self.check_hostname and self.cert_reqs != "none"
        ctx.verify_mode = _CERT_REQS[self.cert_reqs]
        return ctx


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where and how to connect, parsed from a Redis URL.

    ``redis://[user:password@]host:port/db`` or ``rediss://...`` (TLS), with
    the TLS options as query parameters named as in redis-py:
    ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
    ``ssl_cert_reqs`` (required|optional|none), ``ssl_check_hostname``.
    """

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: TLSConfig | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        """Parse ``url``; ``InvalidRedisURL`` (a ``ValueError``) says what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise InvalidRedisURL(
                f"unsupported Redis URL scheme {parts.scheme!r} (want redis:// or rediss://)"
            )
        path = parts.path.strip("/")
        try:
            db = int(path) if path else 0
            port = parts.port or 6379
        except ValueError as exc:
            raise InvalidRedisURL(f"bad port or database number in Redis URL: {exc}") from exc
        if db < 0:
            raise InvalidRedisURL(f"bad Redis database number in URL: {db}")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(query) - set(_TLS_PARAMS))
        if unknown:
            raise InvalidRedisURL(
                f"unknown Redis URL parameter(s) {', '.join(unknown)} "
                f"(known: {', '.join(_TLS_PARAMS)})"
            )
        tls: TLSConfig | None = None
        if parts.scheme == "rediss":
            reqs = query.get("ssl_cert_reqs", "required").lower()
            if reqs not in _CERT_REQS:
                raise InvalidRedisURL(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}")
            check = query.get("ssl_check_hostname", "true").lower()
            if check not in _BOOLS:
                raise InvalidRedisURL("ssl_check_hostname must be true or false")
            tls = TLSConfig(
                ca_file=query.get("ssl_ca_certs") or None,
                cert_file=query.get("ssl_certfile") or None,
                key_file=query.get("ssl_keyfile") or None,
                cert_reqs=reqs,
                check_hostname=_BOOLS[check],
            )
            if tls.key_file and not tls.cert_file:
                raise InvalidRedisURL("ssl_keyfile needs ssl_certfile too")
        elif query:
            raise InvalidRedisURL("TLS parameters need a rediss:// URL, not redis://")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=tls,
        )

    def at(self, host: str, port: int) -> RedisAddress:
        """The same credentials and TLS settings for another node (a cluster's)."""
        return replace(self, host=host, port=port)

    def __str__(self) -> str:  # never print the password
        scheme = "rediss" if self.tls is not None else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


class _Connection:
    """One socket and its parser. Poisoned (closed) on any interrupted round trip."""

    def __init__(self, stream: trio.abc.Stream, sock: trio.socket.SocketType) -> None:
        self._stream = stream
        self._socket = sock  # the TCP socket under a TLS stream, closed synchronously
        self._reader = hiredis.Reader(encoding="utf-8")
        self.broken = False

    async def roundtrip(self, commands: Sequence[Command]) -> list[Any]:
        """Send all commands in one write, then read one reply per command.

        Error replies come back as ``hiredis.ReplyError`` values, not raised:
        the connection is still in step after them.
        """
        if self.broken:
            raise ConnectionLost("connection was closed after an interrupted command")
        # hiredis' stub types the argument as a 1-tuple; any length is accepted.
        payload = b"".join(hiredis.pack_command(tuple(c)) for c in commands)  # type: ignore[arg-type]
        try:
            await self._stream.send_all(payload)
            return await self._read_replies(len(commands))
        except BaseException:
            # THE RULE: whatever interrupted us, the reply stream is now unknown.
            self.broken = True
            self.close()
            raise

    async def _read_replies(self, count: int) -> list[Any]:
        # Parse every reply already buffered before awaiting more bytes: one
        # receive usually carries a whole pipeline's replies, and a coroutine
        # per reply costs more than the parse itself at 100 per batch.
        replies: list[Any] = []
        gets = self._reader.gets
        while True:
            while len(replies) < count and (reply := gets()) is not False:
                replies.append(reply)
            if len(replies) == count:
                return replies
            data = await self._stream.receive_some(65536)
            if not data:
                raise ConnectionLost("server closed the connection")
            # A TLS stream hands back a bytearray; hiredis reads any buffer.
            self._reader.feed(data)  # type: ignore[arg-type]

    def close(self) -> None:
        """Close at once (a SocketStream closes without waiting)."""
        self.broken = True
        # SocketStream.aclose() only closes the socket; doing it synchronously
        # lets cleanup run even inside a cancelled scope, without awaiting.
        # Under TLS this skips the close_notify alert, which Redis does not need.
        self._socket.close()


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
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._closed = False
        # Built once (reads the CA and certificate files): a bad path fails
        # here, at start-up, not on the first command.
        self._tls = address.tls.context() if address.tls is not None else None

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisClient:
        """A client for ``redis://[user:password@]host:port/db`` (no I/O yet)."""
        return cls(RedisAddress.from_url(url), **kwargs)

    # -- connections -------------------------------------------------------

    async def _connect(self) -> _Connection:
        addr = self.address
        try:
            with trio.fail_after(self._connect_timeout):
                tcp = await trio.open_tcp_stream(addr.host, addr.port)
                stream: trio.abc.Stream = tcp
                if self._tls is not None:
                    stream = await self._handshake(tcp)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            raise ConnectionLost(f"cannot connect to {addr}: {exc!r}") from exc
        conn = _Connection(stream, tcp.socket)
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
            except _IO_ERRORS as exc:
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

    async def _handshake(self, tcp: trio.SocketStream) -> trio.SSLStream[trio.SocketStream]:
        assert self._tls is not None
        stream = trio.SSLStream(tcp, self._tls, server_hostname=self.address.host)
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            tcp.socket.close()
            if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
                raise TLSHandshakeFailed(
                    f"TLS to {self.address}: the server's certificate is not trusted "
                    f"({exc.__cause__.verify_message}); check ssl_ca_certs"
                ) from exc
            if isinstance(exc.__cause__, ssl.SSLError):
                raise TLSHandshakeFailed(
                    f"TLS to {self.address} failed: {exc.__cause__.reason or exc.__cause__}"
                    " (is it a TLS port? does it want a client certificate?)"
                ) from exc
            raise
        except BaseException:
            tcp.socket.close()
            raise
        return stream

    async def _checkout(self) -> _Connection:
        if self._closed:
            raise BusError("redis client is closed")
        while self._idle:
            conn = self._idle.pop()
            if not conn.broken:
                return conn
        return await self._connect()

    def _checkin(self, conn: _Connection) -> None:
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

    def _lost(self, conn: _Connection, exc: BaseException | None) -> ConnectionLost | None:
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
        except _IO_ERRORS as exc:
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
