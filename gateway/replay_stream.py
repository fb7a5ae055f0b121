"""The WebSocket hand-off: a connection whose request head is replayed first."""

from __future__ import annotations

import trio


class ReplayStream(trio.abc.Stream):
    """A stream that first returns ``prefix`` and then reads from ``stream``.

    Used to hand a connection whose request head h11 has already consumed
    to a WebSocket library that wants to parse the handshake itself.
    """

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self.stream = stream
        self._prefix = bytearray(prefix)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            size = len(self._prefix) if max_bytes is None else max_bytes
            chunk = bytes(self._prefix[:size])
            del self._prefix[:size]
            return chunk
        return bytes(await self.stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()
