"""Replay of a call recorded by the dev composition (memory bus, one process).

The call has an interrupt and a tool call (the scripted provider asks for
``send_digits`` when the caller says "press 1 2 3"), so the timeline must
show both.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from actors.llm.history import resolve_in_order
from actors.telemetry import TelemetryActor, TelemetryConfig
from bus.envelope import Kind
from bus.memory import MemoryBus
from bus.messages import LlmRequest
from switchboard.ops.recording import CallNotFound, load_call
from switchboard.ops.replay import export_scenario, run_replay
from switchboard.ops.rerun import format_rerun, rerun
from switchboard.ops.timeline import format_timeline, timeline_json
from switchboard.runner import start_dev
from switchboard.settings import Settings
from switchboard.testing.procs import TAKEOVER_GUARD_S
from switchboard.twilio import open_call
from switchboard.twilio.scenario import Dtmf, Say, parse_scenario, play_scenario, scenario_to_data

GREETING = "Hello from the replay test."


def _settings(**extra: str) -> Settings:
    env = {
        "SWITCHBOARD_PORT": "0",
        "SWITCHBOARD_PARTITIONS": "4",
        "SWITCHBOARD_WELCOME_GREETING": GREETING,
        "SWITCHBOARD_TOOLS": "send_digits",
        "SWITCHBOARD_SILENCE_REPROMPT_S": "0",
    }
    env.update(extra)
    return Settings.from_env(env)


@asynccontextmanager
async def _dev(settings: Settings, bus: MemoryBus) -> AsyncIterator[tuple[int, TelemetryActor]]:
    telemetry = TelemetryActor(TelemetryConfig(keys=settings.keys))
    async with trio.open_nursery() as nursery:
        port = await start_dev(nursery, settings, bus, telemetry=telemetry)
        yield port, telemetry
        nursery.cancel_scope.cancel()


async def _recorded_call(settings: Settings, bus: MemoryBus) -> str:
    """One call with three turns, an interrupt, a tool call and a key press; its sid
    once it is summarised."""
    # The call lives on the last stream shard (with one shard: shard 0).
    keys = settings.keys
    sid = next(s for i in range(1000) if keys.shard_of(s := f"CA{i:032x}") == keys.shards - 1)
    async with _dev(settings, bus) as (port, telemetry):
        async with open_call(f"http://127.0.0.1:{port}", call_sid=sid) as call:
            await call.prompt("Tell me a long story.")
            await call.reply()
            await call.interrupt("Tell me", 250.0)
            await call.prompt("Actually, what time is it?")
            await call.reply()
            await call.prompt("Please press 1 2 3 for me.")
            await call.reply()
            await call.dtmf("5")
            sid = call.call_sid
        # call_ended is published after call.closed: once summarised, all is on the bus.
        await telemetry.wait_summary(sid)
    return sid


# With 4 stream shards the call's requests and facts are on shards other than
# 0 for most calls; replay reads every shard as one timeline.
@pytest.mark.parametrize("shards", ["1", "4"])
async def test_timeline_shows_the_interrupt_and_every_stream(shards: str) -> None:
    settings = _settings(SWITCHBOARD_STREAM_SHARDS=shards)
    bus = MemoryBus()
    with trio.fail_after(TAKEOVER_GUARD_S):
        sid = await _recorded_call(settings, bus)
        rec = await load_call(bus, settings.keys, sid)
    sources = {item.source for item in rec.items}
    assert sources == {"calls", "llm", "gateway", "events"}
    labels = [item.label for item in rec.items]
    for expected in (
        "call.setup",
        "call.prompt",
        "call.interrupt",
        "call.dtmf",
        "call.closed",
        "llm.request",
        "llm.tokens",
        "llm.result",
        "event:interrupt_received",
        "event:first_token_sent",
        "event:call_ended",
        "event:tool_called",
        "gateway.send",
    ):
        assert expected in labels, expected
    data = timeline_json(rec)
    rel = [e["rel_ms"] for e in data["entries"]]
    assert rel == sorted(rel) and rel[0] == 0
    assert {e["turn"] for e in data["entries"] if e["kind"] == "llm.request"} >= {1, 2, 3}
    json.dumps(data)  # JSON-ready for tools

    text = format_timeline(rec)
    assert f"call {sid}" in text
    interrupt_line = next(line for line in text.splitlines() if "call.interrupt" in line)
    assert "caller interrupted" in interrupt_line and "Tell me" in interrupt_line
    tool_line = next(line for line in text.splitlines() if "tool send_digits" in line)
    assert '"digits": "123"' in tool_line
    send_line = next(line for line in text.splitlines() if "gateway.send" in line)
    assert "sendDigits" in send_line


@pytest.mark.parametrize("shards", ["1", "4"])
async def test_rerun_with_unchanged_code_reports_no_difference(shards: str) -> None:
    settings = _settings(SWITCHBOARD_STREAM_SHARDS=shards)
    bus = MemoryBus()
    with trio.fail_after(TAKEOVER_GUARD_S):
        sid = await _recorded_call(settings, bus)
        rec = await load_call(bus, settings.keys, sid)
        report = await rerun(rec, settings.conversation_config())
    assert report.differences == []
    assert format_rerun(report).endswith("no differences")
    names = [c.name for c in report.comparisons]
    assert {"said before the first turn", "turn 1 request", "turn 2 request"} <= set(names)


async def test_rerun_with_a_changed_greeting_reports_exactly_that() -> None:
    settings = _settings()
    bus = MemoryBus()
    with trio.fail_after(TAKEOVER_GUARD_S):
        sid = await _recorded_call(settings, bus)
        rec = await load_call(bus, settings.keys, sid)
        config = dataclasses.replace(
            settings.conversation_config(), welcome_greeting="A brand new greeting."
        )
        report = await rerun(rec, config)
    assert [(c.name, c.then, c.now) for c in report.differences] == [
        ("said before the first turn", GREETING, "A brand new greeting.")
    ]
    text = format_rerun(report)
    assert "DIFF  said before the first turn" in text and text.endswith("1 difference")


async def test_exported_scenario_plays_back_the_callers_side() -> None:
    settings = _settings()
    bus = MemoryBus()
    with trio.fail_after(TAKEOVER_GUARD_S):
        sid = await _recorded_call(settings, bus)
        scenario = export_scenario(await load_call(bus, settings.keys, sid))
    assert [t.text if isinstance(t, Say) else t.digits for t in scenario.turns] == [
        "Tell me a long story.",
        "Actually, what time is it?",
        "Please press 1 2 3 for me.",
        "5",
    ]
    first = scenario.turns[0]
    assert isinstance(first, Say) and first.interrupt_after and first.interrupt_after >= 1
    assert isinstance(scenario.turns[-1], Dtmf)
    # What --export writes, `switchboard simulate --scenario` reads back as it was.
    assert parse_scenario(scenario_to_data(scenario)) == scenario

    again = MemoryBus()
    with trio.fail_after(TAKEOVER_GUARD_S):
        async with _dev(settings, again) as (port, telemetry):
            async with open_call(f"http://127.0.0.1:{port}") as call:
                replies = await play_scenario(call, scenario)
                new_sid = call.call_sid
            await telemetry.wait_summary(new_sid)
        played = await load_call(again, settings.keys, new_sid)
    assert len(replies) == 3 and all(r.complete for r in replies[1:])
    assert [i.env.body.get("voicePrompt") for i in played.of_kind("call.prompt")] == [
        "Tell me a long story.",
        "Actually, what time is it?",
        "Please press 1 2 3 for me.",
    ]
    assert len(played.of_kind("call.interrupt")) == 1
    assert [i.env.body["digit"] for i in played.of_kind("call.dtmf")] == ["5"]


async def test_unknown_call_gets_a_clear_message_and_exit_code_1() -> None:
    settings = _settings()
    bus = MemoryBus()
    with pytest.raises(CallNotFound, match="older than the retention"):
        await load_call(bus, settings.keys, "CA00000000000000000000000000000000")
    out, err = io.StringIO(), io.StringIO()
    code = await run_replay(bus, settings.keys, "CAunknown", out=out, err=err)
    assert code == 1
    assert out.getvalue() == ""
    assert "CAunknown" in err.getvalue() and "retention" in err.getvalue()


async def test_rerun_compares_whole_history_requests_of_older_recordings_too() -> None:
    settings = _settings()
    bus = MemoryBus()
    with trio.fail_after(TAKEOVER_GUARD_S):
        sid = await _recorded_call(settings, bus)
        rec = await load_call(bus, settings.keys, sid)
        requests = rec.of_kind(Kind.LLM_REQUEST, source="llm")
        asked = resolve_in_order((sid, LlmRequest.from_body(i.env.body)) for i in requests)
        # As recorded before requests carried only what is new: the whole
        # conversation in "messages", no reference.
        whole = {}
        for i, m in zip(requests, asked, strict=True):
            body = {k: v for k, v in i.env.body.items() if k != "history"} | {"messages": m}
            whole[i.stream, i.entry_id] = dataclasses.replace(
                i, env=dataclasses.replace(i.env, body=body)
            )
        old = dataclasses.replace(
            rec, items=[whole.get((i.stream, i.entry_id), i) for i in rec.items]
        )
        same = await rerun(old, settings.conversation_config())
        # A recording missing the call's first request (trimmed): the later
        # ones cannot be rebuilt, and say so rather than compare equal.
        first = requests[0]
        cut = dataclasses.replace(rec, items=[i for i in rec.items if i is not first])
        differs = await rerun(cut, settings.conversation_config())
    assert len(requests) == 3 and all(a is not None for a in asked)
    assert all("history" not in i.env.body for i in old.of_kind(Kind.LLM_REQUEST, source="llm"))
    assert same.differences == [] and len(same.comparisons) > 3
    unrebuilt = "(history not in the recording)"
    assert {c.name: c.then for c in differs.differences if c.name.endswith("request")} == {
        "turn 1 request": None,  # not recorded at all
        "turn 2 request": unrebuilt,
        "turn 3 request": unrebuilt,
    }
