"""Commands that do not run the model never import the model SDK.

Each command runs in a child process where ``import anthropic`` fails
(``sys.modules["anthropic"] = None``), so a command that reaches for it
crashes instead of quietly paying seconds of CPU. The ``llm`` role on
Claude is the control: it needs the SDK, so it must fail there.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import trio

from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.redis import open_redis_bus
from switchboard.testing.redis_server import free_port, open_redis_server

pytestmark = pytest.mark.system

WITHOUT_SDK = (
    "import sys; sys.modules['anthropic'] = None; "
    "from switchboard.cli import main; raise SystemExit(main(sys.argv[1:]))"
)
DEADLINE_S = 120  # process start-up on a loaded machine; a hang guard


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-c", WITHOUT_SDK, *args]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "SWITCHBOARD_LOG_FORMAT": "json", **extra}


async def _run(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        _argv(*args),
        env=_env(**env),
        stdin=subprocess.DEVNULL,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_call_simulate_and_replay_run_without_the_sdk() -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    with trio.fail_after(DEADLINE_S):
        async with open_redis_server() as redis:
            replay = await _run("replay", "CA" + "0" * 32, "--redis", redis.url)
        call = await _run("call", "--url", unreachable)
        simulate = await _run(
            "simulate", "--url", unreachable, "--scenario", "bench/scenarios/smoke.json"
        )
    # Each got as far as its own answer (not an ImportError).
    assert replay.returncode == 1 and b"retention" in replay.stderr, replay.stderr
    assert call.returncode == 2 and b"cannot reach the agent" in call.stderr, call.stderr
    assert simulate.returncode == 2 and b"cannot reach the agent" in simulate.stderr


async def test_tail_runs_without_the_sdk() -> None:
    keys = Keys()
    sid = "CA" + "7" * 32
    with trio.fail_after(DEADLINE_S):
        async with open_redis_server() as redis, open_redis_bus(redis.url) as bus:
            tail = await trio.lowlevel.open_process(
                _argv("tail", "--redis", redis.url),
                env=_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            try:
                assert tail.stdout is not None
                out = b""
                # The tail follows new entries only: append until it shows one.
                while sid.encode() not in out:
                    await bus.append(
                        keys.calls_for(sid),
                        Envelope(Kind.CALL_PROMPT, sid, {"voicePrompt": "Hi"}).encode(),
                    )
                    with trio.move_on_after(0.5):
                        chunk = await tail.stdout.receive_some(65536)
                        assert chunk, "tail exited before showing an entry"
                        out += chunk
                # It got as far as showing an entry: the command ran without the SDK.
                assert tail.returncode is None
            finally:
                tail.kill()
                await tail.wait()


async def test_the_llm_role_on_claude_needs_the_sdk_so_the_check_can_fail() -> None:
    env = {
        "SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "SWITCHBOARD_LLM_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "sk-not-used",
    }
    with trio.fail_after(DEADLINE_S):
        llm = await _run("actor", "llm", **env)
    assert llm.returncode != 0 and b"anthropic" in llm.stderr
