"""Preemptive replies across real processes on a real redis-server.

A gateway, a conversation actor and LLM workers (scripted provider) run as
the project's own CLI processes; the caller is the Twilio-side simulator,
sending interim prompts as Twilio does with ``partialPrompts``. What is
checked is what the caller hears and what the processes logged, never how
fast (the in-process test on a virtual clock shows the time saved).
"""

from __future__ import annotations

import json

import pytest
import trio

from actors.providers.scripted import scripted_reply
from bus.base import Bus
from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.redis import open_redis_bus
from relay import Text
from switchboard.testing.procs import (
    HANG_GUARD_S,
    TAKEOVER_GUARD_S,
    SwitchboardProcess,
    first_to_log,
    open_switchboard,
)
from switchboard.testing.redis_server import open_redis_server
from switchboard.twilio import SimulatedCall, open_call

pytestmark = pytest.mark.system

TOKEN = "preemptive-processes-token"
CLAIM_IDLE_MS = 1500
FIRST = "I would like a table for two tonight."
SECOND = "And could we sit by the window?"
LONG = (
    "Please tell me about the opening hours of every branch you have in the city "
    "and whether any of them open early on Sundays"
)


def _env(redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "TWILIO_AUTH_TOKEN": TOKEN,
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_LLM_PROVIDER": "scripted",
        "SWITCHBOARD_PARTIAL_PROMPTS": "true",
        # About speculation itself: a loaded test machine must not shed it.
        "SWITCHBOARD_SPECULATION_MAX_LAG_MS": "0",
        "SWITCHBOARD_PARTITIONS": "4",
        "SWITCHBOARD_LOG_LEVEL": "info",
        "SWITCHBOARD_SILENCE_REPROMPT_S": "0",
        "SWITCHBOARD_FILLER_AFTER_S": "0",
        # A takeover may hold a reply past the reply deadline; the apology
        # would then be heard as well. These tests count replies.
        "SWITCHBOARD_REPLY_DEADLINE_S": "0",
        "SWITCHBOARD_LLM_CLAIM_IDLE_MS": str(CLAIM_IDLE_MS),
        "ANTHROPIC_API_KEY": "",
        **extra,
    }


async def _interim(call: SimulatedCall, text: str) -> None:
    frame = {"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": False}
    await call.send_raw(json.dumps(frame))


async def _final(call: SimulatedCall, text: str) -> None:
    frame = {"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": True}
    await call.send_raw(json.dumps(frame))


async def _utter(call: SimulatedCall, partials: list[str], final: str) -> None:
    """Interim prompts every 250 ms, the final 500 ms after the last, as Twilio."""
    for text in partials:
        await _interim(call, text)
        await trio.sleep(0.25)
    await trio.sleep(0.25)
    await _final(call, final)


def _growing(text: str) -> list[str]:
    words = text.split()
    return [" ".join(words[:n]) for n in range(1, len(words) + 1)]


async def _held_text_reached(bus: Bus, stream: str) -> None:
    """Wait until a held token batch with text is on the gateway's stream."""
    after = "0"
    while True:
        for entry in await bus.read(stream, after, count=100, block_ms=1000):
            after = entry.id
            env = Envelope.decode(entry.fields)
            if env.kind == Kind.LLM_TOKENS and env.body.get("held") and env.body["text"]:
                return


def _heard(call: SimulatedCall) -> str:
    return "".join(m.token for m in call.received if isinstance(m, Text))


async def test_speculation_with_three_processes_on_redis() -> None:
    first = scripted_reply([{"role": "user", "content": FIRST}])
    changed = [*_growing(SECOND)[:-1], "And could we sit by the windows"]
    with trio.fail_after(HANG_GUARD_S):
        async with open_redis_server() as redis:
            env = _env(redis.url, SWITCHBOARD_SCRIPTED_FIRST_TOKEN_MS="300")
            async with (
                open_switchboard("actor", "conversation", env=env) as conversation,
                open_switchboard("actor", "llm", env=env) as llm,
                open_switchboard("gateway", "--port", "0", env=env) as gateway,
            ):
                url = f"http://127.0.0.1:{gateway.port}"
                async with open_call(url, auth_token=TOKEN) as call:
                    with trio.fail_after(TAKEOVER_GUARD_S):
                        # Same words in the final: the held reply is adopted.
                        await _utter(call, _growing(FIRST), FIRST)
                        reply = await call.reply()
                        adopted = await conversation.wait_for("speculation_adopted")
                        # A revised last word: the speculation on it is cancelled.
                        await _utter(call, changed, SECOND)
                        second = await call.reply()
                        mismatch = await conversation.wait_for(
                            "speculation_discarded", reason="mismatch"
                        )
                    heard = _heard(call)
                processes = [conversation, llm, gateway]
    assert reply.text == first and reply.frames[-1].last
    assert adopted["reply_to"] < adopted["seq"]  # an interim prompt's reply answered the final
    history = [
        {"role": "user", "content": FIRST},
        {"role": "assistant", "content": first},
        {"role": "user", "content": SECOND},
    ]
    assert second.text == scripted_reply(history)
    assert "windows" not in heard and heard == reply.text + second.text
    assert mismatch["reply_to"] > adopted["seq"]  # the revised interim prompt's
    assert all(p.returncode == 0 for p in processes), [p.returncode for p in processes]


async def test_a_killed_llm_worker_holding_a_speculation_neither_loses_nor_repeats_it() -> None:
    expected = scripted_reply([{"role": "user", "content": LONG}])
    killed: list[SwitchboardProcess] = []
    with trio.fail_after(HANG_GUARD_S):
        async with open_redis_server() as redis:
            # 60 ms a word: the held reply is still streaming when its worker dies.
            env = _env(redis.url, SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS="60")
            stream = Keys(partitions=4).gateway("gw-held")
            async with (
                open_switchboard("actor", "conversation", env=env) as conversation,
                open_switchboard(
                    "actor", "llm", env={**env, "SWITCHBOARD_WORKER_ID": "llm-a"}
                ) as llm_a,
                open_switchboard(
                    "actor", "llm", env={**env, "SWITCHBOARD_WORKER_ID": "llm-b"}
                ) as llm_b,
                open_switchboard(
                    "gateway", "--port", "0", env={**env, "SWITCHBOARD_GATEWAY_ID": "gw-held"}
                ) as gateway,
                open_redis_bus(redis.url) as bus,
            ):
                workers = [llm_a, llm_b]
                url = f"http://127.0.0.1:{gateway.port}"
                async with open_call(url, auth_token=TOKEN) as call:
                    with trio.fail_after(TAKEOVER_GUARD_S):
                        await _interim(call, LONG)
                        holding = await first_to_log(workers, "completion_started", turn=1)
                        await _held_text_reached(bus, stream)
                        holding.kill9()
                        killed.append(holding)
                        await _final(call, LONG)
                        reply = await call.reply()
                        survivor = llm_b if holding is llm_a else llm_a
                        resumed = await survivor.wait_for("completion_resumed")
                        await conversation.wait_for("speculation_adopted")
                    heard = _heard(call)
                processes = [conversation, survivor, gateway]
    assert killed[0].returncode == -9
    # Neither lost nor repeated: the whole reply once, closed once.
    assert reply.text == expected and heard == expected
    assert [f.last for f in reply.frames].count(True) == 1 and reply.frames[-1].last
    assert 0 < resumed["chars_sent"] < len(expected)
    assert all(p.returncode == 0 for p in processes), [p.returncode for p in processes]
