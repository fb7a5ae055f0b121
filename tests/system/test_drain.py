"""SIGTERM on a gateway during live calls: every call finishes or goes on elsewhere.

Real processes on a real redis-server: two gateways behind a load balancer
(``switchboard.testing.balancer``: round robin over the gateways whose
``/readyz`` says 200, as in production), one conversation and one LLM
worker. Twenty calls are up, spread over both gateways; then the first
gateway gets SIGTERM:

- it is not ready at once, and a voice webhook sent to it directly gets 503;
- new calls through the balancer all land on the other gateway;
- half of its calls talk on and hang up within the drain deadline: the
  draining gateway still serves them;
- the other half stay up past the deadline: each gets ``end`` with handoffData
  ``{"reason": "handover"}``, the simulator calls ``/action`` as Twilio does
  (through the balancer, so on the other gateway), which answers a fresh
  ``<Connect>``; the call continues there with its history;
- the draining gateway then exits 0, having handed every call over.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack

import pytest
import trio

from bus.keys import Keys
from bus.redis import open_redis_bus
from switchboard.testing.balancer import is_ready, open_balancer
from switchboard.testing.procs import (
    HANG_GUARD_S,
    TAKEOVER_GUARD_S,
    SwitchboardProcess,
    first_to_log,
    open_switchboard,
)
from switchboard.testing.redis_server import open_redis_server
from switchboard.twilio import HttpError, open_call

pytestmark = pytest.mark.system

TOKEN = "drain-token"
CALLS = 20
PARTITIONS = 4
DRAIN_DEADLINE_S = 3
KEYS = Keys(partitions=PARTITIONS)


def _env(redis_url: str, name: str, public_url: str) -> dict[str, str]:
    return {
        "TWILIO_AUTH_TOKEN": TOKEN,
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_PUBLIC_URL": public_url,
        "SWITCHBOARD_WORKER_ID": name,
        "SWITCHBOARD_GATEWAY_ID": name,
        "SWITCHBOARD_LLM_PROVIDER": "scripted",
        "SWITCHBOARD_PARTITIONS": str(PARTITIONS),
        "SWITCHBOARD_DRAIN_DEADLINE_S": str(DRAIN_DEADLINE_S),
        "SWITCHBOARD_LOG_LEVEL": "info",
        "ANTHROPIC_API_KEY": "",
    }


async def test_sigterm_during_twenty_calls_hands_the_rest_to_the_other_gateway() -> None:
    finished: dict[str, str] = {}  # call sid -> "hung up" or "handed over"
    up = 0
    all_up = trio.Event()
    sigterm_sent = trio.Event()
    with trio.fail_after(HANG_GUARD_S):
        async with (
            open_redis_server() as redis,
            open_balancer() as lb,
            AsyncExitStack() as stack,
        ):

            async def start(name: str, *args: str) -> SwitchboardProcess:
                env = _env(redis.url, name, lb.url)
                return await stack.enter_async_context(open_switchboard(*args, env=env))

            conv = await start("conv-1", "actor", "conversation")
            await start("llm-1", "actor", "llm")
            g1 = await start("gw-1", "gateway", "--port", "0")
            g2 = await start("gw-2", "gateway", "--port", "0")
            lb.backends.extend([("127.0.0.1", g1.port), ("127.0.0.1", g2.port)])
            with trio.fail_after(TAKEOVER_GUARD_S):
                for partition in range(PARTITIONS):
                    await conv.wait_for("partition_acquired", partition=partition)

            async def converse(i: int) -> None:
                nonlocal up
                async with AsyncExitStack() as sessions:
                    call = await sessions.enter_async_context(open_call(lb.url, auth_token=TOKEN))
                    sid = call.call_sid
                    await call.prompt("My name is Ada.")
                    assert (await call.reply()).frames[-1].last is True
                    home = await first_to_log([g1, g2], "session_started", call_sid=sid)
                    up += 1
                    if up == CALLS:
                        all_up.set()
                    await sigterm_sent.wait()
                    if home is g2 or i % 4 < 2:
                        # Talks on (a draining gateway still serves it) and hangs up.
                        await call.prompt("Thank you, goodbye.")
                        assert (await call.reply()).frames[-1].last is True
                        await call.hangup()
                        finished[sid] = "hung up"
                        return
                    # Stays past the deadline: handed over, it goes on elsewhere.
                    action = await call.wait_ended()
                    assert call.session_status == "ended"
                    assert call.action_request is not None
                    assert json.loads(call.action_request["HandoffData"]) == {"reason": "handover"}
                    assert action is not None and action.relay is not None
                    call = await sessions.enter_async_context(call.follow_action())
                    await g2.wait_for("session_started", call_sid=sid, session_id=call.session_id)
                    await call.prompt("What is my name?")
                    assert (await call.reply()).frames[-1].last is True
                    await call.hangup()
                    finished[sid] = "handed over"

            async with trio.open_nursery() as nursery:
                for i in range(CALLS):
                    nursery.start_soon(converse, i)
                await all_up.wait()
                on_g1 = sum(1 for e in g1.events if e.get("event") == "session_started")
                assert 0 < on_g1 < CALLS  # the balancer spread them
                g1.process.terminate()
                await g1.wait_for("gateway_draining")
                assert not await is_ready("127.0.0.1", g1.port)
                with pytest.raises(HttpError) as refused:
                    async with open_call(
                        f"http://127.0.0.1:{g1.port}", public_url=lb.url, auth_token=TOKEN
                    ):
                        pass
                assert refused.value.status == 503
                sigterm_sent.set()
                # A new call while gw-1 drains: the balancer sends it to gw-2.
                async with open_call(lb.url, auth_token=TOKEN) as fresh:
                    await fresh.prompt("Hello?")
                    assert (await fresh.reply()).frames[-1].last is True
                    await g2.wait_for("session_started", call_sid=fresh.call_sid)

            drained = await g1.wait_for("gateway_drained")
            with trio.fail_after(TAKEOVER_GUARD_S):
                await g1.process.wait()
            assert g1.process.returncode == 0
            assert not any(e.get("event") == "calls_not_handed_over" for e in g1.events)
            handed = [sid for sid, how in finished.items() if how == "handed over"]
            assert drained["handed_over"] == len(handed) > 0

            # The handed-over calls kept their history across the two gateways.
            async with open_redis_bus(redis.url) as bus:
                for sid in handed:
                    raw = await bus.get(KEYS.state(sid))
                    assert raw is not None
                    said = [m["content"] for m in json.loads(raw)["history"] if m["role"] == "user"]
                    assert said == ["My name is Ada.", "What is my name?"]

    assert len(finished) == CALLS
