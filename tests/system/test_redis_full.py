"""A full Redis is weather: every role rides out ``OOM``, and says so while it lasts.

Real processes (gateway, conversation actor, LLM worker) on a real
redis-server. Mid-call, the server's ``maxmemory`` is set below what it uses
(policy ``noeviction``), so every write is refused with ``OOM command not
allowed``; the caller speaks during the outage. Before this was handled the
conversation worker exited on the first refused write and the gateway
dropped the session. Now:

- no process exits, and the caller's socket stays open;
- each role logs ``bus_degraded`` once, and its ``/readyz`` answers 503 with
  ``switchboard_bus_degraded`` at 1 on its ``/metrics``;
- once memory is given back, the prompt spoken during the outage is
  answered in that same session, each role logs ``bus_healthy`` and is ready
  again.
"""

from __future__ import annotations

import pytest
import trio

from actors.providers.scripted import scripted_reply
from bus.resp import RedisClient
from switchboard.metrics_http import fetch
from switchboard.testing.procs import (
    HANG_GUARD_S,
    TAKEOVER_GUARD_S,
    SwitchboardProcess,
    open_switchboard,
)
from switchboard.testing.redis_server import open_redis_server
from switchboard.twilio import open_call

pytestmark = pytest.mark.system

TOKEN = "redis-full-token"
PROMPT = "I am speaking while Redis is full."


def _env(redis_url: str) -> dict[str, str]:
    return {
        "TWILIO_AUTH_TOKEN": TOKEN,
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_LLM_PROVIDER": "scripted",
        "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "2",
        "SWITCHBOARD_PARTITIONS": "4",
        "SWITCHBOARD_LOG_LEVEL": "info",
        "SWITCHBOARD_METRICS_PORT": "0",
        "ANTHROPIC_API_KEY": "",
    }


async def _probe(port: int, path: str) -> tuple[int, str]:
    with trio.fail_after(5):
        return await fetch("127.0.0.1", port, path)


async def _metrics_port(proc: SwitchboardProcess) -> int:
    ready = await proc.wait_for("switchboard_ready")
    return int(ready["metrics_port"])


def _degraded_gauge(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("switchboard_bus_degraded{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no switchboard_bus_degraded in:\n{metrics}")


async def test_every_role_rides_out_a_full_redis_and_answers_the_prompt_after() -> None:
    with trio.fail_after(HANG_GUARD_S):
        async with open_redis_server() as redis:
            env = _env(redis.url)
            admin = RedisClient.from_url(redis.url)
            async with (
                open_switchboard("actor", "conversation", env=env) as conversation,
                open_switchboard("actor", "llm", env=env) as llm,
                open_switchboard("gateway", "--port", "0", env=env) as gateway,
                open_call(f"http://127.0.0.1:{gateway.port}", auth_token=TOKEN) as call,
            ):
                roles: dict[str, tuple[SwitchboardProcess, int]] = {
                    "conversation": (conversation, await _metrics_port(conversation)),
                    "llm": (llm, await _metrics_port(llm)),
                    "gateway": (gateway, gateway.port),  # /metrics on its own port
                }
                await call.prompt("Hello before the trouble.")
                with trio.fail_after(TAKEOVER_GUARD_S):
                    first = await call.reply()
                ready_before = {
                    r: (await _probe(port, "/readyz"))[0] for r, (_, port) in roles.items()
                }

                await admin.execute("CONFIG", "SET", "maxmemory-policy", "noeviction")
                await admin.execute("CONFIG", "SET", "maxmemory", "1")
                await call.prompt(PROMPT)
                # The gateway's append of the prompt is refused; the conversation
                # worker's lease renewals are too. (The LLM worker only reads
                # while no request arrives, so it may not notice at all.)
                with trio.fail_after(TAKEOVER_GUARD_S):
                    for proc in (gateway, conversation):
                        await proc.wait_for("bus_degraded")
                ready_during = {
                    r: await _probe(roles[r][1], "/readyz") for r in ("gateway", "conversation")
                }
                gauges = {
                    r: _degraded_gauge((await _probe(roles[r][1], "/metrics"))[1])
                    for r in ("gateway", "conversation")
                }
                exited_during = {r: proc.process.returncode for r, (proc, _) in roles.items()}

                await admin.execute("CONFIG", "SET", "maxmemory", "0")
                with trio.fail_after(TAKEOVER_GUARD_S):
                    after = await call.reply()
                    for proc in (gateway, conversation):
                        await proc.wait_for("bus_healthy")
                ready_after = {
                    r: (await _probe(port, "/readyz"))[0] for r, (_, port) in roles.items()
                }
                await admin.aclose()
                running = {r: proc.process.returncode for r, (proc, _) in roles.items()}

    assert first.complete
    assert ready_before == {"conversation": 200, "llm": 200, "gateway": 200}
    assert exited_during == {"conversation": None, "llm": None, "gateway": None}
    assert {r: status for r, (status, _) in ready_during.items()} == {
        "gateway": 503,
        "conversation": 503,
    }, ready_during
    assert gauges == {"gateway": 1.0, "conversation": 1.0}
    assert after.complete, "the prompt spoken while Redis was full must be answered"
    assert after.text == scripted_reply(
        [
            {"role": "user", "content": "Hello before the trouble."},
            {"role": "assistant", "content": first.text},
            {"role": "user", "content": PROMPT},
        ]
    )
    assert ready_after == {"conversation": 200, "llm": 200, "gateway": 200}
    assert running == {"conversation": None, "llm": None, "gateway": None}
    for proc in (gateway, conversation):
        degraded = [e for e in proc.events if e.get("event") == "bus_degraded"]
        assert len(degraded) == 1, degraded  # one line per outage, not per retry
