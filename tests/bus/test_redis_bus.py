"""``RedisBus`` specifics: deleted pending entries, scripts after a restart, live trimming."""

from __future__ import annotations

import pytest
import trio
from structlog.testing import capture_logs

from bus.base import ConnectionLost
from bus.redis import RedisBus, open_redis_bus
from switchboard.testing.redis_server import RedisServerHandle, free_port


async def test_deleted_pending_entries_are_skipped_and_dropped(redis_url: str) -> None:
    async with open_redis_bus(redis_url) as bus:
        with trio.fail_after(10):
            await bus.ensure_group("s", "g")
            sent = [await bus.append("s", {"n": str(i)}) for i in range(4)]
            await bus.read_group("s", "g", "c")
            await bus.client.execute("XDEL", "s", sent[0], sent[2])
            with capture_logs() as logs:
                again = await bus.read_group("s", "g", "c", start="0")
            assert [e.id for e in again] == [sent[1], sent[3]]
            assert [e.deliveries for e in again] == [2, 2]
            assert sorted(e["id"] for e in logs if e["event"] == "bus.pending_entry_trimmed") == [
                sent[0],
                sent[2],
            ]
            assert await bus.pending_count("s", "g") == 2

            await bus.client.execute("XDEL", "s", sent[1])
            await trio.sleep(0.02)  # idleness is elapsed time on the server
            with capture_logs() as logs:
                claimed = await bus.claim_idle("s", "g", "other", min_idle_ms=10)
            assert [(e.id, e.deliveries) for e in claimed] == [(sent[3], 3)]
            assert [e["id"] for e in logs if e["event"] == "bus.pending_entry_trimmed"] == [sent[1]]
            assert await bus.pending_count("s", "g") == 1


async def test_scripts_work_again_after_a_server_restart(
    redis_server: RedisServerHandle,
) -> None:
    bus = RedisBus.from_url(redis_server.url)
    try:
        with trio.fail_after(10):
            first = await bus.acquire_lease("{p1}:lease", "a", 60_000)
            assert first is not None
            await redis_server.restart()
            with pytest.raises(ConnectionLost):
                await bus.get("x")
            # The new server has no scripts cached: EVALSHA falls back to EVAL.
            again = await bus.acquire_lease("{p1}:lease", "a", 60_000)
            assert again is not None
            assert again.epoch == 1  # a fresh server: the epoch counter restarted too
            assert await bus.renew_lease(again, 60_000) is True
    finally:
        await bus.aclose()


async def test_append_trims_by_age_in_real_time(redis_url: str) -> None:
    # ~ trims whole nodes; one entry per node makes it exact for this check.
    async with open_redis_bus(redis_url, retention_ms=100) as bus:
        with trio.fail_after(10):
            await bus.client.execute("CONFIG", "SET", "stream-node-max-entries", 1)
            old = [await bus.append("s", {"n": str(i)}) for i in range(3)]
            await trio.sleep(0.15)  # let the entries age past the retention
            fresh = await bus.append("s", {"n": "fresh"})
            assert [e.id for e in await bus.range("s")] == [fresh]
            assert len(old) == 3


async def test_open_redis_bus_fails_fast_without_a_server() -> None:
    with trio.fail_after(10), pytest.raises(ConnectionLost):
        async with open_redis_bus(f"redis://127.0.0.1:{free_port()}/0"):
            pass  # pragma: no cover - never reached
