"""An LLM worker is SIGKILLed mid-reply; the other one finishes it, nothing repeated.

Real processes on a real redis-server: one gateway, one conversation actor,
two LLM workers (scripted provider, 20 ms per word, a long reply). The
caller (the Twilio-side simulator) asks a question; once a few words of the
reply have reached the phone, the worker that is streaming it (the one that
logged ``completion_started``) gets ``kill -9``. The other worker must claim
the request after ``SWITCHBOARD_LLM_CLAIM_IDLE_MS`` and continue it: the
caller hears the whole reply exactly once, closed by ``last: true``.
"""

from __future__ import annotations

import signal

import pytest
import trio

from actors.providers.scripted import scripted_reply
from relay import Text
from switchboard.testing.procs import (
    HANG_GUARD_S,
    TAKEOVER_GUARD_S,
    SwitchboardProcess,
    first_to_log,
    open_switchboard,
)
from switchboard.testing.redis_server import open_redis_server
from switchboard.twilio import open_call

pytestmark = pytest.mark.system

TOKEN = "failover-test-token"
CLAIM_IDLE_MS = 1500
PROMPT = (
    "I would like to hear about the opening hours of every branch you have in the city, "
    "the parking options near each of them, and whether any of them open early on Sundays"
)
KILL_AFTER_FRAMES = 3


def _env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {
        "TWILIO_AUTH_TOKEN": TOKEN,
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_LLM_PROVIDER": "scripted",
        "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "20",
        "SWITCHBOARD_LLM_CLAIM_IDLE_MS": str(CLAIM_IDLE_MS),
        "SWITCHBOARD_PARTITIONS": "4",
        "SWITCHBOARD_LOG_LEVEL": "info",
        # A takeover may hold a reply past the reply deadline; the apology would
        # then be heard as well. This test counts replies, so it is off here.
        "SWITCHBOARD_REPLY_DEADLINE_S": "0",
        "ANTHROPIC_API_KEY": "",
    }
    env.update(extra)
    return env


async def test_a_killed_llm_worker_s_reply_is_finished_by_the_other_without_repeats() -> None:
    expected = scripted_reply([{"role": "user", "content": PROMPT}])
    killed: list[SwitchboardProcess] = []
    with trio.fail_after(HANG_GUARD_S):
        async with open_redis_server() as redis:
            env = _env(redis.url)
            async with (
                open_switchboard("actor", "conversation", env=env) as conversation,
                open_switchboard(
                    "actor", "llm", env={**env, "SWITCHBOARD_WORKER_ID": "llm-a"}
                ) as llm_a,
                open_switchboard(
                    "actor", "llm", env={**env, "SWITCHBOARD_WORKER_ID": "llm-b"}
                ) as llm_b,
                open_switchboard("gateway", "--port", "0", env=env) as gateway,
            ):
                workers = [llm_a, llm_b]
                frames_seen = 0

                async def on_token(frame: Text) -> None:
                    nonlocal frames_seen
                    frames_seen += 1
                    if frames_seen == KILL_AFTER_FRAMES and not frame.last:
                        streaming = await first_to_log(workers, "completion_started", turn=1)
                        streaming.kill9()
                        killed.append(streaming)

                async with open_call(f"http://127.0.0.1:{gateway.port}", auth_token=TOKEN) as call:
                    await call.prompt(PROMPT)
                    # Claim idle time, the 1 s claim check, the rest of the reply.
                    with trio.fail_after(TAKEOVER_GUARD_S):
                        reply = await call.reply(on_token=on_token)
                    survivor = llm_b if killed and killed[0] is llm_a else llm_a
                    with trio.fail_after(TAKEOVER_GUARD_S):
                        resumed = await survivor.wait_for("completion_resumed")
                        await survivor.wait_for("completion_done")
                processes = [conversation, survivor, gateway]
    assert killed, "the reply ended before a worker could be killed mid-reply"
    assert killed[0].returncode == -9
    # The caller heard the whole reply once, in order, closed by last:true.
    assert reply.text == expected
    assert reply.frames[-1].last is True
    assert all(frame.last is False for frame in reply.frames[:-1])
    assert resumed["next_index"] >= KILL_AFTER_FRAMES
    assert 0 < resumed["chars_sent"] < len(expected)
    assert all(p.returncode == 0 for p in processes), [p.returncode for p in processes]


async def test_a_stalled_llm_worker_that_wakes_mid_takeover_is_never_heard() -> None:
    """Issue 14: a worker paused past the claim timeout (SIGSTOP) wakes while
    the other streams the reply it took over. Both stream it (their batches
    fall differently); the caller hears it once, as one text, closed once."""
    expected = scripted_reply([{"role": "user", "content": PROMPT}])
    stopped: list[SwitchboardProcess] = []
    with trio.fail_after(HANG_GUARD_S):
        async with open_redis_server() as redis:
            # 60 ms a word: the taken-over reply is still streaming when the
            # paused worker wakes and carries on with its own.
            env = _env(redis.url, SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS="60")
            async with (
                open_switchboard("actor", "conversation", env=env) as conversation,
                open_switchboard(
                    "actor", "llm", env={**env, "SWITCHBOARD_WORKER_ID": "llm-a"}
                ) as llm_a,
                open_switchboard(
                    "actor", "llm", env={**env, "SWITCHBOARD_WORKER_ID": "llm-b"}
                ) as llm_b,
                open_switchboard("gateway", "--port", "0", env=env) as gateway,
            ):
                workers = [llm_a, llm_b]
                frames_seen = 0

                async def on_token(frame: Text) -> None:
                    nonlocal frames_seen
                    frames_seen += 1
                    if frames_seen == KILL_AFTER_FRAMES and not frame.last:
                        streaming = await first_to_log(workers, "completion_started", turn=1)
                        streaming.process.send_signal(signal.SIGSTOP)
                        stopped.append(streaming)
                        other = llm_b if streaming is llm_a else llm_a
                        # The other takes it over; then the paused one wakes.
                        await other.wait_for("completion_resumed")
                        streaming.process.send_signal(signal.SIGCONT)

                async with open_call(f"http://127.0.0.1:{gateway.port}", auth_token=TOKEN) as call:
                    await call.prompt(PROMPT)
                    with trio.fail_after(TAKEOVER_GUARD_S):
                        reply = await call.reply(on_token=on_token)
                        # The woken worker finished its attempt too, writing no
                        # second result: everything it wrote is on the gateway's
                        # stream before the next reply.
                        assert stopped, "the reply ended before a worker could be paused"
                        await stopped[0].wait_for("result_stale_generation", turn=1)
                        await gateway.wait_for("reply_generation_opened")
                        await call.prompt("Thank you.")
                        after = await call.reply()
                processes = [conversation, llm_a, llm_b, gateway]
    assert reply.text == expected
    assert [f.last for f in reply.frames].count(True) == 1 and reply.frames[-1].last
    # Nothing of the first reply after its last: true, before the next reply.
    texts = [m.token for m in call.received if isinstance(m, Text)]
    assert "".join(texts) == reply.text + after.text
    assert all(p.returncode == 0 for p in processes), [p.returncode for p in processes]
