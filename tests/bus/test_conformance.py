"""One conformance suite for every ``Bus`` implementation.

Each test runs against ``MemoryBus`` and ``RedisBus`` on one node and on a
Redis Cluster (the ``bus`` fixture, ``tests/bus/conftest.py``). Keys that a
script uses together share a hash tag (``{L}``), as the contract asks.
Time-dependent checks (idle claims, TTLs, lease expiry) use small real
durations, because Redis measures idleness on its own clock: the short
``trio.sleep`` calls below let that time pass; they do not wait for events.
"""

from __future__ import annotations

from typing import Protocol

import pytest
import trio
import trio.testing

from bus.base import Bus, CommandError, Entry, parse_id
from bus.envelope import now_ms


class RawBus(Bus, Protocol):
    """Both implementations can append with an explicit id (imports, tests)."""

    async def append_with_id(self, stream: str, entry_id: str, fields: dict[str, str]) -> str: ...


def ids(entries: list[Entry]) -> list[str]:
    return [e.id for e in entries]


def bodies(entries: list[Entry]) -> list[str]:
    return [e.fields["n"] for e in entries]


async def test_append_then_read_in_order(bus: Bus) -> None:
    with trio.fail_after(5):
        got = [await bus.append("s", {"n": str(i), "x": "y"}) for i in range(20)]
        parsed = [parse_id(i) for i in got]
        assert parsed == sorted(set(parsed))
        entries = await bus.read("s", "0")
        assert ids(entries) == got
        assert bodies(entries) == [str(i) for i in range(20)]
        assert entries[0].fields == {"n": "0", "x": "y"}
        assert entries[0].stream == "s"
        # Reading after an id gives only what follows it; count bounds the batch.
        assert bodies(await bus.read("s", got[4], count=3)) == ["5", "6", "7"]


async def test_append_replicated_appends_like_append(bus: Bus) -> None:
    """Confirmed by a replica where there is one (a cluster's master); else a plain append."""
    with trio.fail_after(30):
        first = await bus.append("s", {"n": "0"})
        got = [await bus.append_replicated("s", {"n": str(i), "x": "y"}) for i in (1, 2)]
        assert parse_id(first) < parse_id(got[0]) < parse_id(got[1])
        entries = await bus.read("s", "0")
        assert ids(entries) == [first, *got]
        assert entries[2].fields == {"n": "2", "x": "y"}


async def test_ids_are_wall_clock_ms(bus: Bus) -> None:
    with trio.fail_after(5):
        before = now_ms()
        entry_id = await bus.append("s", {"n": "1"})
        ms, _ = parse_id(entry_id)
        # Generous slack: the server's clock and ours are read at different moments.
        assert before - 1000 <= ms <= now_ms() + 1000


async def test_append_many(bus: Bus) -> None:
    with trio.fail_after(5):
        got = await bus.append_many(
            [("a", {"n": "1"}), ("b", {"n": "2"}), ("a", {"n": "3"}), ("a", {"n": "4"})]
        )
        assert len(got) == 4
        assert bodies(await bus.read("a", "0")) == ["1", "3", "4"]
        assert ids(await bus.read("a", "0")) == [got[0], got[2], got[3]]
        assert ids(await bus.read("b", "0")) == [got[1]]
        assert parse_id(got[0]) < parse_id(got[2]) < parse_id(got[3])
        assert await bus.append_many([]) == []


async def test_each_entry_goes_to_one_consumer(bus: Bus) -> None:
    with trio.fail_after(5):
        await bus.ensure_group("s", "g")
        await bus.ensure_group("s", "g")  # idempotent
        sent = [await bus.append("s", {"n": str(i)}) for i in range(10)]
        a = await bus.read_group("s", "g", "a", count=4)
        b = await bus.read_group("s", "g", "b", count=100)
        assert ids(a) == sent[:4]
        assert ids(b) == sent[4:]
        assert all(e.deliveries == 1 for e in a + b)
        assert await bus.read_group("s", "g", "a") == []
        # Another group sees everything again.
        await bus.ensure_group("s", "other")
        assert ids(await bus.read_group("s", "other", "x")) == sent


