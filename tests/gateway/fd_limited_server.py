"""A gateway HTTP front in a process with a tiny open-file limit (for test_fd_exhaustion).

Run as ``python fd_limited_server.py NOFILE``: lowers its own RLIMIT_NOFILE,
serves ``/healthz`` on a free loopback port with a connection limit far above
the file limit (so ``accept`` itself runs out of descriptors), prints the port
on stdout, and logs JSON to stderr.
"""

from __future__ import annotations

import resource
import sys

import trio

from gateway.http import (
    Capacity,
    HttpLimits,
    Request,
    Response,
    Router,
    open_listeners,
    serve_http,
    text_response,
)
from switchboard.logging import configure_logging


async def _healthz(request: Request) -> Response:
    return text_response(200, "ok")


async def main(nofile: int) -> None:
    listeners = await open_listeners("127.0.0.1", 0)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    router = Router()
    router.add("GET", "/healthz", _healthz)
    print(listeners[0].socket.getsockname()[1], flush=True)
    limits = HttpLimits(request_timeout=600.0)
    await serve_http(router, listeners, limits, capacity=Capacity(limit=100_000))


if __name__ == "__main__":
    configure_logging("info", "json")
    trio.run(main, int(sys.argv[1]))
