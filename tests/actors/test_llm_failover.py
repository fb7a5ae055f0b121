"""LLM failover on a MemoryBus: reclaim, resume without repeats, touch, dead letters.

A worker "dies" by having its cancel scope cancelled mid-reply: like a
SIGKILL, it neither acks nor writes anything more, and its request stays
pending on it. The caller's side is checked the way the gateway forwards
tokens: per ``reply_to``, an entry whose index is not above the last one
forwarded is dropped; the rest is concatenated.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import trio
import trio.testing
from structlog.testing import capture_logs

from actors.config import LLMConfig
from actors.llm import APOLOGY, LLMActor
from actors.providers import ScriptedProvider
from actors.providers.scripted import scripted_reply
from actors.runtime import dead_letter_stream, serve_actor
from bus.base import Bus
from bus.envelope import Envelope, Kind
from bus.keys import GROUP_LLM, Keys
from bus.memory import MemoryBus
from bus.messages import LlmTokens
from gateway.fence import Admission, ReplyFence
from switchboard.testing import FaultyBus

KEYS = Keys(namespace="fo", partitions=4)
CALL = "CA00000000000000000000000000000042"
MESSAGES = [
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "please tell me a rather long story about the sea and ships"},
]
REPLY = scripted_reply(MESSAGES)
WORDS = len(REPLY.split())


def request() -> Envelope:
    return Envelope(
        kind=Kind.LLM_REQUEST,
        call=CALL,
        session="VX1",
        gateway="gw1",
        seq=4,
        turn=1,
        body={"system": "Be brief.", "messages": MESSAGES, "reply_to": 4},
    )


def config(**overrides: Any) -> LLMConfig:
    values: dict[str, Any] = {
        "keys": KEYS,
        "scripted_token_gap_ms": 1000.0,
        "claim_idle_ms": 5000,
        "claim_interval_s": 1.0,
        "max_deliveries": 5,
    }
    values.update(overrides)
    return LLMConfig(**values)


def worker(cfg: LLMConfig) -> LLMActor:
    return LLMActor(cfg, ScriptedProvider(token_gap_ms=cfg.scripted_token_gap_ms))


async def tokens(bus: Bus) -> list[Envelope]:
    return [Envelope.decode(e.fields) for e in await bus.range(KEYS.gateway("gw1"))]


def heard(entries: list[Envelope]) -> tuple[str, bool]:
    """What the caller hears through the gateway's reply fence, and if it closed."""
    fence = ReplyFence("VX1")
    text, closed = [], False
    for env in entries:
        tokens = LlmTokens.from_body(env.body)
        if fence.admit(tokens.reply_to, tokens.index, tokens.generation) is not Admission.SEND:
            continue
        fence.forwarded(tokens.reply_to, tokens.index, last=tokens.last)
        assert not closed, "a token after the closing one"
        text.append(tokens.text)
        closed = tokens.last
    return "".join(text), closed


def batches(entries: list[Envelope]) -> list[Envelope]:
    """Token entries with text (not a generation's opening entry)."""
    return [e for e in entries if e.body["index"] >= 0]


async def results(bus: Bus) -> list[Envelope]:
    entries = await bus.range(KEYS.calls_for(CALL))
    return [
        e for e in map(lambda x: Envelope.decode(x.fields), entries) if e.kind == Kind.LLM_RESULT
    ]


async def wait_for_tokens(bus: MemoryBus, count: int) -> None:
    after = "0"
    seen = 0
    while seen < count:
        got = await bus.read(KEYS.gateway("gw1"), after, block_ms=0)
        seen += len(got)
        after = got[-1].id


async def wait_for_entry(
    bus: MemoryBus, stream: str, matches: Callable[[dict[str, Any]], object], count: int = 1
) -> None:
    """Block until ``count`` entries on ``stream`` have bodies that ``matches``."""
    after, seen = "0", 0
    while seen < count:
        got = await bus.read(stream, after, block_ms=0)
        seen += sum(1 for e in got if matches(Envelope.decode(e.fields).body))
        after = got[-1].id


async def wait_for_result(bus: Bus) -> Envelope:
    got = await bus.read(KEYS.calls_for(CALL), "0", block_ms=0)
    return Envelope.decode(got[0].fields)


