"""SIGTERM on ``switchboard dev`` (what ``make run`` starts) drains, as a gateway does.

The real CLI process, on its in-memory bus. A call is up when SIGTERM
arrives: the process takes no new call (503) and is no longer ready, while
the live call still talks (the conversation and LLM actors in the same
process keep serving it); once it hangs up, the process exits 0 by itself.
A second signal stops it at once, whatever is still up.
"""

from __future__ import annotations

import pytest
import trio

from switchboard.testing.balancer import is_ready
from switchboard.testing.procs import HANG_GUARD_S, TAKEOVER_GUARD_S, open_switchboard
from switchboard.twilio import HttpError, open_call

pytestmark = pytest.mark.system

TOKEN = "dev-drain-token"
ENV = {
    "TWILIO_AUTH_TOKEN": TOKEN,
    "SWITCHBOARD_LLM_PROVIDER": "scripted",
    "SWITCHBOARD_LOG_LEVEL": "info",
    # Far past any hang guard: the process may only stop because the call ended
    # (or a second signal came), never because the deadline ran out.
    "SWITCHBOARD_DRAIN_DEADLINE_S": "3600",
    "ANTHROPIC_API_KEY": "",
}


async def test_sigterm_lets_the_live_call_finish_then_exits_0() -> None:
    with trio.fail_after(HANG_GUARD_S):
        async with open_switchboard("dev", "--port", "0", env=ENV) as dev:
            url = f"http://127.0.0.1:{dev.port}"
            async with open_call(url, auth_token=TOKEN) as call:
                await call.prompt("My name is Ada.")
                first = await call.reply()
                dev.process.terminate()
                await dev.wait_for("gateway_draining", calls=1)
                assert not await is_ready("127.0.0.1", dev.port)
                with pytest.raises(HttpError) as refused:
                    async with open_call(url, auth_token=TOKEN):
                        pass
                assert refused.value.status == 503
                # Still served end to end while draining: turn 2 of the same call.
                await call.prompt("What did I just say?")
                second = await call.reply()
                assert dev.process.returncode is None
                await call.hangup()
            drained = await dev.wait_for("gateway_drained")
            with trio.fail_after(TAKEOVER_GUARD_S):
                await dev.process.wait()
    assert first.text.startswith("You said: My name is Ada.")
    assert second.frames[-1].last is True
    assert "message 2 from you" in second.text
    assert drained["handed_over"] == 0
    assert dev.returncode == 0
    assert any(e.get("event") == "shutdown_complete" for e in dev.events)


async def test_a_second_signal_stops_at_once() -> None:
    with trio.fail_after(HANG_GUARD_S):
        async with open_switchboard("dev", "--port", "0", env=ENV) as dev:
            url = f"http://127.0.0.1:{dev.port}"
            async with open_call(url, auth_token=TOKEN) as call:
                await call.prompt("Hello there.")
                await call.reply()
                dev.process.terminate()
                await dev.wait_for("gateway_draining", calls=1)
                # The call stays up; the deadline is an hour away.
                dev.process.terminate()
                with trio.fail_after(TAKEOVER_GUARD_S):
                    await dev.process.wait()
                await call.wait_ended()
    assert dev.returncode == 0
    assert not any(e.get("event") == "gateway_drained" for e in dev.events)
