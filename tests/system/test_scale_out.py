"""The whole promise of scaling out, in one run of real processes.

Two gateways, three conversation workers and two LLM workers on one real
redis-server; fifty simulated calls at once, spread over both gateways, each
saying three prompts. While they run, a conversation worker and then an LLM
worker (one that is streaming a reply) get ``kill -9``. Afterwards:

- every call completed: every prompt got a reply closed by ``last: true``;
- every caller event was applied exactly once (each call's persisted history
  holds its prompts once each, in order, each followed by its reply);
- no caller heard a repeated span: each reply is exactly the scripted reply
  for the history it answered;
- the dead conversation worker's partitions were owned again, each under
  the next epoch (how fast is for the benchmarks, not an assert).

Then redis-server restarts (it keeps no data): every survivor reconnects and a
new call through each gateway succeeds, and no process exited on its own.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

from actors.providers.scripted import scripted_reply
from bus.keys import Keys
from bus.redis import open_redis_bus
from switchboard.testing.procs import (
    HANG_GUARD_S,
    TAKEOVER_GUARD_S,
    SwitchboardProcess,
    first_to_log,
    open_switchboard,
)
from switchboard.testing.redis_server import open_redis_server
from switchboard.testing.states import settled_states
from switchboard.twilio import open_call

pytestmark = pytest.mark.system

TOKEN = "scale-out-token"
GREETING = "Hello from the scale-out test."
LEASE_TTL_MS = 3000
CLAIM_IDLE_MS = 1500
PARTITIONS = 16
CALLS = 50
PROMPTS = ["My name is Ada.", "I would like to book a table.", "What did I tell you so far?"]
KEYS = Keys(partitions=PARTITIONS)


def _env(redis_url: str, worker: str) -> dict[str, str]:
    return {
        "TWILIO_AUTH_TOKEN": TOKEN,
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_WORKER_ID": worker,
        "SWITCHBOARD_GATEWAY_ID": worker,
        "SWITCHBOARD_LLM_PROVIDER": "scripted",
        "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "15",
        "SWITCHBOARD_PARTITIONS": str(PARTITIONS),
        "SWITCHBOARD_LEASE_TTL_MS": str(LEASE_TTL_MS),
        "SWITCHBOARD_LLM_CLAIM_IDLE_MS": str(CLAIM_IDLE_MS),
        "SWITCHBOARD_WELCOME_GREETING": GREETING,
        "SWITCHBOARD_LOG_LEVEL": "info",
        # A takeover may hold a reply past the reply deadline; the apology would
        # then be heard as well. This test counts replies, so it is off here.
        "SWITCHBOARD_REPLY_DEADLINE_S": "0",
        "ANTHROPIC_API_KEY": "",
    }


def _streaming(proc: SwitchboardProcess) -> int:
    """How many completions ``proc`` has started but not finished, by its log."""
    started = sum(1 for e in proc.events if e.get("event") == "completion_started")
    done = sum(1 for e in proc.events if e.get("event") == "completion_done")
    return started - done


async def test_fifty_calls_survive_worker_kills_and_a_redis_restart() -> None:
    replies: dict[str, list[Any]] = {}
    done = 0
    kill_conversation = trio.Event()
    kill_llm = trio.Event()
    with trio.fail_after(HANG_GUARD_S):
        async with open_redis_server() as redis, AsyncExitStack() as stack:
            c1, c2, c3, l1, l2, g1, g2 = [
                await stack.enter_async_context(open_switchboard(*args, env=_env(redis.url, name)))
                for name, args in [
                    ("conv-1", ("actor", "conversation")),
                    ("conv-2", ("actor", "conversation")),
                    ("conv-3", ("actor", "conversation")),
                    ("llm-1", ("actor", "llm")),
                    ("llm-2", ("actor", "llm")),
                    ("gw-1", ("gateway", "--port", "0")),
                    ("gw-2", ("gateway", "--port", "0")),
                ]
            ]
            urls = [f"http://127.0.0.1:{g.port}" for g in (g1, g2)]
            # Wait until all three conversation workers own partitions.
            with trio.fail_after(TAKEOVER_GUARD_S):
                for conv in (c1, c2, c3):
                    await conv.wait_for("partition_acquired")

            async def converse(i: int) -> None:
                nonlocal done
                async with open_call(urls[i % 2], auth_token=TOKEN) as call:
                    got = replies.setdefault(call.call_sid, [])
                    for text in PROMPTS:
                        await call.prompt(text)
                        got.append(await call.reply())
                        done += 1
                        if done >= CALLS * len(PROMPTS) // 4:
                            kill_conversation.set()
                        if done >= CALLS * len(PROMPTS) // 2:
                            kill_llm.set()

            async with trio.open_nursery() as nursery:
                for i in range(CALLS):
                    nursery.start_soon(converse, i)

                await kill_conversation.wait()
                held = c3.held_partitions()
                assert held, "the conversation victim held no partitions"
                c3.kill9()
                for partition, epoch in sorted(held.items()):
                    with trio.fail_after(TAKEOVER_GUARD_S):
                        await first_to_log(
                            [c1, c2], "partition_acquired", partition=partition, epoch=epoch + 1
                        )

                await kill_llm.wait()
                # Kill the LLM worker with the most replies in flight.
                busiest = _streaming(l1) >= _streaming(l2)
                llm_victim, llm_survivor = (l1, l2) if busiest else (l2, l1)
                llm_victim.kill9()

            async with open_redis_bus(redis.url) as bus:
                # The last answers may still be on their way to the states.
                states = await settled_states(
                    bus,
                    KEYS,
                    list(replies),
                    messages=1 + 2 * len(PROMPTS),
                    patience_s=TAKEOVER_GUARD_S,
                )

            # Redis restarts empty; the survivors reconnect and take new calls.
            await redis.restart()
            survivors = [c1, c2, llm_survivor, g1, g2]
            with trio.fail_after(TAKEOVER_GUARD_S):
                for url in urls:
                    async with open_call(url, auth_token=TOKEN) as call:
                        await call.prompt("Are you still there?")
                        after_restart = await call.reply()
                        assert after_restart.frames[-1].last is True
            assert all(p.process.returncode is None for p in survivors)
        assert all(p.returncode == 0 for p in survivors), [p.returncode for p in survivors]

    assert len(replies) == CALLS
    for sid, got in replies.items():
        assert [len(r.frames) > 0 and r.frames[-1].last for r in got] == [True] * len(PROMPTS)
        raw = states[sid]
        assert raw is not None, f"no persisted state for {sid}"
        history: list[dict[str, Any]] = json.loads(raw)["history"]
        # Exactly once, in order: greeting, then each prompt followed by its reply.
        assert [m["role"] for m in history] == ["assistant"] + ["user", "assistant"] * 3
        assert [m["content"] for m in history if m["role"] == "user"] == PROMPTS
        # No repeated span: each reply is exactly the scripted reply for the
        # history it answered, and is what the caller heard.
        for turn, reply in enumerate(got):
            answered = history[: 2 + 2 * turn]
            assert reply.text == scripted_reply(answered), (sid, turn)
            assert history[2 + 2 * turn]["content"] == reply.text
