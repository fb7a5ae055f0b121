"""The dev composition (gateway + actors on one MemoryBus) in this process.

Lets the test look at the bus directly: the LLM request of turn 3 must carry
the greeting and turns 1-2 in order, exactly as the caller heard them.
"""

from __future__ import annotations

import trio

from bus.envelope import Envelope, Kind
from bus.memory import MemoryBus
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.testing.requests import requested_messages
from switchboard.twilio import open_call

TOKEN = "in-process-token"
GREETING = "Welcome to the in-process test."
PROMPTS = ["First thing.", "Second thing.", "Third thing?"]


async def test_turn_three_request_carries_greeting_and_history() -> None:
    settings = Settings.from_env(
        {
            "TWILIO_AUTH_TOKEN": TOKEN,
            "SWITCHBOARD_WELCOME_GREETING": GREETING,
            "SWITCHBOARD_PORT": "0",
            "SWITCHBOARD_PARTITIONS": "4",
        }
    )
    bus = MemoryBus()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await start_dev(nursery, settings, bus)
            replies = []
            async with open_call(f"http://127.0.0.1:{port}", auth_token=TOKEN) as call:
                for text in PROMPTS:
                    await call.prompt(text)
                    replies.append(await call.reply())
                call_sid = call.call_sid
            nursery.cancel_scope.cancel()
    requests = [
        env
        for env in (Envelope.decode(e.fields) for e in await bus.range(settings.keys.llm))
        if env.kind == Kind.LLM_REQUEST and env.call == call_sid
    ]
    assert [r.turn for r in requests] == [1, 2, 3]
    assert await requested_messages(bus, settings.keys, requests[2]) == [
        {"role": "assistant", "content": GREETING},
        {"role": "user", "content": PROMPTS[0]},
        {"role": "assistant", "content": replies[0].text},
        {"role": "user", "content": PROMPTS[1]},
        {"role": "assistant", "content": replies[1].text},
        {"role": "user", "content": PROMPTS[2]},
    ]
    assert requests[2].body["system"] == settings.system_prompt
    for reply in replies:
        assert reply.frames[-1].last is True