async def test_group_created_at_end_skips_history(bus: Bus) -> None:
    with trio.fail_after(5):
        await bus.append("s", {"n": "old"})
        await bus.ensure_group("s", "g", start="$")
        new = await bus.append("s", {"n": "new"})
        assert ids(await bus.read_group("s", "g", "c")) == [new]


async def test_ensure_group_creates_stream(bus: Bus) -> None:
    with trio.fail_after(5):
        await bus.ensure_group("fresh", "g")
        assert await bus.read_group("fresh", "g", "c") == []
        assert await bus.pending_count("fresh", "g") == 0
        assert await bus.last_id("fresh") == "0-0"


async def test_missing_group_is_a_command_error(bus: Bus) -> None:
    with trio.fail_after(5):
        await bus.append("s", {"n": "1"})
        with pytest.raises(CommandError):
            await bus.read_group("s", "nope", "c")
        with pytest.raises(CommandError):
            await bus.read_group("missing", "nope", "c")
        with pytest.raises(CommandError):
            await bus.pending_count("s", "nope")
        assert await bus.ack("s", "nope", ["1-0"]) == 0


async def test_ack_and_pending(bus: Bus) -> None:
    with trio.fail_after(5):
        await bus.ensure_group("s", "g")
        sent = [await bus.append("s", {"n": str(i)}) for i in range(5)]
        await bus.read_group("s", "g", "c")
        assert await bus.pending_count("s", "g") == 5
        assert await bus.ack("s", "g", sent[:2]) == 2
        assert await bus.ack("s", "g", sent[:2]) == 0  # already acked
        assert await bus.ack("s", "g", []) == 0
        assert await bus.pending_count("s", "g") == 3
        assert await bus.ack("s", "g", [sent[2], "999-0"]) == 1
        assert await bus.pending_count("s", "g") == 2


async def test_group_lag_counts_entries_not_yet_delivered(bus: Bus) -> None:
    with trio.fail_after(5):
        await bus.ensure_group("s", "g")
        assert await bus.group_lag("s", "g") == 0
        sent = [await bus.append("s", {"n": str(i)}) for i in range(5)]
        assert await bus.group_lag("s", "g") == 5
        await bus.read_group("s", "g", "c", count=2)
        assert await bus.group_lag("s", "g") == 3  # delivered, even though not acked
        assert await bus.pending_count("s", "g") == 2
        await bus.ack("s", "g", sent[:2])
        assert await bus.group_lag("s", "g") == 3  # acking is not reading
        await bus.read_group("s", "g", "c")
        assert await bus.group_lag("s", "g") == 0
        await bus.ensure_group("s", "late", start="$")
        await bus.append("s", {"n": "new"})
        assert await bus.group_lag("s", "late") == 1
        with pytest.raises(CommandError):
            await bus.group_lag("s", "nope")


async def test_reread_own_pending_counts_deliveries(bus: Bus) -> None:
    with trio.fail_after(5):
        await bus.ensure_group("s", "g")
        sent = [await bus.append("s", {"n": str(i)}) for i in range(4)]
        await bus.read_group("s", "g", "a", count=3)
        await bus.read_group("s", "g", "b", count=1)
        await bus.ack("s", "g", [sent[1]])

        first = await bus.read_group("s", "g", "a", start="0")
        assert ids(first) == [sent[0], sent[2]]
        assert bodies(first) == ["0", "2"]
        assert [e.deliveries for e in first] == [2, 2]
        second = await bus.read_group("s", "g", "a", start="0")
        assert [e.deliveries for e in second] == [3, 3]
        # Pending re-reads continue after a given id, and honour count.
        assert ids(await bus.read_group("s", "g", "a", start=sent[0])) == [sent[2]]
        assert ids(await bus.read_group("s", "g", "a", start="0", count=1)) == [sent[0]]
        # ">" never hands pending entries out again; b sees only its own.
        assert await bus.read_group("s", "g", "a") == []
        assert ids(await bus.read_group("s", "g", "b", start="0")) == [sent[3]]
        assert await bus.read_group("s", "g", "nobody", start="0") == []