async def test_a_request_of_a_dead_worker_is_finished_by_another_without_repeats(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    with trio.fail_after(120), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            dying = trio.CancelScope()

            async def doomed(task_status: trio.TaskStatus[None]) -> None:
                with dying:
                    await serve_actor(
                        bus, worker(config()), consumer="llm-a", task_status=task_status
                    )

            await nursery.start(doomed)
            await bus.append(KEYS.llm, request().encode())
            await wait_for_tokens(bus, 4)
            dying.cancel()  # killed mid-reply: no ack, nothing more written
            killed_at = trio.current_time()
            assert await bus.pending_count(KEYS.llm, GROUP_LLM) == 1
            await nursery.start(partial(serve_actor, bus, worker(config()), consumer="llm-b"))
            result = await wait_for_result(bus)
            taken_over_after = trio.current_time() - killed_at
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    text, closed = heard(await tokens(bus))
    assert text == REPLY  # every word once, in order: nothing repeated, nothing lost
    assert closed
    assert result.body["text"] == REPLY
    assert result.body["error"] is None
    assert len(await results(bus)) == 1
    assert await bus.pending_count(KEYS.llm, GROUP_LLM) == 0
    # Indexes continue after the dead worker's: the gateway drops none. The
    # taking-over worker opened a generation of its own first.
    entries = await tokens(bus)
    indexes = [t.body["index"] for t in batches(entries)]
    assert indexes == list(range(len(indexes)))
    openings = [t for t in entries if t.body["index"] < 0]
    assert len(openings) == 1 and openings[0].body["generation"] > 0
    assert all(t.body.get("generation", 0) == 0 for t in entries[: entries.index(openings[0])])
    assert taken_over_after < 5.0 + 1.0 + WORDS * 1.0 + 1
    resumed = [e for e in logs if e["event"] == "completion_resumed"]
    assert len(resumed) == 1 and resumed[0]["next_index"] == 4
    assert any(e["event"] == "entry_reclaimed" and e["actor"] == "llm" for e in logs)


async def test_a_reply_already_finished_is_not_spoken_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = FaultyBus(MemoryBus())
    acked = bus.completed("ack")
    first = worker(config(scripted_token_gap_ms=0.0))
    first.attach(bus)
    first.consumer = "llm-a"
    await bus.ensure_group(KEYS.llm, GROUP_LLM)
    await bus.append(KEYS.llm, request().encode())
    (entry,) = await bus.read_group(KEYS.llm, GROUP_LLM, "llm-a")
    # The whole reply goes out, then the worker dies before its ack.
    await first.handle(Envelope.decode(entry.fields), entry)
    before = await tokens(bus)
    assert heard(before) == (REPLY, True)
    with trio.fail_after(60), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, worker(config()), consumer="llm-b"))
            await acked.wait()
            nursery.cancel_scope.cancel()
    assert await bus.pending_count(KEYS.llm, GROUP_LLM) == 0
    # Not a single token more: only the second worker's opening entry, no text.
    after = await tokens(bus)
    assert batches(after) == before
    assert [t.body["text"] for t in after if t not in before] == [""]
    assert heard(after) == (REPLY, True)
    assert len(await results(bus)) == 1
    done = [e for e in logs if e["event"] == "completion_already_sent"]
    assert len(done) == 1 and done[0]["result_written"] is True


async def test_touch_keeps_a_long_live_reply_from_being_reclaimed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    # The reply takes WORDS seconds, several times the 2 s claim idle time.
    cfg = config(claim_idle_ms=2000, claim_interval_s=0.5)
    assert WORDS > 3 * 2
    with trio.fail_after(120), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, worker(cfg), consumer="llm-a"))
            await bus.append(KEYS.llm, request().encode())
            await wait_for_tokens(bus, 1)
            # A second worker, looking for idle requests all along.
            await nursery.start(partial(serve_actor, bus, worker(cfg), consumer="llm-b"))
            await wait_for_result(bus)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert not [e for e in logs if e["event"] in ("entry_reclaimed", "completion_resumed")]
    entries = await tokens(bus)
    assert [t.body["index"] for t in entries] == list(range(len(entries)))
    assert heard(entries) == (REPLY, True)
    assert len(await results(bus)) == 1


