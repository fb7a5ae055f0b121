"""At most once across workers: the claim on a tool use (``ToolRegistry.run``).

Several ``run`` calls of the same tool use stand for LLM workers handling the
same request at once (a reclaim racing a slow-but-alive worker). MemoryBus
tests run on the autojump clock; one test proves the claim on a real
redis-server.
"""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing
from structlog.testing import capture_logs
from structlog.typing import EventDict

from actors.tools import (
    CLAIM_MARGIN_S,
    INTERRUPTED_RESULT,
    Tool,
    ToolContext,
    ToolOutcome,
    ToolRegistry,
    tool,
    tool_result_key,
)
from bus.base import Bus
from bus.keys import Keys
from bus.memory import MemoryBus
from bus.redis import open_redis_bus

KEYS = Keys(namespace="toolclaim", partitions=4)
CALL = "CA00000000000000000000000000000078"
USE = "toolu_claim"
KEY = tool_result_key(KEYS, CALL, f"{CALL}:3:{USE}")

Sent = list[tuple[str, bool]]


def context(sent: Sent) -> ToolContext:
    async def sink(frame: dict[str, Any], *, after_speech: bool) -> None:
        sent.append((frame["type"], after_speech))

    return ToolContext(call=CALL, session="VX1", turn=1, reply_to=3, tool_use_id=USE, _sink=sink)


def order_tool(
    runs: list[float], release: trio.Event | None = None, started: trio.Event | None = None
) -> Tool:
    """Places an order: presses keys at once, ends the call after the speech."""

    @tool(description="Places an order.", timeout_s=10.0)
    async def place_order(input: dict[str, Any], ctx: ToolContext) -> str:
        runs.append(trio.current_time())
        if started is not None:
            started.set()
        await ctx.send({"type": "sendDigits", "digits": "1"})
        if release is None:
            await trio.sleep(3)  # the order takes a while
        else:
            await release.wait()
        await ctx.send({"type": "end", "handoffData": "{}"}, after_speech=True)
        return f"Ordered {input['item']}."

    return place_order


async def run_all(registry: ToolRegistry, bus: Bus, sents: list[Sent]) -> list[ToolOutcome]:
    outcomes: list[ToolOutcome] = []

    async def one(sent: Sent) -> None:
        outcomes.append(
            await registry.run(bus, KEYS, context(sent), "place_order", {"item": "pizza"})
        )

    async with trio.open_nursery() as nursery:
        for sent in sents:
            nursery.start_soon(one, sent)
    return outcomes


async def test_two_workers_at_once_run_the_tool_once_and_share_its_outcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs: list[float] = []
    registry = ToolRegistry({"place_order": order_tool(runs)}, ["place_order"])
    bus = MemoryBus()
    first: Sent = []
    second: Sent = []
    with trio.fail_after(60), capture_logs() as logs:
        outcomes = await run_all(registry, bus, [first, second])
    assert len(runs) == 1
    [a, b] = outcomes
    assert a == b and a.content == "Ordered pizza." and not a.is_error
    # The keys were pressed once; both workers send the deferred end.
    sent = sorted([first, second], key=len)
    assert sent[1] == [("sendDigits", False), ("end", True)]
    assert sent[0] == [("end", True)]
    events = [e["event"] for e in logs]
    assert events.count("tool_called") == 1
    assert "tool_claimed_elsewhere" in events
    [replayed] = [e for e in logs if e["event"] == "tool_result_replayed"]
    assert replayed["waited"] is True


async def test_a_claim_whose_owner_died_is_taken_over_after_its_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs: list[float] = []
    place_order = order_tool(runs)
    registry = ToolRegistry({"place_order": place_order}, ["place_order"])
    bus = MemoryBus()
    ttl_s = place_order.timeout_s + CLAIM_MARGIN_S
    # What a worker that died mid-tool leaves behind: its claim, no result.
    claimed_at = trio.current_time()
    assert await bus.set(
        KEY, json.dumps({"claimed_by": "dead-worker"}), ttl_ms=round(ttl_s * 1000), nx=True
    )
    sent: Sent = []
    with trio.fail_after(60), capture_logs() as logs:
        [outcome] = await run_all(registry, bus, [sent])
    assert outcome.content == "Ordered pizza." and not outcome.is_error
    [ran_at] = runs
    assert ran_at >= claimed_at + ttl_s  # not before the dead owner's claim expired
    assert sent == [("sendDigits", False), ("end", True)]
    events = [e["event"] for e in logs]
    assert events.index("tool_claimed_elsewhere") < events.index("tool_claim_taken_over")
    stored = await bus.get(KEY)
    assert stored is not None and json.loads(stored)["content"] == "Ordered pizza."


async def test_a_tool_use_cancelled_mid_run_is_never_run_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs: list[float] = []
    release = trio.Event()  # never set: the first run is cancelled mid-tool
    started = trio.Event()
    registry = ToolRegistry({"place_order": order_tool(runs, release, started)}, ["place_order"])
    bus = MemoryBus()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_all, registry, bus, [[]])
            await started.wait()
            nursery.cancel_scope.cancel()
        again: Sent = []
        [outcome] = await run_all(registry, bus, [again])
    assert len(runs) == 1
    assert outcome.is_error and outcome.content == INTERRUPTED_RESULT
    assert again == []  # no keys pressed, no end: the interrupted run sent none


async def test_the_claim_is_atomic_on_redis(redis_url: str) -> None:
    runs: list[float] = []
    release = trio.Event()
    registry = ToolRegistry({"place_order": order_tool(runs, release)}, ["place_order"])
    sents: list[Sent] = [[] for _ in range(4)]
    # Set once every other worker found the claim (a log processor counts them).
    losers_waiting = trio.Event()
    seen: list[str] = []

    def count_losers(logger: Any, method: str, event_dict: EventDict) -> EventDict:
        if event_dict["event"] == "tool_claimed_elsewhere":
            seen.append(event_dict["event"])
            if len(seen) == 3:
                losers_waiting.set()
        return event_dict

    async with open_redis_bus(redis_url) as bus:
        with trio.fail_after(20), capture_logs(processors=[count_losers]):
            outcomes: list[ToolOutcome] = []

            async def all_of_them() -> None:
                outcomes.extend(await run_all(registry, bus, sents))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(all_of_them)
                # The winner holds its tool until every other worker found the claim.
                await losers_waiting.wait()
                release.set()
        stored = await bus.get(KEY)
    assert len(runs) == 1
    assert len(outcomes) == 4 and all(o == outcomes[0] for o in outcomes)
    assert outcomes[0].content == "Ordered pizza."
    assert sum(("sendDigits", False) in s for s in sents) == 1
    assert all(("end", True) in s for s in sents)
    assert stored is not None and json.loads(stored)["content"] == "Ordered pizza."
