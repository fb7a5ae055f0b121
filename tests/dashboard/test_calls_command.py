"""``switchboard calls`` as an operator runs it: real processes, real Redis.

Against a ``switchboard dev`` process (what ``make run`` starts: ``--url``)
and against the Redis processes (``--redis``, and ``--url`` on their
gateway), a call placed by the Twilio-side simulator is listed with its
CallSid, turns, numbers and how it ended.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
import trio

from switchboard.testing.procs import open_switchboard
from switchboard.testing.redis_server import open_redis_server
from switchboard.twilio import open_call

pytestmark = pytest.mark.system

ENV = {
    "SWITCHBOARD_LLM_PROVIDER": "scripted",
    "SWITCHBOARD_PARTITIONS": "4",
    "SWITCHBOARD_LOG_LEVEL": "info",
    "ANTHROPIC_API_KEY": "",
}


async def _switchboard(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``switchboard ARGS`` to completion: (exit code, stdout, stderr)."""
    done = await trio.run_process(
        [sys.executable, "-m", "switchboard.cli", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**ENV, **(env or {}), "PATH": "/usr/bin:/bin"},
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def _two_turn_call(base_url: str) -> str:
    async with open_call(base_url, from_="+15550111", to="+15550122") as call:
        for text in ("Hello there.", "What time is it?"):
            await call.prompt(text)
            await call.reply()
        return call.call_sid


def _listed(stdout: str, sid: str) -> dict[str, Any]:
    calls = json.loads(stdout)["calls"]
    return next(c for c in calls if c["call"] == sid)


async def test_calls_against_a_dev_process() -> None:
    with trio.fail_after(60):
        async with open_switchboard("dev", "--port", "0", env=ENV) as dev:
            url = f"http://127.0.0.1:{dev.port}"
            sid = await _two_turn_call(url)
            code, out, err = await _switchboard("calls", "--url", url, "--json")
            assert code == 0, err
            row = _listed(out, sid)
            assert (row["turns"], row["from"], row["to"]) == (2, "+15550111", "+15550122")
            assert row["outcome"] == "caller hung up" and row["problems"] == []
            code, text, _ = await _switchboard("calls", "--url", url)
            assert code == 0
            header, first = text.splitlines()[:2]
            assert header.startswith("CALLSID") and first.startswith(sid)


async def test_calls_against_the_redis_processes_and_their_gateway() -> None:
    with trio.fail_after(90):
        async with open_redis_server() as redis:
            env = {**ENV, "SWITCHBOARD_REDIS_URL": redis.url}
            async with (
                open_switchboard("actor", "conversation", env=env),
                open_switchboard("actor", "llm", env=env),
                open_switchboard("gateway", "--port", "0", env=env) as gateway,
            ):
                url = f"http://127.0.0.1:{gateway.port}"
                sid = await _two_turn_call(url)
                code, out, err = await _switchboard("calls", "--redis", redis.url, "--json")
                assert code == 0, err
                assert _listed(out, sid)["turns"] == 2
                code, out, err = await _switchboard("calls", "--url", url, "--json")
                assert code == 0, err
                assert _listed(out, sid)["from"] == "+15550111"


async def test_calls_without_a_server_says_what_to_do() -> None:
    with trio.fail_after(30):
        code, out, err = await _switchboard("calls", "--redis", "redis://127.0.0.1:1")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "--url http://127.0.0.1:8080" in err
    assert "Traceback" not in err