async def test_claim_idle_takes_over_a_dead_consumers_entries(bus: Bus) -> None:
    with trio.fail_after(5):
        await bus.ensure_group("s", "g")
        sent = [await bus.append("s", {"n": str(i)}) for i in range(3)]
        await bus.read_group("s", "g", "dead")
        assert await bus.claim_idle("s", "g", "alive", min_idle_ms=10_000) == []
        # Let idleness accrue; the margins stay wide so a loaded machine that
        # stalls between two commands cannot make this flaky.
        await trio.sleep(0.25)
        claimed = await bus.claim_idle("s", "g", "alive", min_idle_ms=200, count=2)
        assert ids(claimed) == sent[:2]
        assert [e.deliveries for e in claimed] == [2, 2]
        assert bodies(claimed) == ["0", "1"]
        # The claim reset their idle time: claiming again right away finds only the third.
        again = await bus.claim_idle("s", "g", "alive", min_idle_ms=200)
        assert ids(again) == [sent[2]]
        assert await bus.read_group("s", "g", "dead", start="0") == []
        mine = await bus.read_group("s", "g", "alive", start="0")
        assert ids(mine) == sent
        assert await bus.pending_count("s", "g") == 3
        with pytest.raises(CommandError):
            await bus.claim_idle("s", "nope", "alive", min_idle_ms=0)


async def test_blocking_group_read_wakes_on_append(bus: Bus) -> None:
    with trio.fail_after(5):
        await bus.ensure_group("s", "g")
        got: list[Entry] = []

        async def reader() -> None:
            got.extend(await bus.read_group("s", "g", "c", block_ms=20_000))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            sent = await bus.append("s", {"n": "1"})
        assert ids(got) == [sent]


async def test_blocking_reads_time_out_empty(bus: Bus) -> None:
    with trio.fail_after(5):
        await bus.ensure_group("s", "g")
        start = trio.current_time()
        assert await bus.read_group("s", "g", "c", block_ms=50) == []
        assert await bus.read("s", "$", block_ms=50) == []
        assert await bus.read("never", "0", block_ms=50) == []
        assert trio.current_time() - start >= 0.15


async def test_read_after_dollar_sees_only_new_entries(bus: Bus) -> None:
    with trio.fail_after(5):
        await bus.append("s", {"n": "old"})
        assert await bus.read("s", "$") == []
        got: list[Entry] = []
        done = trio.Event()

        async def reader() -> None:
            got.extend(await bus.read("s", "$", block_ms=20_000))
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            # A server may see our append before the reader's command; keep
            # appending until the reader reports, then check what it saw.
            n = 0
            while not done.is_set():
                n += 1
                await bus.append("s", {"n": f"new{n}"})
                with trio.move_on_after(0.02):
                    await done.wait()
        assert got
        assert all(e.fields["n"].startswith("new") for e in got)


async def test_every_tail_reader_sees_every_entry(bus: Bus) -> None:
    with trio.fail_after(5):
        sent = [await bus.append("s", {"n": str(i)}) for i in range(3)]
        assert ids(await bus.read("s", "0")) == sent
        assert ids(await bus.read("s", "0-0")) == sent


async def test_range(bus: Bus) -> None:
    with trio.fail_after(5):
        assert await bus.range("missing") == []
        sent = [await bus.append("s", {"n": str(i)}) for i in range(6)]
        assert ids(await bus.range("s")) == sent
        assert ids(await bus.range("s", sent[1], sent[3])) == sent[1:4]
        assert ids(await bus.range("s", "(" + sent[1], sent[3])) == sent[2:4]
        assert ids(await bus.range("s", "-", "+", count=2)) == sent[:2]
        assert ids(await bus.range("s", sent[4])) == sent[4:]
        assert ids(await bus.range("s", "-", sent[0])) == sent[:1]


