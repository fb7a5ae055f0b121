"""Out of file descriptors, the gateway's HTTP front degrades and recovers quietly.

A real process with a small open-file limit; real loopback connections from
this one until its ``accept`` fails with EMFILE.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from gwkit import http

SERVER = Path(__file__).with_name("fd_limited_server.py")
NOFILE = 48

pytestmark = pytest.mark.system


async def test_emfile_is_one_log_line_and_the_server_recovers() -> None:
    with trio.fail_after(60):
        process = await trio.lowlevel.open_process(
            [sys.executable, str(SERVER), str(NOFILE)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=SERVER.parents[2],
        )
        assert process.stdout is not None and process.stderr is not None
        try:
            port = int((await process.stdout.receive_some(64)).decode().strip())
            idle: list[trio.SocketStream] = []
            # Hold connections open until accept has been failing for a while:
            # the server has fewer descriptors than we open.
            for _ in range(NOFILE * 2):
                idle.append(await trio.open_tcp_stream("127.0.0.1", port))
            err = b""
            while b"accept_exhausted" not in err:
                err += await process.stderr.receive_some(1 << 16)
            # Stay exhausted while accept backs off and retries (up to 1 s apart).
            with trio.move_on_after(3.0):
                while True:
                    err += await process.stderr.receive_some(1 << 16)
            for stream in idle:
                await stream.aclose()
            while True:
                try:
                    health = await http(port, "GET", "/healthz")
                except OSError:
                    continue
                if health.status == 200:
                    break
        finally:
            process.terminate()
            await process.wait()
        while chunk := await process.stderr.receive_some(1 << 16):
            err += chunk
    text = err.decode()
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert names.count("accept_exhausted") == 1, names
    assert "accept_recovered" in names
    assert "Traceback" not in text
