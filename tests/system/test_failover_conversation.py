"""A conversation worker is SIGKILLed mid-run; its partitions move, no call notices.

Real processes on one real redis-server: one gateway, three conversation
workers, one LLM worker (scripted provider with a small gap between words, so
replies take a little time). Thirty simulated calls run at once, each saying
three prompts and waiting for each reply. Once a third of all replies have
arrived, one conversation worker (one that holds partitions) gets ``kill -9``.

Then:

- every call completes: every prompt gets a reply closed by ``last: true``;
- every caller event is applied exactly once: each call's persisted history
  in Redis holds its prompts once each, in order, each followed by a reply;
- the dead worker's partitions are owned again (a ``partition_acquired`` with
  the next epoch, logged by a survivor). How fast is a figure for the
  benchmarks, not an assert: a starved machine may take longer than the TTL.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from bus.keys import Keys, partition_of
from bus.redis import open_redis_bus
from switchboard.testing.procs import HANG_GUARD_S, TAKEOVER_GUARD_S, first_to_log, open_switchboard
from switchboard.testing.redis_server import open_redis_server
from switchboard.testing.states import settled_states
from switchboard.twilio import open_call

pytestmark = pytest.mark.system

TOKEN = "failover-conversation-token"
LEASE_TTL_MS = 3000
PARTITIONS = 12
CALLS = 30
PROMPTS = ["My name is Ada.", "I would like to book a table.", "What did I tell you so far?"]
KEYS = Keys(partitions=PARTITIONS)


def _env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {
        "TWILIO_AUTH_TOKEN": TOKEN,
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_LLM_PROVIDER": "scripted",
        "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "10",
        "SWITCHBOARD_PARTITIONS": str(PARTITIONS),
        "SWITCHBOARD_LEASE_TTL_MS": str(LEASE_TTL_MS),
        "SWITCHBOARD_WELCOME_GREETING": "Hello from the failover test.",
        "SWITCHBOARD_LOG_LEVEL": "info",
        # A takeover may hold a reply past the reply deadline; the apology would
        # then be heard as well. This test counts replies, so it is off here.
        "SWITCHBOARD_REPLY_DEADLINE_S": "0",
        "ANTHROPIC_API_KEY": "",
    }
    env.update(extra)
    return env


async def test_killing_a_conversation_worker_loses_and_repeats_nothing() -> None:
    replies: dict[str, list[Any]] = {}
    done = 0
    kill_now = trio.Event()
    with trio.fail_after(HANG_GUARD_S):
        async with open_redis_server() as redis:
            env = _env(redis.url)
            async with (
                open_switchboard("actor", "llm", env=env) as _llm,
                open_switchboard("gateway", "--port", "0", env=env) as gateway,
                open_switchboard(
                    "actor", "conversation", env={**env, "SWITCHBOARD_WORKER_ID": "conv-1"}
                ) as conv1,
                open_switchboard(
                    "actor", "conversation", env={**env, "SWITCHBOARD_WORKER_ID": "conv-2"}
                ) as conv2,
                open_switchboard(
                    "actor", "conversation", env={**env, "SWITCHBOARD_WORKER_ID": "conv-3"}
                ) as conv3,
            ):
                base_url = f"http://127.0.0.1:{gateway.port}"
                # conv-3 joined last; it holds partitions once the others let go.
                victim, survivors = conv3, [conv1, conv2]
                with trio.fail_after(TAKEOVER_GUARD_S):
                    await victim.wait_for("partition_acquired")

                async def converse(i: int) -> None:
                    nonlocal done
                    async with open_call(base_url, auth_token=TOKEN) as call:
                        got = replies.setdefault(call.call_sid, [])
                        for text in PROMPTS:
                            await call.prompt(text)
                            got.append(await call.reply())
                            done += 1
                            if done >= CALLS * len(PROMPTS) // 3:
                                kill_now.set()

                async with trio.open_nursery() as nursery:
                    for i in range(CALLS):
                        nursery.start_soon(converse, i)
                    await kill_now.wait()
                    held = victim.held_partitions()
                    assert held, "the victim held no partitions when killed"
                    victim.kill9()
                    # Calls on the dead worker's partitions with prompts still
                    # to go: these must carry on through the takeover.
                    stranded = [
                        sid
                        for sid, got in replies.items()
                        if partition_of(sid, PARTITIONS) in held and len(got) < len(PROMPTS)
                    ]
                    assert stranded, "no live call was on the victim's partitions"
                    for partition, epoch in sorted(held.items()):
                        with trio.fail_after(TAKEOVER_GUARD_S):
                            await first_to_log(
                                survivors,
                                "partition_acquired",
                                partition=partition,
                                epoch=epoch + 1,
                            )

                # The caller hears a reply's last token before the LLM
                # worker's result reaches the conversation: wait until every
                # call's state holds its last answer before stopping the
                # workers (a result they had not applied yet would not be
                # lost, but would be applied by no one in this test).
                async with open_redis_bus(redis.url) as bus:
                    states = await settled_states(
                        bus,
                        KEYS,
                        list(replies),
                        messages=1 + 2 * len(PROMPTS),
                        patience_s=TAKEOVER_GUARD_S,
                    )

    assert len(replies) == CALLS
    for sid, got in replies.items():
        assert len(got) == len(PROMPTS), sid
        for reply in got:
            assert reply.frames[-1].last is True
            assert reply.text.strip()
        raw = states[sid]
        assert raw is not None, f"no persisted state for {sid}"
        history = json.loads(raw)["history"]
        users = [m["content"] for m in history if m["role"] == "user"]
        assert users == PROMPTS, f"{sid}: prompts applied {users}"
        # Each prompt was answered before the next one was applied.
        roles = [m["role"] for m in history]
        assert roles == ["assistant"] + ["user", "assistant"] * len(PROMPTS), roles
    assert conv1.returncode == 0 and conv2.returncode == 0
