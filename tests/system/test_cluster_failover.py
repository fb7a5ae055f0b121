"""A Redis Cluster master is SIGKILLed during 20 live calls; every call goes on.

Real processes (gateway, conversation, LLM worker; scripted provider) on a
real cluster of 3 masters and 3 replicas, requests and facts over 4 shards.
20 calls each say three things. Once every call has heard its first reply,
the master holding the first call's partition stream gets ``kill -9`` and
the calls say their second and third things while its replica takes over.

Every call must hear every reply exactly once: the scripted provider answers
"You said: X. That was message N from you.", so a caller event lost or
applied twice changes N or X, and text heard twice breaks the equality.
"""

from __future__ import annotations

import pytest
import trio

from bus.cluster import ClusterClient, key_slot, open_redis_client
from bus.keys import Keys
from switchboard.testing.procs import open_switchboard
from switchboard.testing.redis_cluster import open_redis_cluster
from switchboard.twilio import open_call

pytestmark = pytest.mark.system

TOKEN = "cluster-failover-token"
CALLS = 20
PROMPTS = ["I want a table tonight", "For four people please", "At eight if you can"]
PARTITIONS = 8
SHARDS = 4


def _expected(turn: int) -> str:
    return f"You said: {PROMPTS[turn - 1]}. That was message {turn} from you."


@pytest.mark.timeout(300)
async def test_calls_ride_through_a_killed_master() -> None:
    sids = [f"CA{i:032x}" for i in range(1, CALLS + 1)]
    heard: dict[str, list[str]] = {sid: [] for sid in sids}
    first_replies = trio.Semaphore(0)
    killed = trio.Event()
    env = {
        "TWILIO_AUTH_TOKEN": TOKEN,
        "SWITCHBOARD_LLM_PROVIDER": "scripted",
        "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "2",
        "SWITCHBOARD_PARTITIONS": str(PARTITIONS),
        "SWITCHBOARD_STREAM_SHARDS": str(SHARDS),
        # Calls wait in silence for the kill: no "are you still there?".
        "SWITCHBOARD_SILENCE_REPROMPT_S": "0",
        # A failover may hold a reply past the reply deadline; the gateway's
        # apology would then be heard too. This test is about every reply
        # arriving exactly once, so the apology is off (test_no_worker has it).
        "SWITCHBOARD_REPLY_DEADLINE_S": "0",
        "SWITCHBOARD_LOG_LEVEL": "info",
        "ANTHROPIC_API_KEY": "",
    }
    with trio.fail_after(240):
        async with open_redis_cluster() as cluster:
            env["SWITCHBOARD_REDIS_URL"] = cluster.url
            async with (
                open_switchboard("actor", "conversation", env=env) as conversation,
                open_switchboard("actor", "llm", env=env) as llm,
                open_switchboard("gateway", "--port", "0", env=env) as gateway,
            ):
                base = f"http://127.0.0.1:{gateway.port}"

                async def one_call(sid: str) -> None:
                    async with open_call(base, auth_token=TOKEN, call_sid=sid) as call:
                        for turn, text in enumerate(PROMPTS, start=1):
                            await call.prompt(text)
                            reply = await call.reply()
                            heard[sid].append(reply.text)
                            if turn == 1:
                                first_replies.release()
                                await killed.wait()

                async def kill_a_master() -> None:
                    for _ in sids:
                        await first_replies.acquire()
                    client = await open_redis_client(cluster.url)
                    assert isinstance(client, ClusterClient)
                    try:
                        stream = Keys(partitions=PARTITIONS).calls_for(sids[0])
                        victim = client.node_for_slot(key_slot(stream))
                    finally:
                        await client.aclose()
                    assert victim is not None
                    await cluster.node(victim[1]).stop()  # SIGKILL
                    killed.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(kill_a_master)
                    for sid in sids:
                        nursery.start_soon(one_call, sid)
                # The cluster healed: the replica took over the dead master's slots.
                await cluster.wait_healthy(timeout_s=30)
            processes = [conversation, llm, gateway]
    for sid in sids:
        assert heard[sid] == [_expected(t) for t in (1, 2, 3)], sid
    # The outage was seen and ridden out, not ignored.
    events = [e for p in processes for e in p.events]
    assert any(e.get("event") == "bus_unavailable" for e in events)
    assert all(p.returncode == 0 for p in processes), [p.returncode for p in processes]
