"""One connection to Redis: a socket, its reply parser, and the rule that guards it.

``hiredis.pack_command`` builds requests and ``hiredis.Reader`` parses replies
(decoded as UTF-8 ``str``) on a plain ``trio`` stream, TCP or TLS. A round trip
is one write of N commands and N replies read back. THE RULE (see
:mod:`bus.resp`): a round trip interrupted anywhere between the first byte sent
and the last reply byte read closes the connection for good, because its reply
stream is unknown. :func:`tls_handshake` turns TLS failures into
:class:`TLSHandshakeFailed`, which says what to check. The pool and the
automatic pipelining that use these connections are in :mod:`bus.resp`.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

import hiredis
import trio

from bus.base import BusError, ConnectionLost
from bus.redis_url import RedisAddress

__all__ = ["IO_ERRORS", "Arg", "Command", "Connection", "TLSHandshakeFailed", "tls_handshake"]


class TLSHandshakeFailed(BusError):
    """The server's certificate was not trusted, or it refused ours.

    Not retriable: the same certificates will fail the same way. (A
    connection reset during the handshake is a ``ConnectionLost``.)
    """


Arg = str | bytes | int | float
Command = Sequence[Arg]

IO_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, hiredis.ProtocolError)


class Connection:
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


async def tls_handshake(
    tcp: trio.SocketStream, context: ssl.SSLContext, address: RedisAddress
) -> trio.SSLStream[trio.SocketStream]:
    """TLS over ``tcp``; the socket is closed if the handshake does not complete."""
    stream = trio.SSLStream(tcp, context, server_hostname=address.host)
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        tcp.socket.close()
        if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
            raise TLSHandshakeFailed(
                f"TLS to {address}: the server's certificate is not trusted "
                f"({exc.__cause__.verify_message}); check ssl_ca_certs"
            ) from exc
        if isinstance(exc.__cause__, ssl.SSLError):
            raise TLSHandshakeFailed(
                f"TLS to {address} failed: {exc.__cause__.reason or exc.__cause__}"
                " (is it a TLS port? does it want a client certificate?)"
            ) from exc
        raise
    except BaseException:
        tcp.socket.close()
        raise
    return stream
