"""redis-server restarts mid-run; every process reconnects and a new call works.

Real processes (gateway, conversation actor, LLM worker) on a real
redis-server. After a first call, the server is killed and started again,
empty (no persistence), on the same port. Every process must ride it out:
log ``bus_unavailable`` and then ``bus_recovered``, not exit, and serve a
new call end to end.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.providers.scripted import scripted_reply
from switchboard.testing.procs import (
    HANG_GUARD_S,
    TAKEOVER_GUARD_S,
    SwitchboardProcess,
    open_switchboard,
)
from switchboard.testing.redis_server import open_redis_server
from switchboard.twilio import SessionClosed, open_call

pytestmark = pytest.mark.system

TOKEN = "redis-restart-token"
NEW_CALL_PROMPT = "A new call after the restart."
_PER_EVENT = {"error", "timestamp", "level", "event"}


def _env(redis_url: str) -> dict[str, str]:
    return {
        "TWILIO_AUTH_TOKEN": TOKEN,
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_LLM_PROVIDER": "scripted",
        "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "2",
        "SWITCHBOARD_PARTITIONS": "4",
        "SWITCHBOARD_LOG_LEVEL": "info",
        # A takeover may hold a reply past the reply deadline; the apology would
        # then be heard as well. This test counts replies, so it is off here.
        "SWITCHBOARD_REPLY_DEADLINE_S": "0",
        "ANTHROPIC_API_KEY": "",
    }


def _outage_report(processes: list[SwitchboardProcess]) -> str:
    lines = []
    for proc in processes:
        lines.append(f"--- {' '.join(proc.args)} (exit {proc.process.returncode})")
        lines += [
            str(e)
            for e in proc.events
            if e.get("level") in ("warning", "error")
            or str(e.get("event", "")).startswith(("bus_", "partition_"))
        ][-25:]
        lines += proc.other_lines[-10:]
    return "\n".join(lines)


async def _one_call(base_url: str, prompt: str) -> Any:
    async with open_call(base_url, auth_token=TOKEN) as call:
        await call.prompt(prompt)
        with trio.fail_after(TAKEOVER_GUARD_S):
            return await call.reply()


async def test_processes_ride_out_a_redis_restart_and_serve_a_new_call() -> None:
    with trio.fail_after(HANG_GUARD_S):
        async with open_redis_server() as redis:
            env = _env(redis.url)
            async with (
                open_switchboard("actor", "conversation", env=env) as conversation,
                open_switchboard("actor", "llm", env=env) as llm,
                open_switchboard("gateway", "--port", "0", env=env) as gateway,
            ):
                processes = [conversation, llm, gateway]
                base_url = f"http://127.0.0.1:{gateway.port}"
                before = await _one_call(base_url, "First call before the restart.")

                await redis.restart()
                # Every process notices (its blocking reads break); the tail
                # and read loops come back. (The conversation's partition
                # loops may instead end with their lease and start afresh
                # when it is re-acquired: the new call is the proof there.)
                try:
                    with trio.fail_after(TAKEOVER_GUARD_S):
                        for proc in processes:
                            await proc.wait_for("bus_unavailable")
                        for proc in (llm, gateway):
                            await proc.wait_for("bus_recovered")
                        after = await _one_call(base_url, NEW_CALL_PROMPT)
                except (trio.TooSlowError, SessionClosed):
                    raise AssertionError(_outage_report(processes)) from None
                running = [p.process.returncode for p in processes]
    assert before.complete and after.complete
    assert after.text == scripted_reply([{"role": "user", "content": NEW_CALL_PROMPT}])
    assert running == [None, None, None], "no process may exit during the outage"
    assert [p.returncode for p in processes] == [0, 0, 0]
    # One bus_unavailable per loop and outage, not one per retry.
    for proc in processes:
        outages = [e for e in proc.events if e.get("event") == "bus_unavailable"]
        loops = {
            tuple(sorted((k, str(v)) for k, v in e.items() if k not in _PER_EVENT)) for e in outages
        }
        assert len(outages) == len(loops), outages
