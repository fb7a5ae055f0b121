"""``switchboard tail`` as a process stops on SIGINT or SIGTERM and exits 0.

Also when it was started the way a script or CI step starts a background
job: by a shell without job control, which starts it with SIGINT ignored
(``trap "" INT`` here does the same). Python then installs no Ctrl-C
handler, so a tail relying on ``KeyboardInterrupt`` never stopped.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys

import pytest
import trio

from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.redis import open_redis_bus
from switchboard.testing.procs import HANG_GUARD_S, TAKEOVER_GUARD_S
from switchboard.testing.redis_server import open_redis_server

pytestmark = pytest.mark.system

SID = "CA" + "5" * 32


@pytest.mark.parametrize(
    ("ignore_sigint", "signum"),
    [(True, signal.SIGINT), (False, signal.SIGINT), (False, signal.SIGTERM)],
    ids=["sigint-ignored-by-the-shell", "sigint", "sigterm"],
)
async def test_the_tail_process_stops_on_a_signal(
    ignore_sigint: bool, signum: signal.Signals
) -> None:
    keys = Keys()
    with trio.fail_after(HANG_GUARD_S):
        async with open_redis_server() as redis, open_redis_bus(redis.url) as bus:
            argv = [sys.executable, "-m", "switchboard.cli", "tail", "--redis", redis.url]
            if ignore_sigint:
                argv = ["sh", "-c", 'trap "" INT; exec ' + shlex.join(argv)]
            tail = await trio.lowlevel.open_process(
                argv,
                env={**os.environ, "SWITCHBOARD_LOG_FORMAT": "json"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            try:
                assert tail.stdout is not None
                out = b""
                # Running (past start-up, following the streams) once it shows an entry.
                while SID.encode() not in out:
                    await bus.append(
                        keys.calls_for(SID),
                        Envelope(Kind.CALL_PROMPT, SID, {"voicePrompt": "Hi"}).encode(),
                    )
                    with trio.move_on_after(0.5):
                        chunk = await tail.stdout.receive_some(65536)
                        assert chunk, "tail exited before showing an entry"
                        out += chunk
                tail.send_signal(signum)
                with trio.fail_after(TAKEOVER_GUARD_S):
                    await tail.wait()
            finally:
                if tail.returncode is None:
                    tail.kill()
                    await tail.wait()
    assert tail.returncode == 0
