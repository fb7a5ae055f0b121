"""End to end: preemptive replies in the dev composition, as the caller hears them.

Gateway, conversation and LLM (the scripted provider with a time to first
token) run in this process on a MemoryBus under Trio's virtual clock; the
caller is the simulator, sending interim prompts as Twilio does (every
250 ms, the final 500 ms after the last). The bus is read afterwards to see
what the conversation decided (facts, cancels).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from actors.providers.scripted import scripted_reply
from bus.envelope import Envelope, Kind
from bus.memory import MemoryBus
from relay import SendDigits, Text
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.twilio import SimulatedCall, open_call

TOKEN = "e2e-preemptive-token"
TTFT_MS = 600.0
WORDS = ["I", "would", "like", "a", "table", "for", "two"]
FINAL = "I would like a table for two."


@dataclass
class Run:
    bus: MemoryBus
    settings: Settings
    call: SimulatedCall


@asynccontextmanager
async def dev_call(ttft_ms: float = TTFT_MS, **extra: str) -> AsyncIterator[Run]:
    settings = Settings.from_env(
        {
            "TWILIO_AUTH_TOKEN": TOKEN,
            "SWITCHBOARD_PORT": "0",
            "SWITCHBOARD_PARTITIONS": "2",
            "SWITCHBOARD_PARTIAL_PROMPTS": "true",
            # About speculation itself: a loaded test machine must not shed it.
            "SWITCHBOARD_SPECULATION_MAX_LAG_MS": "0",
            "SWITCHBOARD_SILENCE_REPROMPT_S": "0",
            "SWITCHBOARD_FILLER_AFTER_S": "0",
            "SWITCHBOARD_SCRIPTED_FIRST_TOKEN_MS": str(ttft_ms),
            "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "20",
            **extra,
        }
    )
    assert settings.conversation_config().preemptive  # on with partial prompts
    bus = MemoryBus()
    async with trio.open_nursery() as nursery:
        port = await start_dev(nursery, settings, bus)
        async with open_call(f"http://127.0.0.1:{port}", auth_token=TOKEN) as call:
            yield Run(bus, settings, call)
        nursery.cancel_scope.cancel()


def _prompt(text: str, *, last: bool) -> str:
    return json.dumps({"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": last})


async def utter(call: SimulatedCall, partials: list[str], final: str) -> float:
    """Interim prompts every 250 ms, the final 500 ms after the last; when it went."""
    for text in partials:
        await call.send_raw(_prompt(text, last=False))
        await trio.sleep(0.25)
    await trio.sleep(0.25)
    await call.send_raw(_prompt(final, last=True))
    return trio.current_time()


def growing(words: list[str]) -> list[str]:
    return [" ".join(words[:n]) for n in range(1, len(words) + 1)]


async def first_token_after(call: SimulatedCall, sent_at: float) -> tuple[float, str]:
    """Seconds from ``sent_at`` to the reply's first frame, and the reply's text."""
    first: list[float] = []

    async def on_token(_: Text) -> None:
        first.append(trio.current_time())

    reply = await call.reply(on_token=on_token)
    return first[0] - sent_at, reply.text


async def entries(bus: MemoryBus, stream: str, kind: Kind) -> list[Envelope]:
    out = [Envelope.decode(e.fields) for e in await bus.range(stream)]
    return [env for env in out if env.kind == kind]


async def facts(run: Run, name: str) -> list[dict[str, object]]:
    events = await entries(run.bus, run.settings.keys.events, Kind.EVENT)
    return [dict(env.body) for env in events if env.body.get("fact") == name]


async def test_an_identical_final_hears_the_reply_sooner_than_the_model_can(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(60):
        async with dev_call() as run:
            sent_at = await utter(run.call, growing(WORDS), FINAL)
            latency_s, text = await first_token_after(run.call, sent_at)
            # The next turn without partials: answered the usual way.
            await run.call.send_raw(_prompt("Thanks.", last=True))
            plain_at = trio.current_time()
            plain_s, _ = await first_token_after(run.call, plain_at)
            heard = [m.token for m in run.call.received if isinstance(m, Text)]
    # The caller's wait is shorter than the provider's time to first token.
    assert latency_s < TTFT_MS / 1000 <= plain_s
    history = [{"role": "user", "content": FINAL}]
    assert text == scripted_reply(history)
    assert "".join(heard).count(text) == 1  # heard once, nothing else of it
    adopted = await facts(run, "speculation_adopted")
    assert len(adopted) == 1
    # One per interim prompt (each stayed unchanged past the settle time);
    # each one the caller went on from was cancelled, the last adopted.
    started = [f["reply_to"] for f in await facts(run, "speculation_started")]
    assert len(started) == len(WORDS) and started[-1] == adopted[0]["speculation"]
    discarded = await facts(run, "speculation_discarded")
    assert [f["reply_to"] for f in discarded] == started[:-1]
    assert {f["reason"] for f in discarded} == {"extended"}
    # The next request's history holds the final words and the adopted reply.
    requests = await entries(run.bus, run.settings.keys.llm, Kind.LLM_REQUEST)
    assert requests[-1].body["messages"][-3:] == [
        {"role": "user", "content": FINAL},
        {"role": "assistant", "content": text},
        {"role": "user", "content": "Thanks."},
    ]


async def test_a_changed_final_hears_only_its_own_reply(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A short time to first token: the speculation's tokens reach the
    # gateway (held) before the final prompt arrives.
    partials = [*growing(WORDS[:-1]), "I would like a table for twos"]
    with trio.fail_after(60):
        async with dev_call(ttft_ms=100.0) as run:
            await utter(run.call, partials, FINAL)
            await run.call.reply()
            await run.call.send_raw(_prompt("Thanks.", last=True))
            await run.call.reply()
            heard = "".join(m.token for m in run.call.received if isinstance(m, Text))
            held = [
                env
                for env in await entries(
                    run.bus, run.settings.keys.gateway(run.settings.gateway_id), Kind.LLM_TOKENS
                )
                if env.body.get("held")
            ]
    assert "twos" not in heard
    assert scripted_reply([{"role": "user", "content": FINAL}]) in heard
    assert held, "the speculation's tokens reached the gateway, held"
    discarded = await facts(run, "speculation_discarded")
    assert [f["reason"] for f in discarded][-1] == "mismatch"
    cancels = await entries(run.bus, run.settings.keys.control, Kind.CONTROL_CANCEL)
    assert [c.body["reply_to"] for c in cancels] == [f["reply_to"] for f in discarded]
    assert not await facts(run, "speculation_adopted")


async def test_an_interrupt_during_a_speculation_discards_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(60):
        async with dev_call(ttft_ms=100.0) as run:
            for text in growing(WORDS):
                await run.call.send_raw(_prompt(text, last=False))
                await trio.sleep(0.25)
            # The speculation runs (its tokens held); the caller barges in.
            await run.call.interrupt("", 0.0)
            await trio.sleep(0.25)
            await run.call.send_raw(_prompt(FINAL, last=True))
            reply = await run.call.reply()
            await run.call.send_raw(_prompt("Thanks.", last=True))
            await run.call.reply()
            heard = "".join(m.token for m in run.call.received if isinstance(m, Text))
    assert reply.text == scripted_reply([{"role": "user", "content": FINAL}])
    assert heard.count(reply.text) == 1  # answered once: the held reply never played
    reasons = [f["reason"] for f in await facts(run, "speculation_discarded")]
    assert reasons[-1] == "interrupt" and set(reasons[:-1]) <= {"extended"}
    assert not await facts(run, "speculation_adopted")


async def test_a_held_replys_tool_acts_once_after_adoption(
    autojump_clock: trio.abc.Clock,
) -> None:
    words = ["Please", "press", "1", "2", "3"]
    final = "Please press 1 2 3."
    with trio.fail_after(60):
        async with dev_call(ttft_ms=100.0, SWITCHBOARD_TOOLS="send_digits") as run:
            await utter(run.call, growing(words), final)
            reply = await run.call.reply()
            await run.call.send_raw(_prompt("Thanks.", last=True))
            await run.call.reply()
            digits = [m for m in run.call.received if isinstance(m, SendDigits)]
    # The speculations on "Please", "Please press", ... never ran a tool; the
    # adopted one ran it once, after the adoption.
    assert [d.digits for d in digits] == ["123"]
    assert reply.text.startswith("Sending the digits now.")
    adopts = await entries(run.bus, run.settings.keys.control, Kind.CONTROL_ADOPT)
    assert len(adopts) == 1
    (adopted,) = await facts(run, "speculation_adopted")
    assert adopts[0].body["reply_to"] == adopted["speculation"]
