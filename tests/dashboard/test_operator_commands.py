"""The operator commands as an operator runs them: real processes, real Redis.

``switchboard calls``, ``replay`` and ``tail`` against a ``switchboard dev``
process (what ``make run`` starts; ``--url``, since its bus lives in its
memory) and against the Redis processes (``--redis``; ``--url`` on their
gateway works too). A call placed by the Twilio-side simulator is listed
with its CallSid, turns, numbers and how it ended; replayed (and re-run with
no differences); and followed live by ``tail``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
import trio

from switchboard.testing.procs import open_switchboard
from switchboard.testing.redis_server import open_redis_server
from switchboard.twilio import SimulatedCall, open_call

pytestmark = pytest.mark.system

ENV = {
    "SWITCHBOARD_LLM_PROVIDER": "scripted",
    "SWITCHBOARD_PARTITIONS": "4",
    "SWITCHBOARD_LOG_LEVEL": "info",
    "ANTHROPIC_API_KEY": "",
}


def _cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # A developer's own SWITCHBOARD_* settings must not leak in (the .env guard stays).
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["SWITCHBOARD_ENV_FILE"] = os.devnull
    return {**env, **ENV, **(extra or {})}


async def _switchboard(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``switchboard ARGS`` to completion: (exit code, stdout, stderr)."""
    done = await trio.run_process(
        [sys.executable, "-m", "switchboard.cli", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=_cli_env(env),
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def _prompt_until_tailed(call: SimulatedCall, tail: trio.Process) -> str:
    """Speak (a turn at a time) until ``tail`` prints one of this call's prompts."""
    assert tail.stdout is not None
    seen = b""
    turn = 0
    while True:
        turn += 1
        await call.prompt(f"Line number {turn} please.")
        await call.reply()
        with trio.move_on_after(1.5):  # the tail may have started after this prompt
            while b"call.prompt" not in seen or call.call_sid.encode() not in seen:
                seen += await tail.stdout.receive_some(65536)
            lines = seen.decode().splitlines()
            return next(line for line in lines if call.call_sid in line and "call.prompt" in line)


async def _check_operator_commands(source: list[str], base_url: str, env: dict[str, str]) -> None:
    tail = await trio.lowlevel.open_process(
        [sys.executable, "-m", "switchboard.cli", "tail", *source, "--kind", "call"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_cli_env(env),
    )
    try:
        async with open_call(base_url, from_="+15550111", to="+15550122") as call:
            sid = call.call_sid
            line = await _prompt_until_tailed(call, tail)
            assert "caller said" in line
    finally:
        tail.send_signal(signal.SIGINT)
        with trio.move_on_after(5):
            await tail.wait()
        if tail.returncode is None:
            tail.kill()
            await tail.wait()

    code, out, err = await _switchboard("calls", *source, "--json", env=env)
    assert code == 0, err
    row: dict[str, Any] = next(c for c in json.loads(out)["calls"] if c["call"] == sid)
    assert (row["from"], row["to"]) == ("+15550111", "+15550122")
    assert row["turns"] >= 1 and row["problems"] == []
    code, text, _ = await _switchboard("calls", *source, env=env)
    assert code == 0 and text.splitlines()[0].startswith("CALLSID") and sid in text

    code, out, err = await _switchboard("replay", sid, *source, env=env)
    assert code == 0, err
    assert out.startswith(f"call {sid}") and "call.setup" in out and "llm.result" in out
    code, out, err = await _switchboard("replay", sid, *source, "--rerun", env=env)
    assert code == 0, out + err
    assert out.rstrip().endswith("no differences")
    code, out, err = await _switchboard("replay", "CA" + "0" * 32, *source, env=env)
    assert code == 1 and "retention" in err and "Traceback" not in err


async def test_calls_replay_and_tail_against_a_dev_process() -> None:
    with trio.fail_after(90):
        async with open_switchboard("dev", "--port", "0", env=ENV) as dev:
            url = f"http://127.0.0.1:{dev.port}"
            # The ready line points the operator at the dashboard.
            ready = await dev.wait_for("switchboard_ready")
            assert ready["dashboard"] == f"{url}/dashboard"
            await _check_operator_commands(["--url", url], url, {})


async def test_calls_replay_and_tail_against_the_redis_processes() -> None:
    with trio.fail_after(120):
        async with open_redis_server() as redis:
            env = {**ENV, "SWITCHBOARD_REDIS_URL": redis.url}
            async with (
                open_switchboard("actor", "conversation", env=env),
                open_switchboard("actor", "llm", env=env),
                open_switchboard("gateway", "--port", "0", env=env) as gateway,
            ):
                url = f"http://127.0.0.1:{gateway.port}"
                await _check_operator_commands(["--redis", redis.url], url, env)
                # The gateway's operator API serves the same calls.
                code, out, err = await _switchboard("calls", "--url", url, "--json", env=env)
                assert code == 0, err
                assert json.loads(out)["calls"]


async def test_without_a_server_each_command_says_what_to_do() -> None:
    with trio.fail_after(60):
        for args in (
            ["calls", "--redis", "redis://127.0.0.1:1"],
            ["replay", "CA1", "--redis", "redis://127.0.0.1:1"],
            ["calls", "--url", "http://127.0.0.1:1"],
            ["replay", "CA1", "--url", "http://127.0.0.1:1"],
            ["tail", "--url", "http://127.0.0.1:1"],
        ):
            code, out, err = await _switchboard(*args)
            assert code == 1 and out == "", args
            assert err.count("\n") == 1 and "Traceback" not in err, err
            assert "--url http://127.0.0.1:8080" in err or "make run" in err, err
