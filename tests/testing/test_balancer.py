"""The test balancer behaves as a load balancer in front of the gateways does.

Loopback, port 0, a Trio-clock guard on every test: a backend that dies
mid-connection ends the client's connection too (the client must notice,
as a real balancer resets it), and a backend whose ``/readyz`` is not 200 is
never picked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from switchboard.testing.balancer import open_balancer

Behaviour = Callable[[trio.SocketStream, bytes], Awaitable[None]]


async def _serve(
    behaviour: Behaviour, *, ready: bool = True, task_status: trio.TaskStatus[int]
) -> None:
    """A backend: answers ``/readyz`` (200 or 503), hands other requests to ``behaviour``."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            head = await stream.receive_some(4096)
            if head.startswith(b"GET /readyz"):
                status = b"200 OK" if ready else b"503 Service Unavailable"
                await stream.send_all(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
                return
            await behaviour(stream, head)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def _dies(stream: trio.SocketStream, head: bytes) -> None:
    """The backend process is killed mid-connection: the socket is reset."""
    stream.socket.setsockopt(
        trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
    )


async def _echoes(stream: trio.SocketStream, head: bytes) -> None:
    await stream.send_all(b"echo:" + head)


async def test_a_backend_that_dies_mid_connection_ends_the_clients_connection() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_serve, _dies)
            async with open_balancer([("127.0.0.1", port)]) as balancer:
                client = await trio.open_tcp_stream("127.0.0.1", balancer.port)
                async with client:
                    await client.send_all(b"GET /relay HTTP/1.1\r\n\r\n")
                    try:
                        got = await client.receive_some(1024)
                    except trio.BrokenResourceError:
                        got = b""
                    assert got == b""  # closed, not left hanging
            nursery.cancel_scope.cancel()


async def test_a_backend_that_is_not_ready_is_skipped() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            starting = await nursery.start(
                lambda task_status: _serve(_dies, ready=False, task_status=task_status)
            )
            serving = await nursery.start(_serve, _echoes)
            backends = [("127.0.0.1", starting), ("127.0.0.1", serving)]
            async with open_balancer(backends) as balancer:
                for _ in range(3):
                    async with await trio.open_tcp_stream("127.0.0.1", balancer.port) as client:
                        await client.send_all(b"POST /action HTTP/1.1\r\n\r\n")
                        assert (await client.receive_some(1024)).startswith(b"echo:POST /action")
            assert set(balancer.routed) == {("127.0.0.1", serving)}
            nursery.cancel_scope.cancel()
