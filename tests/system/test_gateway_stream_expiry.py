"""A stopped gateway's stream does not stay in Redis for ever.

Real gateway process on a real redis-server. While the gateway runs, its
stream (named for its ``HOST-PID``) carries a time to live that it keeps
refreshing; after ``kill -9`` nothing refreshes it and Redis deletes it.
Before, such streams were never trimmed nor deleted: every restart of a
gateway left one behind.
"""

from __future__ import annotations

import pytest
import trio

from bus.keys import Keys
from bus.resp import RedisClient
from switchboard.testing.procs import HANG_GUARD_S, open_switchboard
from switchboard.testing.redis_server import open_redis_server

pytestmark = pytest.mark.system

GATEWAY_ID = "host-4242"
STREAM = Keys().gateway(GATEWAY_ID)


async def test_the_stream_of_a_killed_gateway_expires() -> None:
    with trio.fail_after(HANG_GUARD_S):
        async with open_redis_server() as redis:
            admin = RedisClient.from_url(redis.url)
            # A reply routed to the gateway before it started: the stream exists.
            await admin.execute("XADD", STREAM, "*", "k", "v")
            env = {
                "SWITCHBOARD_REDIS_URL": redis.url,
                "SWITCHBOARD_GATEWAY_ID": GATEWAY_ID,
                "SWITCHBOARD_GATEWAY_STREAM_TTL_S": "2",
                "SWITCHBOARD_TRIM_INTERVAL_S": "0.2",
                "ANTHROPIC_API_KEY": "",
            }
            async with open_switchboard("gateway", "--port", "0", env=env) as gateway:
                ttl_alive = -1
                while ttl_alive < 0:  # the first trim pass runs right after start
                    ttl_alive = int(await admin.execute("PTTL", STREAM))
                    await trio.sleep(0.05)
                await trio.sleep(3)  # longer than the TTL: refreshed, so still there
                exists_while_running = int(await admin.execute("EXISTS", STREAM))
                gateway.kill9()
                with trio.fail_after(10):
                    while True:  # Redis expires it on its own: nothing to wait on but Redis
                        if not int(await admin.execute("EXISTS", STREAM)):
                            break
                        await trio.sleep(0.1)
            await admin.aclose()
    assert 0 < ttl_alive <= 2000
    assert exists_while_running == 1
