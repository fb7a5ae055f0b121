"""End to end: a bus that is behind sheds speculation, and the caller still
hears exactly one reply.

Gateway, conversation and LLM run in this process on a ``FaultyBus`` over a
``MemoryBus``. The lag the shedding rules measure is wall-clock time (an
entry's ``ts`` against when it is applied or taken), which Trio's virtual
clock does not move: so these tests run on the real clock, and a stall of
the conversation's (or the LLM workers') reads held for 2.5 s, more than
twice the limit, makes the backlog. A slower machine only adds to that lag;
the limit is a whole second so that the part that must keep up (the
conversation, when only the LLM workers are held) does so on a loaded one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from actors.providers.scripted import scripted_reply
from bus.envelope import Envelope, Kind
from bus.keys import GROUP_CONVERSATION, GROUP_LLM
from bus.memory import MemoryBus
from relay import Text
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.testing.faults import FaultyBus, Stall
from switchboard.twilio import SimulatedCall, open_call

TOKEN = "e2e-shedding-token"
WORDS = "I would like a table for two"
FINAL = "I would like a table for two."
LIMIT_MS = 1000
BACKLOG_S = 2.5  # how long the stalled reads are held: the entries' lag


@dataclass
class Run:
    bus: MemoryBus
    settings: Settings
    call: SimulatedCall
    stall: Stall


@asynccontextmanager
async def stalled_call(group: str) -> AsyncIterator[Run]:
    """A call whose ``group``'s reads wait until ``run.stall`` is released."""
    settings = Settings.from_env(
        {
            "TWILIO_AUTH_TOKEN": TOKEN,
            "SWITCHBOARD_PORT": "0",
            "SWITCHBOARD_PARTITIONS": "2",
            "SWITCHBOARD_PARTIAL_PROMPTS": "true",
            "SWITCHBOARD_SILENCE_REPROMPT_S": "0",
            "SWITCHBOARD_FILLER_AFTER_S": "0",
            "SWITCHBOARD_REPLY_DEADLINE_S": "0",
            "SWITCHBOARD_SCRIPTED_FIRST_TOKEN_MS": "50",
            "SWITCHBOARD_SPECULATION_MAX_LAG_MS": str(LIMIT_MS),
        }
    )
    inner = MemoryBus()
    bus = FaultyBus(inner)
    stall = bus.stall("read_group", when=lambda _stream, g, *_: g == group, times=None)
    async with trio.open_nursery() as nursery:
        port = await start_dev(nursery, settings, bus)
        async with open_call(f"http://127.0.0.1:{port}", auth_token=TOKEN) as call:
            yield Run(inner, settings, call, stall)
        nursery.cancel_scope.cancel()


def _prompt(text: str, *, last: bool) -> str:
    return json.dumps({"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": last})


async def facts(run: Run, name: str) -> list[dict[str, object]]:
    events = [Envelope.decode(e.fields) for e in await run.bus.range(run.settings.keys.events)]
    return [dict(env.body) for env in events if env.body.get("fact") == name]


async def fact_seen(run: Run, name: str) -> dict[str, object]:
    """The first ``name`` fact, once it was written."""
    after = "0"
    while True:
        # A blocking tail read of the events stream: back when facts came.
        for entry in await run.bus.read(run.settings.keys.events, after, block_ms=1000):
            after = entry.id
            body = Envelope.decode(entry.fields).body
            if body.get("fact") == name:
                return dict(body)


async def answer_once(run: Run) -> str:
    """The final prompt, then the reply: what the caller heard of the call."""
    await run.call.send_raw(_prompt(FINAL, last=True))
    reply = await run.call.reply()
    assert reply.text == scripted_reply([{"role": "user", "content": FINAL}])
    return "".join(m.token for m in run.call.received if isinstance(m, Text))


async def test_a_conversation_behind_its_stream_starts_no_speculation() -> None:
    with trio.fail_after(60):
        async with stalled_call(GROUP_CONVERSATION) as run:
            await run.call.send_raw(_prompt(WORDS, last=False))
            await trio.sleep(BACKLOG_S)  # the interim prompt waits in the backlog
            run.stall.release()
            shed = await fact_seen(run, "speculation_shed")
            heard = await answer_once(run)
    assert shed["reason"] == "partial_lag" and int(str(shed["lag_ms"])) > LIMIT_MS
    assert not await facts(run, "speculation_started")
    assert heard.count(scripted_reply([{"role": "user", "content": FINAL}])) == 1
    requests = [Envelope.decode(e.fields) for e in await run.bus.range(run.settings.keys.llm)]
    assert [r.body.get("held", False) for r in requests] == [False]


async def test_an_llm_worker_behind_its_stream_drops_the_held_request_unrun() -> None:
    with trio.fail_after(60):
        async with stalled_call(GROUP_LLM) as run:
            await run.call.send_raw(_prompt(WORDS, last=False))
            started = await fact_seen(run, "speculation_started")
            await trio.sleep(BACKLOG_S)  # the held request waits in the backlog
            run.stall.release()
            shed = await fact_seen(run, "speculation_shed")
            heard = await answer_once(run)
    assert shed["reason"] == "queue_lag" and shed["reply_to"] == started["reply_to"]
    assert int(str(shed["lag_ms"])) > LIMIT_MS
    # Nothing of it was generated, nor held at the gateway, nor adopted.
    taken = [f["reply_to"] for f in await facts(run, "request_taken")]
    assert started["reply_to"] not in taken and len(taken) == 1
    assert not await facts(run, "speculation_adopted")
    assert heard.count(scripted_reply([{"role": "user", "content": FINAL}])) == 1
    gateway = run.settings.keys.gateway(run.settings.gateway_id)
    tokens = [Envelope.decode(e.fields) for e in await run.bus.range(gateway)]
    assert not [t for t in tokens if t.kind == Kind.LLM_TOKENS and t.body.get("held")]
