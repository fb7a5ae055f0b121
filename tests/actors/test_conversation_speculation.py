"""Preemptive replies through the conversation actor on a MemoryBus.

The settle timer fires from the partition's in-memory timer index, which is
not written back to the bus for it: one write per interim prompt would cost
more than a lost settle timer (no preemptive reply; the final prompt is
answered as usual).
"""

from __future__ import annotations

import json

import trio
import trio.testing
from test_conversation_actor import KEYS, SYSTEM, Caller, serving

from actors.config import ConversationConfig
from actors.conversation import ConversationActor
from bus.keys import partition_of
from bus.memory import MemoryBus


def trio_ms() -> float:
    return trio.current_time() * 1000


async def test_an_interim_prompt_starts_a_held_request_without_a_timer_index_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    caller = Caller(bus)
    config = ConversationConfig(
        keys=KEYS,
        system_prompt=SYSTEM,
        silence_reprompt_s=0,
        preemptive=True,
        settle_ms=150,
        # Entries are stamped with the real wall clock while the test runs on
        # a virtual one: a loaded machine must not make the bus look behind.
        speculation_max_lag_ms=0,
    )
    index_key = KEYS.timers(partition_of(caller.call, KEYS.partitions))
    with trio.fail_after(30):
        async with serving(bus, ConversationActor(config, clock=trio_ms)):
            await caller.setup()
            _, partial = await caller.say("A table for two", last=False)
            request = await caller.next_request()
            stored = await bus.get(index_key)
    assert request.body["held"] is True and request.body["reply_to"] == partial.seq
    assert request.body["messages"][-1] == {"role": "user", "content": "A table for two"}
    assert "settle" not in json.loads(stored or "{}").get(caller.call, {})
