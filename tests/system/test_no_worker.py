"""A gateway with nobody to answer: the caller hears an apology, the metrics tell.

Real processes on a real redis-server: a gateway and an LLM worker, but no
conversation worker. The caller's prompt waits on the partition stream, so
no reply starts; after the reply deadline the gateway (the one part that
certainly runs) says the configured apology, the call stays up, the
conversation group's lag rises on ``/metrics`` and the log says the role has
no live worker. When a conversation worker starts, the call goes on: the
late replies to the prompts the gateway apologised for are withdrawn (the
caller was asked to say them again), so the next prompt's answer is the
first thing the caller hears.
"""

from __future__ import annotations

import re

import pytest
import trio

from switchboard.metrics_http import fetch
from switchboard.testing.procs import HANG_GUARD_S, TAKEOVER_GUARD_S, open_switchboard
from switchboard.testing.redis_server import open_redis_server
from switchboard.twilio import open_call

pytestmark = pytest.mark.system

TOKEN = "no-worker-token"
APOLOGY = "Sorry, nobody is here to answer right now."
PARTITIONS = 4


def _env(redis_url: str, name: str) -> dict[str, str]:
    return {
        "TWILIO_AUTH_TOKEN": TOKEN,
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_WORKER_ID": name,
        "SWITCHBOARD_GATEWAY_ID": name,
        "SWITCHBOARD_LLM_PROVIDER": "scripted",
        "SWITCHBOARD_PARTITIONS": str(PARTITIONS),
        "SWITCHBOARD_REPLY_DEADLINE_S": "2",
        "SWITCHBOARD_REPLY_APOLOGY": APOLOGY,
        "SWITCHBOARD_LOG_LEVEL": "info",
        "ANTHROPIC_API_KEY": "",
    }


def _gauges(metrics: str, name: str) -> dict[str, float]:
    """``name``'s samples by their label text."""
    pattern = re.compile(rf"^{name}\{{(.*)\}} (\S+)$", re.MULTILINE)
    return {labels: float(value) for labels, value in pattern.findall(metrics)}


async def _conversation_lag(port: int) -> float:
    _, body = await fetch("127.0.0.1", port, "/metrics")
    lags = _gauges(body, "switchboard_bus_lag")
    return sum(v for labels, v in lags.items() if 'group="conversation"' in labels)


async def test_no_conversation_worker_means_an_apology_and_rising_lag() -> None:
    with trio.fail_after(HANG_GUARD_S):
        async with (
            open_redis_server() as redis,
            open_switchboard("actor", "llm", env=_env(redis.url, "llm-1")),
            open_switchboard("gateway", "--port", "0", env=_env(redis.url, "gw-1")) as gw,
        ):
            url = f"http://127.0.0.1:{gw.port}"
            await gw.wait_for("role_unserved", role="conversation")
            async with open_call(url, auth_token=TOKEN) as call:
                lag_before = await _conversation_lag(gw.port)
                await call.prompt("Hello, is anyone there?")
                first = await call.reply()
                assert first.text == APOLOGY
                assert first.frames[-1].last is True
                late = await gw.wait_for("reply_late")
                assert late["call_sid"] == call.call_sid

                # The call stays usable: the next prompt gets the apology too.
                await call.prompt("Hello?")
                assert (await call.reply()).text == APOLOGY
                lag = await _conversation_lag(gw.port)
                assert lag >= lag_before + 2  # both prompts wait undelivered
                _, body = await fetch("127.0.0.1", gw.port, "/metrics")
                assert _gauges(body, "switchboard_workers_live")['role="conversation"'] == 0
                assert _gauges(body, "switchboard_workers_live")['role="llm"'] == 1

                # A conversation worker arrives: the backlog is read, the call goes on.
                async with open_switchboard(
                    "actor", "conversation", env=_env(redis.url, "conv-1")
                ) as conv:
                    with trio.fail_after(TAKEOVER_GUARD_S):
                        for partition in range(PARTITIONS):
                            await conv.wait_for("partition_acquired", partition=partition)
                    # The late replies to both prompts are withdrawn: the
                    # conversation stops them and keeps none in history.
                    await conv.wait_for("reply_withdrawn", pending_turn=2)
                    applied = await conv.wait_for("llm_result_applied", turn=2)
                    assert applied["kept_chars"] == 0
                    await call.prompt("Are you there now?")
                    answer = await call.reply()
                    assert "Are you there now" in answer.text, answer.text
                    assert answer.frames[-1].last is True