async def test_a_request_delivered_too_often_is_dead_lettered_and_the_caller_apologised_to(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = FaultyBus(MemoryBus())
    acked = bus.completed("ack")
    await bus.ensure_group(KEYS.llm, GROUP_LLM)
    await bus.append(KEYS.llm, request().encode())
    # Two workers took it and died (deliveries 1 and 2).
    await bus.read_group(KEYS.llm, GROUP_LLM, "ghost-1")
    await trio.sleep(10)
    assert len(await bus.claim_idle(KEYS.llm, GROUP_LLM, "ghost-2", min_idle_ms=5000)) == 1
    await trio.sleep(10)
    with trio.fail_after(60), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            cfg = config(max_deliveries=2)
            await nursery.start(partial(serve_actor, bus, worker(cfg), consumer="llm-b"))
            result = await wait_for_result(bus)
            await acked.wait()
            nursery.cancel_scope.cancel()
    assert await bus.pending_count(KEYS.llm, GROUP_LLM) == 0
    assert heard(await tokens(bus)) == (APOLOGY, True)
    assert result.body["text"] == APOLOGY
    assert "delivered 3 times" in result.body["error"]
    (dead,) = await bus.range(dead_letter_stream(KEYS))
    assert dead.fields["dead.deliveries"] == "3"
    assert "delivered 3 times" in dead.fields["dead.error"]
    assert Envelope.decode(dead.fields).kind == Kind.LLM_REQUEST
    assert any(e["event"] == "request_dead_lettered" for e in logs)


class StalledBus:
    """A worker's view of the bus that can hang (a SIGSTOP, a Redis stall).

    While ``stall`` is set every call waits; ``wake`` lets them all go on,
    the way a paused process carries on where it stopped."""

    def __init__(self, inner: Bus) -> None:
        self.inner = inner
        self.awake = trio.Event()
        self.awake.set()
        self.acked = trio.Event()  # the worker finished an entry

    def stall(self) -> None:
        self.awake = trio.Event()

    def wake(self) -> None:
        self.awake.set()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not callable(method) or name == "aclose":
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            await self.awake.wait()
            result = await method(*args, **kwargs)
            if name == "ack":
                self.acked.set()
            return result

        return call


async def test_a_stalled_worker_that_wakes_after_the_reclaim_is_fenced_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Both workers stream the reply once the stalled one wakes: the caller
    hears it once, the newer generation continuing exactly where the caller's
    text ended, and the stalled one's later batches are stale.

    The two coalesce differently (llm-b gathers 3 s of words per batch,
    llm-a one word), so the woken llm-a's indexes overtake llm-b's: by index
    alone the caller heard words of llm-b's batches again from llm-a."""
    bus = MemoryBus()
    stalled = StalledBus(bus)
    with trio.fail_after(300), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(serve_actor, stalled, worker(config()), consumer="llm-a")  # type: ignore[arg-type]
            )
            await bus.append(KEYS.llm, request().encode())
            await wait_for_tokens(bus, 4)
            stalled.stall()  # past the claim timeout: llm-b takes the request over
            coarse = worker(config(token_coalesce_ms=3000))
            await nursery.start(partial(serve_actor, bus, coarse, consumer="llm-b"))
            await wait_for_entry(
                bus, KEYS.gateway("gw1"), lambda b: b.get("generation", 0) and b["index"] >= 5
            )
            opened_at = len(await tokens(bus))
            stalled.wake()  # llm-a carries on with the reply it had started
            await stalled.acked.wait()  # llm-a is done with its attempt too
            await wait_for_result(bus)  # and llm-b with the reply
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    entries = await tokens(bus)
    # llm-a did stream on after waking, into a reply that had moved on.
    stale = [e for e in entries[opened_at:] if e.body.get("generation", 0) == 0]
    assert stale and any(e.body["text"] for e in stale)
    text, closed = heard(entries)
    assert text == REPLY and closed  # every word once, one text, closed once
    # One result, the newer attempt's: the conversation never gets a second.
    assert len(await results(bus)) == 1
    assert any(e["event"] == "result_stale_generation" for e in logs)
    resumed = [e for e in logs if e["event"] == "completion_resumed"]
    assert len(resumed) == 1 and resumed[0]["generation"] > 0
