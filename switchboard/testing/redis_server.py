"""Run a throwaway ``redis-server`` for tests, system tests and benchmarks.

The server listens on loopback only, keeps nothing on disk (``--save ""
--appendonly no``, a temporary working directory) and is killed on exit.
Readiness is checked by polling ``INFO server`` on its port until our own
process answers (another run may hold the port), with bounded retries:
process start-up is the one place where there is no event to wait for.

``open_redis_server()`` is an async context manager; its handle can
``restart()`` the server on the same port (a "Redis restarts mid-run" test).
It can also run the server as users do in production: TLS only
(``tls=``: the port speaks TLS and wants a client certificate) and an ACL
user with a password (``user=``; the default user is then disabled). The
handle's ``url`` carries whatever a client needs for that.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import structlog
import trio

from switchboard.testing.tls import TestCertificates

log = structlog.get_logger()


# A hang guard: redis-server starts in milliseconds, but not on a loaded machine.
STARTUP_TIMEOUT_S = 60.0
# Attempts on fresh free ports when the port picked was taken before the
# server bound it (parallel test runs pick ports at the same time).
PORT_ATTEMPTS = 5
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


@dataclass(frozen=True, slots=True)
class AclUser:
    """An ACL user to create; ``rules`` in ``ACL SETUSER`` syntax (keys, commands)."""

    name: str
    password: str
    rules: str = "~* &* +@all"


def _argv(
    port: int,
    workdir: Path,
    *,
    tls: TestCertificates | None,
    user: AclUser | None,
    extra: Sequence[str],
) -> list[str]:
    argv = [_binary()]
    if tls is None:
        argv += ["--port", str(port)]
    else:
        # TLS only: no plaintext port at all, as a managed Redis would run.
        argv += [
            "--port", "0",
            "--tls-port", str(port),
            "--tls-cert-file", str(tls.server_cert),
            "--tls-key-file", str(tls.server_key),
            "--tls-ca-cert-file", str(tls.ca_file),
            "--tls-auth-clients", "yes",
        ]  # fmt: skip
    if user is not None:
        argv += ["--user", "default", "off"]
        argv += ["--user", user.name, "on", f">{user.password}", *user.rules.split()]
    argv += [
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--daemonize", "no",
        "--protected-mode", "yes",
        "--logfile", str(workdir / "redis.log"),
        "--loglevel", "warning",
    ]  # fmt: skip
    return argv + list(extra)


def _log_tail(workdir: Path) -> str:
    try:
        return (workdir / "redis.log").read_text(errors="replace")[-2000:]
    except OSError:
        return ""


def _client_tls(tls: TestCertificates) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tls.ca_file))
    ctx.load_cert_chain(str(tls.client_cert), str(tls.client_key))
    return ctx


# _answering_pid's answer for a server that is up but will not say who it is
# (an ACL server answers NOAUTH before AUTH).
UNKNOWN_PID = 0


async def _answering_pid(port: int, tls: ssl.SSLContext | None = None) -> int | None:
    """The process id of the redis-server answering on ``port`` (None: none yet;
    ``UNKNOWN_PID``: one answered ``NOAUTH``).

    Asked rather than assumed: when parallel runs pick the same free port,
    the server that answers may be another run's, and ours exited.
    """
    try:
        with trio.move_on_after(0.5):
            stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
            if tls is not None:
                stream = trio.SSLStream(stream, tls, server_hostname="127.0.0.1")
            async with stream:
                await stream.send_all(b"INFO server\r\n")
                data = b""
                while chunk := await stream.receive_some(4096):
                    data += chunk
                    if data.startswith(b"-NOAUTH"):
                        return UNKNOWN_PID
                    found = re.search(rb"process_id:(\d+)\r\n", data)
                    if found is not None:
                        return int(found[1])
    except (OSError, trio.BrokenResourceError):
        return None
    return None


class RedisServerHandle:
    """A running server started by ``open_redis_server``."""

    def __init__(
        self,
        port: int,
        workdir: Path,
        *,
        tls: TestCertificates | None = None,
        user: AclUser | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.port = port
        self.tls = tls
        self.user = user
        self.workdir = workdir
        self.extra_args = tuple(extra_args)
        self._process: trio.Process | None = None

    @property
    def url(self) -> str:
        """A URL a client can use as is: TLS files and credentials included."""
        return self.url_with(db=0)

    def url_with(self, *, db: int = 0) -> str:
        """``url`` for another database number."""
        auth = ""
        if self.user is not None:
            auth = f"{quote(self.user.name, safe='')}:{quote(self.user.password, safe='')}@"
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/{db}"
        query = urlencode(
            {
                "ssl_ca_certs": str(self.tls.ca_file),
                "ssl_certfile": str(self.tls.client_cert),
                "ssl_keyfile": str(self.tls.client_key),
            }
        )
        return f"rediss://{auth}127.0.0.1:{self.port}/{db}?{query}"

    @property
    def running(self) -> bool:
        """True between ``start`` and ``stop``."""
        return self._process is not None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RedisServerError("redis-server is not running")
        return self._process.pid

    async def start(self) -> None:
        """Start the process and wait until it answers on its port."""
        argv = _argv(self.port, self.workdir, tls=self.tls, user=self.user, extra=self.extra_args)
        ping_tls = _client_tls(self.tls) if self.tls is not None else None
        self._process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = trio.current_time() + STARTUP_TIMEOUT_S
        while await _answering_pid(self.port, ping_tls) not in (self._process.pid, UNKNOWN_PID):
            if self._process.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited with {self._process.returncode} on port "
                    f"{self.port}: {_log_tail(self.workdir)}"
                )
            if trio.current_time() > deadline:
                await self.stop()
                raise RedisServerError(f"redis-server did not answer on port {self.port}")
            await trio.sleep(_POLL_INTERVAL_S)
        log.debug("redis_server.started", port=self.port, pid=self._process.pid)

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
        log.debug("redis_server.stopped", port=self.port)

    async def restart(self) -> None:
        """Stop the server and start a fresh, empty one on the same port."""
        await self.stop()
        await self.start()


@contextlib.asynccontextmanager
async def open_redis_server(
    *,
    port: int | None = None,
    tls: TestCertificates | None = None,
    user: AclUser | None = None,
    extra_args: Sequence[str] = (),
) -> AsyncIterator[RedisServerHandle]:
    """Start a real ``redis-server`` on a free loopback port; stop it on exit.

    ``tls``: serve TLS only, with these certificates (``make_certificates``);
    ``user``: require this ACL user; ``extra_args``: more ``--name value``.
    With no ``port`` given, a port taken between picking and binding it is
    replaced by another free one.
    """
    with tempfile.TemporaryDirectory(prefix="switchboard-redis-") as tmp:
        handle = RedisServerHandle(
            port or free_port(), Path(tmp), tls=tls, user=user, extra_args=extra_args
        )
        try:
            for attempt in range(1, PORT_ATTEMPTS + 1):
                try:
                    await handle.start()
                    break
                except RedisServerError:
                    if port is not None or attempt == PORT_ATTEMPTS:
                        raise
                    handle.port = free_port()
            yield handle
        finally:
            await handle.stop()
