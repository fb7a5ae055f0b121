"""A person's first mistakes, through the real ``switchboard`` process.

Each ends in one line on stderr that says what to do, and exit status 2, with
no traceback unless ``--debug``; a role started before Redis waits for it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import pytest
import trio

from bus.memory import MemoryBus
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.testing.procs import open_switchboard
from switchboard.testing.redis_server import free_port, open_redis_server

pytestmark = pytest.mark.system

# Process start-up on a loaded 2-core machine: generous, only a hang guard.
DEADLINE_S = 90


async def run_cli(*args: str, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """``switchboard ARGS`` to completion: (exit status, stdout, stderr)."""
    full = {**os.environ, "SWITCHBOARD_LOG_FORMAT": "json", **(env or {})}
    done = await trio.run_process(
        [sys.executable, "-m", "switchboard.cli", *args],
        env=full,
        stdin=subprocess.DEVNULL,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@contextmanager
def port_in_use() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield int(held.getsockname()[1])


@pytest.mark.parametrize(
    ("env", "args", "says"),
    [
        ({"SWITCHBOARD_INTERRUPTIBLE": "sometimes"}, ("dev",), "SWITCHBOARD_INTERRUPTIBLE"),
        ({"SWITCHBOARD_TTS_PROVIDER": "amazon"}, ("dev",), "did you mean 'Amazon'?"),
        ({"SWITCHBOARD_LOG_LEVEL": "verbose"}, ("gateway",), "SWITCHBOARD_LOG_LEVEL"),
        ({}, ("dev", "--port", "99999"), "SWITCHBOARD_PORT must be <= 65535"),
    ],
)
async def test_bad_settings_are_one_line_and_exit_2(
    env: dict[str, str], args: tuple[str, ...], says: str
) -> None:
    with trio.fail_after(DEADLINE_S):
        code, _, err = await run_cli(*args, env=env)
    assert code == 2
    line = one_line(err)
    assert line.startswith(f"switchboard {args[0]}: ") and says in line


async def test_debug_shows_the_traceback() -> None:
    with trio.fail_after(DEADLINE_S):
        code, _, err = await run_cli("--debug", "dev", "--port", "99999")
    assert code != 0 and "Traceback" in err and "SWITCHBOARD_PORT" in err


@pytest.mark.parametrize("role", ["dev", "gateway"])
async def test_a_port_in_use_is_refused_before_anything_starts(role: str) -> None:
    # The gateway's Redis is not running: it must not get as far as waiting
    # for it, the port comes first.
    env = {"SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with port_in_use() as port, trio.fail_after(DEADLINE_S):
        code, _, err = await run_cli(role, "--port", str(port), env=env)
    assert code == 2
    line = one_line(err)
    assert f"port {port} on 127.0.0.1 is already in use" in line and "SWITCHBOARD_PORT" in line


async def test_an_actor_s_metrics_port_in_use_is_one_line() -> None:
    env = {"SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with port_in_use() as port, trio.fail_after(DEADLINE_S):
        env["SWITCHBOARD_METRICS_PORT"] = str(port)
        code, _, err = await run_cli("actor", "telemetry", env=env)
    assert code == 2
    assert "already in use" in one_line(err) and "SWITCHBOARD_METRICS_PORT" in err


@pytest.mark.parametrize("command", ["call", "simulate"])
async def test_an_agent_that_is_not_running_is_one_line_after_retrying(command: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    args = ["--url", url]
    if command == "simulate":
        args += ["--scenario", "bench/scenarios/smoke.json"]
    with trio.fail_after(DEADLINE_S):
        code, _, err = await run_cli(command, *args)
    assert code == 2
    line = one_line(err)
    assert f"cannot reach the agent at {url}" in line and "switchboard dev" in line


@pytest.mark.parametrize("command", ["call", "simulate"])
async def test_a_call_refused_with_403_says_to_set_the_auth_token(command: str) -> None:
    settings = Settings.from_env({"TWILIO_AUTH_TOKEN": "the-server-token", "SWITCHBOARD_PORT": "0"})
    extra = ["--scenario", "bench/scenarios/smoke.json", "--calls", "2"]
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            port = await start_dev(nursery, settings, MemoryBus())
            code, _, err = await run_cli(
                command,
                "--url",
                f"http://127.0.0.1:{port}",
                *(extra if command == "simulate" else []),
                env={"TWILIO_AUTH_TOKEN": "some-other-token"},
            )
            nursery.cancel_scope.cancel()
    assert code == 2 and "Traceback" not in err
    # simulate logs each refused call as it happens, then the one line.
    line = one_line(err) if command == "call" else err.strip().splitlines()[-1]
    assert line.startswith(f"switchboard {command}: ")
    assert "HTTP 403" in line and "set TWILIO_AUTH_TOKEN to the server's auth token" in line


async def test_a_role_started_before_redis_waits_for_it_and_says_so_once() -> None:
    port = free_port()
    env = {"SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{port}/0", "SWITCHBOARD_PARTITIONS": "2"}
    with trio.fail_after(DEADLINE_S):
        async with open_switchboard("actor", "conversation", env=env, ready_event=None) as proc:
            waiting = await proc.wait_for("bus_unavailable", loop="start")
            assert f"127.0.0.1:{port}" in waiting["redis_url"]
            async with open_redis_server(port=port):
                await proc.wait_for("bus_recovered", loop="start")
                await proc.wait_for("switchboard_ready")
                before_ready = [e["event"] for e in proc.events]
    # One line for the whole wait, however many attempts it took.
    assert before_ready.count("bus_unavailable") == 1
    assert before_ready.index("bus_unavailable") < before_ready.index("switchboard_ready")


async def test_version() -> None:
    with trio.fail_after(DEADLINE_S):
        code, out, _ = await run_cli("--version")
    name, version = out.split()
    assert code == 0 and version[0].isdigit() and name == "switchboard-voice"
