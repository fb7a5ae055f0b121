"""The late reply the apology asked the caller to repeat: withdrawn, after its prompt.

On a memory bus whose appends a test can hold (``FaultyBus.stall``): the
prompt's own append can still be in flight when the apology fires (a
backed-up bus); the withdrawal then waits for it, so the conversation reads
the prompt before the withdrawal and has a reply to cut.
"""

from __future__ import annotations

from typing import Any

import trio
from trio.testing import wait_all_tasks_blocked

from bus.envelope import Envelope
from bus.facts import FactPublisher
from bus.memory import MemoryBus
from gateway import inbound
from gateway.config import GatewayConfig
from gateway.context import GatewayContext
from gateway.fence import Admission
from gateway.metrics import GatewayMetrics
from gateway.publish import CallerEvents
from gateway.session import Outgoing, Session
from relay import Prompt, RelayConnection, Setup
from switchboard.testing import FaultyBus


def _is_final(stream: str, fields: Any) -> bool:
    env = Envelope.decode(fields)
    return env.kind == "call.prompt" and env.body["last"] is True


async def test_the_withdrawal_follows_its_prompt_onto_the_bus(nursery: trio.Nursery) -> None:
    bus = FaultyBus(MemoryBus())
    config = GatewayConfig(gateway_id="gw-t", reply_deadline_s=4)
    ctx = GatewayContext(bus, config, GatewayMetrics(), FactPublisher(bus, config.keys))
    outbox, _ = trio.open_memory_channel[Outgoing](1)
    session = Session(None, RelayConnection(), outbox)  # type: ignore[arg-type]
    session.call_sid, session.session_id = "CA1", "VX1"
    events = CallerEvents(ctx, session, interim_prompts=False)
    stream = config.keys.calls_for("CA1")
    with trio.fail_after(5):
        session.seq += 1
        await events.publish(Setup(session_id="VX1", call_sid="CA1", account_sid="AC1"))
        held = bus.stall("append", when=_is_final)
        session.seq += 1
        session.fence.caller_event(session.seq, cuts_reply=True)
        session.prompted(session.seq, trio.current_time())
        nursery.start_soon(events.publish, Prompt("Hours?", "en-US", True))
        await held.reached.wait()  # the prompt's append is in flight
        assert session.reply.due(trio.current_time() + 4)
        seq = session.apologised()
        assert seq == 2
        # Fenced at once: nothing of the late reply reaches the caller.
        assert session.fence.admit(2, 0) is Admission.FENCED
        withdrawn = trio.Event()

        async def withdraw() -> None:
            await inbound.reply_withdrawn(ctx, session, seq)
            withdrawn.set()

        nursery.start_soon(withdraw)
        await wait_all_tasks_blocked()
        assert not withdrawn.is_set()  # waits for its prompt
        held.release()
        await withdrawn.wait()
    published = [Envelope.decode(e.fields) for e in await bus.range(stream, "-", "+")]
    assert [(e.seq, e.kind) for e in published] == [
        (1, "call.setup"),
        (2, "call.prompt"),
        (3, "call.interrupt"),
    ]
    assert published[-1].body["withdrawn"] == 2