async def test_last_id(bus: Bus) -> None:
    with trio.fail_after(5):
        assert await bus.last_id("missing") == "0-0"
        await bus.append("s", {"n": "1"})
        last = await bus.append("s", {"n": "2"})
        assert await bus.last_id("s") == last


async def test_kv_with_ttl(bus: Bus) -> None:
    with trio.fail_after(5):
        assert await bus.get("k") is None
        await bus.set("k", "v1")
        assert await bus.get("k") == "v1"
        await bus.set("k", "v2")
        assert await bus.get("k") == "v2"
        await bus.delete("k")
        assert await bus.get("k") is None
        await bus.delete("k")  # deleting a missing key is fine
        await bus.set("t", "short", ttl_ms=300)
        await bus.set("u", "long", ttl_ms=60_000)
        assert await bus.get("t") == "short"
        await trio.sleep(0.35)
        assert await bus.get("t") is None
        assert await bus.get("u") == "long"
        await bus.set("t", "again")  # a plain set clears any TTL
        await trio.sleep(0.06)
        assert await bus.get("t") == "again"


async def test_set_nx_writes_only_an_absent_key(bus: Bus) -> None:
    with trio.fail_after(5):
        assert await bus.set("k", "plain") is True
        assert await bus.set("k", "mine", nx=True) is False
        assert await bus.get("k") == "plain"
        assert await bus.set("c", "first", ttl_ms=300, nx=True) is True
        assert await bus.set("c", "second", ttl_ms=300, nx=True) is False
        assert await bus.get("c") == "first"
        # Many claimants at once: exactly one wins.
        won: list[str] = []

        async def claim(who: str) -> None:
            if await bus.set("race", who, ttl_ms=60_000, nx=True):
                won.append(who)

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(claim, f"w{i}")
        assert len(won) == 1 and await bus.get("race") == won[0]
        # An expired claim is absent: the next nx write takes it.
        await trio.sleep(0.35)
        assert await bus.set("c", "third", ttl_ms=300, nx=True) is True
        assert await bus.get("c") == "third"


async def test_leases_are_exclusive_and_fenced(bus: Bus) -> None:
    with trio.fail_after(5):
        a = await bus.acquire_lease("{L}", "a", 60_000)
        assert a is not None
        assert (a.name, a.owner) == ("{L}", "a")
        assert await bus.acquire_lease("{L}", "b", 60_000) is None
        # Ours already: success, same epoch.
        again = await bus.acquire_lease("{L}", "a", 60_000)
        assert again == a
        assert await bus.renew_lease(a, 60_000) is True
        fake = type(a)("{L}", "b", a.epoch)
        assert await bus.renew_lease(fake, 60_000) is False
        await bus.release_lease(fake)  # not the holder: no effect
        assert await bus.acquire_lease("{L}", "b", 60_000) is None
        await bus.release_lease(a)
        b = await bus.acquire_lease("{L}", "b", 60_000)
        assert b is not None
        assert b.epoch > a.epoch
        # A stale lease of the same owner from an older epoch cannot renew.
        await bus.release_lease(b)
        b2 = await bus.acquire_lease("{L}", "b", 60_000)
        assert b2 is not None
        assert b2.epoch > b.epoch
        assert await bus.renew_lease(b, 60_000) is False
        await bus.release_lease(b)
        assert await bus.acquire_lease("{L}", "a", 60_000) is None
        # Independent leases have independent epochs.
        other = await bus.acquire_lease("{M}", "a", 60_000)
        assert other is not None


async def test_lease_expiry_lets_another_take_it(bus: Bus) -> None:
    with trio.fail_after(5):
        a = await bus.acquire_lease("{L}", "a", 50)
        assert a is not None
        await trio.sleep(0.1)
        b = await bus.acquire_lease("{L}", "b", 60_000)
        assert b is not None
        assert b.epoch > a.epoch
        assert await bus.renew_lease(a, 60_000) is False
        await bus.release_lease(a)
        assert await bus.acquire_lease("{L}", "a", 60_000) is None
        assert await bus.renew_lease(b, 60_000) is True


