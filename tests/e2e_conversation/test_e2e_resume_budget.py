"""End to end: a call whose sessions keep failing is resumed twice, then let go.

The dev composition on a MemoryBus; the caller is the simulator, whose
failed sessions reach /action as Twilio reports them (``ErrorCode``).
"""

from __future__ import annotations

import trio

from bus.memory import MemoryBus
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.twilio import open_call

TOKEN = "e2e-resume-token"
SETTINGS = {
    "TWILIO_AUTH_TOKEN": TOKEN,
    "SWITCHBOARD_PORT": "0",
    "SWITCHBOARD_PARTITIONS": "2",
    "SWITCHBOARD_WELCOME_GREETING": "Hi.",
    "SWITCHBOARD_SILENCE_REPROMPT_S": "0",
    "SWITCHBOARD_RESUME_APOLOGY": "Sorry, we have to stop here.",
}


async def test_a_dropping_call_is_resumed_twice_then_hears_the_apology() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            port = await start_dev(nursery, Settings.from_env(SETTINGS), MemoryBus())
            async with open_call(f"http://127.0.0.1:{port}", auth_token=TOKEN) as first:
                await first.prompt("Hello?")
                await first.reply()
                assert (await first.drop()).verbs == ("Connect",)
                async with first.follow_action() as second:
                    await second.prompt("Still there?")
                    await second.reply()
                    assert (await second.drop()).verbs == ("Connect",)
                    async with second.follow_action() as third:
                        final = await third.drop()
            nursery.cancel_scope.cancel()
    assert final is not None and final.verbs == ("Say", "Hangup")
    assert "<Say>Sorry, we have to stop here.</Say>" in final.xml
    assert third.action_request is not None
    assert third.action_request["ErrorCode"] == "64105"


async def test_a_failure_that_would_repeat_is_not_resumed() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            port = await start_dev(nursery, Settings.from_env(SETTINGS), MemoryBus())
            async with open_call(f"http://127.0.0.1:{port}", auth_token=TOKEN) as call:
                action = await call.drop(error=("64106", "Invalid argument"))
            nursery.cancel_scope.cancel()
    assert action is not None and action.verbs == ("Say", "Hangup")
