"""Response latency, measured where the caller's wait ends: the gateway.

A final prompt received -> the first token of its reply written to the socket,
on the gateway's own clock: a ``latency_ms`` field on ``first_token_sent`` and
the ``switchboard_response_latency_seconds`` histogram. A reply to no final
prompt (the greeting's turn, a keypad entry) has no latency to report.
"""

from __future__ import annotations

import json

import trio
from gwkit import entries, prompt_frame, setup_frame, start_gateway, wait_for_kind
from trio_websocket import open_websocket

from bus.base import Bus
from bus.envelope import Envelope, Kind


async def _first_token_facts(bus: Bus, stream: str, n: int) -> list[Envelope]:
    found: list[Envelope] = []
    after = "0-0"
    while len(found) < n:
        for entry in await bus.read(stream, after, count=100, block_ms=1000):
            after = entry.id
            env = Envelope.decode(entry.fields)
            if env.body.get("fact") == "first_token_sent":
                found.append(env)
    return found


async def test_first_token_sent_carries_the_callers_wait(nursery: trio.Nursery, bus: Bus) -> None:
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus)
        ws_cm = open_websocket("127.0.0.1", gw.port, "/relay", use_ssl=False)
        async with ws_cm as ws:
            await ws.send_message(setup_frame("CA1", "VX1"))
            await wait_for_kind(bus, gw.calls_stream("CA1"), Kind.CALL_SETUP)
            # A reply to no final prompt first (as a greeting's turn would be).
            await gw.tokens("CA1", "VX1", reply_to=1, index=0, text="Hi.", last=True)
            assert json.loads(await ws.get_message())["token"] == "Hi."
            await ws.send_message(prompt_frame("I want to pay", last=False))
            await ws.send_message(prompt_frame("I want to pay."))
            await entries(bus, gw.calls_stream("CA1"), 3)  # setup, interim, final
            await gw.tokens("CA1", "VX1", reply_to=3, index=0, text="Sure", last=False)
            await gw.tokens("CA1", "VX1", reply_to=3, index=1, text=".", last=True)
            for _ in range(2):
                await ws.get_message()
            facts = await _first_token_facts(bus, gw.config.keys.events_for("CA1"), 2)
    greeting, answer = (f.body for f in facts)
    assert greeting["reply_to"] == 1 and "latency_ms" not in greeting
    assert answer["reply_to"] == 3
    assert answer["latency_ms"] >= 0
    metrics = gw.gateway.metrics.registry
    assert metrics.get_sample_value("switchboard_response_latency_seconds_count") == 1
    total = metrics.get_sample_value("switchboard_response_latency_seconds_sum")
    assert total is not None and abs(total * 1000 - answer["latency_ms"]) < 0.01
