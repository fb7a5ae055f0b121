"""A conversation worker dies between persisting a turn and publishing its request.

Real processes on one real redis-server: a gateway, an LLM worker and a
conversation worker ``conv-1``. ``conv-1`` connects as an ACL user. After the
first turn the user may still write every key the conversation needs
except the request streams and the dead-letter stream (an ACL change
applies to open connections), so for the caller's second words ``conv-1``
persists the call's state (with the request in its outbox: persist, then
publish) and then cannot publish the request, nor give the entry up: the
entry stays pending, the state says the turn was applied, no request is on
the bus. That is the moment ``conv-1`` gets ``kill -9``.

A new worker ``conv-2`` takes the partition over, finds the entry it
inherits already applied and publishes what its outbox holds: a request
that carries only what is new and refers to what the first request
carried, which the LLM worker rebuilds. Then:

- nothing is lost: the second prompt is answered (its republished request
  refers to the first request's history), and so is a third;
- nothing is heard twice: each reply is exactly the scripted reply to the
  whole history ("That was message N from you"), one request per turn;
- the model was sent the right history every time (no stale or mismatched
  history logged).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis as redis_py
import trio

from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.redis import RedisBus, open_redis_bus
from switchboard.testing.procs import HANG_GUARD_S, TAKEOVER_GUARD_S, open_switchboard
from switchboard.testing.redis_server import open_redis_server
from switchboard.twilio import open_call

pytestmark = pytest.mark.system

TOKEN = "kill-between-token"
PARTITIONS = 4
KEYS = Keys(partitions=PARTITIONS)
GREETING = "Hello from the persist test."
PROMPTS = ["My name is Ada.", "I would like a table.", "What is my name?"]

# conv-1 may read everything and write every key of the conversation's
# (partitions, facts, gateway streams, cancels, the worker registry), but not
# the request streams ({llm}, {llm:1}, ...) nor the dead-letter stream.
WRITES = ["*:{p*}*", "*:{events*}*", "*:{gw:*}*", "*:{control}*", "*:{members:*}*"]


def _env(redis_url: str) -> dict[str, str]:
    return {
        "TWILIO_AUTH_TOKEN": TOKEN,
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_LLM_PROVIDER": "scripted",
        "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "2",
        "SWITCHBOARD_PARTITIONS": str(PARTITIONS),
        "SWITCHBOARD_LEASE_TTL_MS": "1500",
        "SWITCHBOARD_WELCOME_GREETING": GREETING,
        "SWITCHBOARD_LOG_LEVEL": "info",
        # The takeover holds the first reply past the reply deadline; the
        # gateway's apology would then be heard too. Replies are checked here.
        "SWITCHBOARD_REPLY_DEADLINE_S": "0",
        "ANTHROPIC_API_KEY": "",
    }


async def _acl(url: str, *rules: str) -> None:
    """Set conv-1's ACL user (created on first use); it applies to its open connections."""

    def run() -> None:
        client = redis_py.Redis.from_url(url)
        try:
            client.execute_command("ACL", "SETUSER", "conv", "reset", *rules)
        finally:
            client.close()

    await trio.to_thread.run_sync(run)


def _expected(n: int, said: str) -> str:
    return f"You said: {said.rstrip('.?')}. That was message {n} from you."


async def test_a_turn_persisted_but_never_published_is_answered_once_after_kill_9() -> None:
    replies = []
    with trio.fail_after(HANG_GUARD_S):
        async with open_redis_server() as redis, open_redis_bus(redis.url) as bus:
            env = _env(redis.url)
            login = ["on", ">conv-secret", "&*", "+@all"]
            await _acl(redis.url, *login, "~*")
            parts = urlsplit(redis.url)
            conv_url = urlunsplit(
                parts._replace(netloc=f"conv:conv-secret@{parts.hostname}:{parts.port}")
            )
            conv_env = {**env, "SWITCHBOARD_REDIS_URL": conv_url, "SWITCHBOARD_WORKER_ID": "c1"}
            async with (
                open_switchboard("actor", "llm", env=env) as llm,
                open_switchboard("gateway", "--port", "0", env=env) as gateway,
                open_switchboard("actor", "conversation", env=conv_env) as conv1,
            ):
                with trio.fail_after(TAKEOVER_GUARD_S):
                    await conv1.wait_for("partition_acquired")
                url = f"http://127.0.0.1:{gateway.port}"
                async with open_call(url, auth_token=TOKEN) as call, trio.open_nursery() as nursery:
                    await call.prompt(PROMPTS[0])
                    replies.append(await call.reply())
                    # From now on conv-1 can persist but not publish requests.
                    await _acl(redis.url, *login, "%R~*", *[f"~{p}" for p in WRITES])
                    answered = trio.Event()

                    async def second_reply() -> None:
                        replies.append(await call.reply())
                        answered.set()

                    await call.prompt(PROMPTS[1])
                    nursery.start_soon(second_reply)
                    # Persisted, then refused on publishing: the moment to die.
                    await conv1.wait_for("handler_failed")
                    raw = await bus.get(KEYS.state(call.call_sid))
                    assert raw is not None
                    state = json.loads(raw)
                    assert state["requests"] == 2 and state["outbox"]
                    assert [r.turn for r in await _requests(bus, call.call_sid)] == [1]
                    conv1.kill9()
                    async with open_switchboard(
                        "actor", "conversation", env={**env, "SWITCHBOARD_WORKER_ID": "c2"}
                    ) as conv2:
                        with trio.fail_after(TAKEOVER_GUARD_S):
                            await conv2.wait_for("outbox_checked", republished=1)
                        await answered.wait()
                        await call.prompt(PROMPTS[2])
                        replies.append(await call.reply())
                        requests = await _requests(bus, call.call_sid)
                        late = list(call.late_tokens)
            events = [e.get("event") for e in llm.events]
    assert [r.text for r in replies] == [_expected(n, p) for n, p in enumerate(PROMPTS, start=1)]
    assert all(r.frames[-1].last is True for r in replies)
    assert late == []
    # One request per turn; the republished one refers to what the first
    # carried (greeting, first prompt) and carries the first reply and the
    # second prompt.
    assert [r.turn for r in requests] == [1, 2, 3]
    republished = requests[1].body
    assert republished["history"]["count"] == 2
    assert republished["messages"] == [
        {"role": "assistant", "content": replies[0].text},
        {"role": "user", "content": PROMPTS[1]},
    ]
    assert "request_stale_history" not in events and "request_history_mismatch" not in events


async def _requests(bus: RedisBus, call_sid: str) -> list[Envelope]:
    out = []
    for stream in KEYS.llm_streams():
        for entry in await bus.range(stream):
            env = Envelope.decode(entry.fields)
            if env.kind == Kind.LLM_REQUEST and env.call == call_sid:
                out.append(env)
    return out