async def test_trimming_by_retention(bus: Bus) -> None:
    """Entries older than the retention go on append; newer ones always stay.

    Redis trims with ``MINID ~``, whole internal nodes (100 entries) at a
    time, so it may keep up to a node of old entries; MemoryBus trims exactly.
    """
    raw: RawBus = bus  # type: ignore[assignment]
    with trio.fail_after(5):
        for i in range(1, 351):
            await raw.append_with_id("s", f"{i}-0", {"n": f"old{i}"})
        assert len(await bus.range("s")) == 350
        fresh = await bus.append("s", {"n": "fresh"})
        left = await bus.range("s")
        assert left[-1].id == fresh
        old_left = [e for e in left if e.fields["n"].startswith("old")]
        assert len(old_left) <= 100
        # Whatever survived is the newest of the old entries, still in order.
        assert bodies(old_left) == [f"old{i}" for i in range(351 - len(old_left), 351)]
        assert await bus.last_id("s") == fresh


async def test_trim_bounds_age_and_size_without_an_append(bus: Bus) -> None:
    """``trim`` drops what is older than the retention and all but ~``max_len``.

    Nothing is appended: a quiet stream is bounded too. Redis' ``~`` works in
    whole nodes (100 entries), so it may keep up to one node more.
    """
    raw: RawBus = bus  # type: ignore[assignment]
    with trio.fail_after(10):
        for i in range(1, 351):
            await raw.append_with_id("old", f"{i}-0", {"n": f"old{i}"})
        await bus.append_many([("big", {"n": str(i)}) for i in range(1000)])
        removed = await bus.trim("old", max_len=10_000) + await bus.trim("big", max_len=100)
        old_left = await bus.range("old")
        big_left = await bus.range("big")
    assert len(old_left) <= 100  # all older than the retention: at most a node stays
    assert 100 <= len(big_left) <= 200
    assert bodies(big_left) == [str(i) for i in range(1000 - len(big_left), 1000)]  # the newest
    assert removed == 350 - len(old_left) + 1000 - len(big_left)
    assert await bus.trim("missing", max_len=1) == 0


async def test_an_expired_stream_disappears(bus: Bus) -> None:
    await bus.append("kept", {"n": "1"})
    await bus.append("orphan", {"n": "1"})
    await bus.expire("kept", 60_000)
    await bus.expire("orphan", 1)
    await bus.expire("never-written", 1)  # no-op, no error
    with trio.fail_after(5):
        while await bus.last_id("orphan") != "0-0":
            # MemoryBus drops an expired stream at its next trim or append.
            await bus.trim("orphan", max_len=10)
            await trio.sleep(0.01)
    assert len(await bus.range("kept")) == 1
    assert await bus.range("orphan") == []


async def test_explicit_ids_must_grow(bus: Bus) -> None:
    raw: RawBus = bus  # type: ignore[assignment]
    with trio.fail_after(5):
        await raw.append_with_id("s", "5-1", {"n": "1"})
        with pytest.raises(CommandError):
            await raw.append_with_id("s", "5-1", {"n": "2"})
        with pytest.raises(CommandError):
            await raw.append_with_id("s", "4-0", {"n": "2"})
        assert await bus.last_id("s") == "5-1"


async def test_concurrent_appends_keep_order(bus: Bus) -> None:
    writers, per_writer = 8, 25
    with trio.fail_after(10):

        async def writer(w: int) -> None:
            for i in range(per_writer):
                await bus.append("s", {"w": str(w), "i": str(i)})

        async with trio.open_nursery() as nursery:
            for w in range(writers):
                nursery.start_soon(writer, w)
        entries = await bus.range("s")
        assert len(entries) == writers * per_writer
        parsed = [parse_id(e.id) for e in entries]
        assert parsed == sorted(parsed)
        assert len(set(parsed)) == len(parsed)
        for w in range(writers):
            mine = [int(e.fields["i"]) for e in entries if e.fields["w"] == str(w)]
            assert mine == list(range(per_writer))


