"""Two gateway processes on one Redis agree on how often a call was resumed.

Twilio calls whichever gateway its load balancer picks for each ``/action``
callback; the resume count lives in Redis, so the limit holds across them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import trio

from switchboard.testing.procs import HANG_GUARD_S, open_switchboard
from switchboard.testing.redis_server import open_redis_server
from switchboard.twilio.http import Origin, http_request

pytestmark = pytest.mark.system

TOKEN = "system-resume-token"
PUBLIC = "https://agent.example.com"
CALL = "CA0000000000000000000000000000r001"


async def _action(port: int, session: str, code: str) -> list[str]:
    form = {
        "CallSid": CALL,
        "SessionId": session,
        "SessionStatus": "failed",
        "CallStatus": "in-progress",
        "ErrorCode": code,
        "ErrorMessage": "Websocket ended",
    }
    origin = Origin(tls=False, host="127.0.0.1", port=port)
    response = await http_request(origin, "POST", f"{PUBLIC}/action", form, TOKEN)
    return [child.tag for child in ET.fromstring(response.text)]


async def test_two_gateway_processes_resume_a_call_at_most_twice() -> None:
    with trio.fail_after(HANG_GUARD_S):
        async with open_redis_server() as redis:
            env = {
                "TWILIO_AUTH_TOKEN": TOKEN,
                "SWITCHBOARD_PUBLIC_URL": PUBLIC,
                "SWITCHBOARD_REDIS_URL": redis.url,
                "SWITCHBOARD_PARTITIONS": "4",
                "ANTHROPIC_API_KEY": "",
            }
            env_a = {**env, "SWITCHBOARD_GATEWAY_ID": "gw-a"}
            env_b = {**env, "SWITCHBOARD_GATEWAY_ID": "gw-b"}
            async with (
                open_switchboard("gateway", "--port", "0", env=env_a) as a,
                open_switchboard("gateway", "--port", "0", env=env_b) as b,
            ):
                answers = [
                    await _action(a.port, "VX1", "64105"),
                    await _action(b.port, "VX2", "64105"),
                    await _action(b.port, "VX1", "64105"),  # Twilio retried the first
                    await _action(a.port, "VX3", "64105"),
                ]
    assert answers == [["Connect"], ["Connect"], ["Connect"], ["Say", "Hangup"]]
