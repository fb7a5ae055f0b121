"""Run a throwaway ``redis-server`` for tests, system tests and benchmarks.

The server listens on loopback only, keeps nothing on disk (``--save ""
--appendonly no``, a temporary working directory) and is killed on exit.
Readiness is checked by polling ``PING`` on its port with bounded retries:
process start-up is the one place where there is no event to wait for.

``open_redis_server()`` is an async context manager; its handle can
``restart()`` the server on the same port (a "Redis restarts mid-run" test).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
import trio


def _log() -> structlog.typing.FilteringBoundLogger:
    # Looked up per event (these are rare): a module-level proxy caches its
    # logger when logging is configured with cache_logger_on_first_use, and
    # then structlog.testing.capture_logs() no longer sees its events.
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger()
    return logger


STARTUP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
_POLL_INTERVAL_S = 0.005


class RedisServerError(RuntimeError):
    """The server could not be started (binary missing, port taken, crashed)."""


def free_port() -> int:
    """A currently free loopback TCP port (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RedisServerError("redis-server is not on PATH")
    return path


def _argv(port: int, workdir: Path) -> list[str]:
    return [
        _binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        "--logfile",
        str(workdir / "redis.log"),
        "--loglevel",
        "warning",
    ]


def _log_tail(workdir: Path) -> str:
    try:
        return (workdir / "redis.log").read_text(errors="replace")[-2000:]
    except OSError:
        return ""


async def _ping_once(port: int) -> bool:
    try:
        with trio.move_on_after(0.5):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"PING\r\n")
                return (await stream.receive_some(64)).startswith(b"+PONG")
    except OSError:
        return False
    return False


class RedisServerHandle:
    """A running server started by ``open_redis_server``."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self._workdir = workdir
        self._process: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RedisServerError("redis-server is not running")
        return self._process.pid

    async def start(self) -> None:
        """Start the process and wait until it answers ``PING``."""
        self._process = await trio.lowlevel.open_process(
            _argv(self.port, self._workdir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = trio.current_time() + STARTUP_TIMEOUT_S
        while not await _ping_once(self.port):
            if self._process.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited with {self._process.returncode} on port "
                    f"{self.port}: {_log_tail(self._workdir)}"
                )
            if trio.current_time() > deadline:
                await self.stop()
                raise RedisServerError(f"redis-server did not answer on port {self.port}")
            await trio.sleep(_POLL_INTERVAL_S)
        _log().debug("redis_server.started", port=self.port, pid=self._process.pid)

    async def stop(self) -> None:
        """Kill the process and wait for it; safe when not running.

        SIGKILL, not SIGTERM: nothing is persisted, and a graceful shutdown
        waits for the server's next cron tick (~100 ms) for nothing.
        """
        process, self._process = self._process, None
        if process is None:
            return
        # Shielded: a cancelled test must still not leave a server behind.
        with trio.CancelScope(shield=True):
            process.kill()
            with trio.move_on_after(STOP_TIMEOUT_S):
                await process.wait()
        _log().debug("redis_server.stopped", port=self.port)

    async def restart(self) -> None:
        """Stop the server and start a fresh, empty one on the same port."""
        await self.stop()
        await self.start()


@contextlib.asynccontextmanager
async def open_redis_server(*, port: int | None = None) -> AsyncIterator[RedisServerHandle]:
    """Start a real ``redis-server`` on a free loopback port; stop it on exit."""
    with tempfile.TemporaryDirectory(prefix="switchboard-redis-") as tmp:
        handle = RedisServerHandle(port or free_port(), Path(tmp))
        try:
            await handle.start()
            yield handle
        finally:
            await handle.stop()