async def test_touch_resets_idle_time_without_counting_a_delivery(bus: Bus) -> None:
    with trio.fail_after(5):
        await bus.ensure_group("s", "g")
        sent = [await bus.append("s", {"n": str(i)}) for i in range(3)]
        await bus.read_group("s", "g", "worker", count=2)
        await bus.read_group("s", "g", "other", count=1)
        await trio.sleep(0.25)
        # Touch our two, plus one that is another consumer's and one never pending.
        await bus.touch("s", "g", "worker", [sent[0], sent[1], sent[2], "999-0"])
        await bus.touch("s", "g", "worker", [])
        # Only the other consumer's entry is idle enough to be claimed now...
        claimed = await bus.claim_idle("s", "g", "thief", min_idle_ms=200)
        assert ids(claimed) == [sent[2]]
        # ...and the touched ones are still ours, delivered once.
        mine = await bus.read_group("s", "g", "worker", start="0")
        assert ids(mine) == sent[:2]
        assert [e.deliveries for e in mine] == [2, 2]  # 1 read + this re-read; touch adds none
        with pytest.raises(CommandError):
            await bus.touch("s", "nope", "worker", [sent[0]])


async def test_set_if_lease_writes_only_for_the_current_holder(bus: Bus) -> None:
    with trio.fail_after(5):
        a = await bus.acquire_lease("{p1}:lease", "a", 60_000)
        assert a is not None
        assert await bus.set_if_lease("{p1}:state", "v1", a) is True
        assert await bus.get("{p1}:state") == "v1"
        # Another owner with the same epoch number is not the holder.
        forged = type(a)(a.name, "b", a.epoch)
        assert await bus.set_if_lease("{p1}:state", "bad", forged) is False
        assert await bus.get("{p1}:state") == "v1"
        # After the lease moves, the old holder's late write is refused.
        await bus.release_lease(a)
        assert await bus.set_if_lease("{p1}:state", "late", a) is False
        b = await bus.acquire_lease("{p1}:lease", "b", 60_000)
        assert b is not None
        assert await bus.set_if_lease("{p1}:state", "late", a) is False
        assert await bus.set_if_lease("{p1}:state", "v2", b, ttl_ms=60_000) is True
        assert await bus.get("{p1}:state") == "v2"
        # The same owner from an older epoch is fenced too.
        await bus.release_lease(b)
        b2 = await bus.acquire_lease("{p1}:lease", "b", 60_000)
        assert b2 is not None
        assert await bus.set_if_lease("{p1}:state", "stale", b) is False
        assert await bus.get("{p1}:state") == "v2"


async def test_set_if_lease_ttl_and_expired_lease(bus: Bus) -> None:
    with trio.fail_after(5):
        a = await bus.acquire_lease("{p2}:lease", "a", 300)
        assert a is not None
        assert await bus.set_if_lease("{p2}:state", "v", a, ttl_ms=200) is True
        await trio.sleep(0.35)
        assert await bus.get("{p2}:state") is None
        # The lease expired: even with nobody else holding it, no write.
        assert await bus.set_if_lease("{p2}:state", "late", a) is False
        assert await bus.get("{p2}:state") is None


async def test_liveness_registry(bus: Bus) -> None:
    with trio.fail_after(5):
        assert await bus.live_members("reg") == []
        await bus.heartbeat("reg", "w2", 60_000)
        await bus.heartbeat("reg", "w1", 60_000)
        await bus.heartbeat("reg", "short", 200)
        assert await bus.live_members("reg") == ["short", "w1", "w2"]
        assert await bus.live_members("other") == []
        await trio.sleep(0.3)
        assert await bus.live_members("reg") == ["w1", "w2"]
        # A heartbeat renews; expiry is per member.
        await bus.heartbeat("reg", "short", 60_000)
        assert await bus.live_members("reg") == ["short", "w1", "w2"]
        await bus.leave("reg", "w1")
        await bus.leave("reg", "never")
        assert await bus.live_members("reg") == ["short", "w2"]
