"""The call log folds bus entries into one view per call (pure, no I/O).

Entries are built as the gateway, conversation and LLM actor write them
(docs/ARCHITECTURE.md, "Message schemas"; ``bus.facts``), fed in the order
they would be read, and the view is checked clause by clause.
"""

from __future__ import annotations

import json
from typing import Any

from bus.envelope import Envelope, Kind
from gateway.dashboard.calllog import (
    SOURCE_CALLS,
    SOURCE_DEAD,
    SOURCE_EVENTS,
    SOURCE_GATEWAY,
    CallLog,
)
from gateway.dashboard.callview import (
    percentiles,
)

CALL = "CA00000000000000000000000000000001"
SESSION = "VX1"
T0 = 1_800_000_000_000


def env(kind: str, ts: int, *, seq: int = 0, turn: int = 0, **body: Any) -> Envelope:
    return Envelope(kind, CALL, body, session=SESSION, gateway="gw1", seq=seq, turn=turn, ts=ts)


def fact(name: str, t_ms: float, *, reply_to: int = 0, turn: int = 0, **body: Any) -> Envelope:
    return env(Kind.EVENT, int(t_ms), turn=turn, fact=name, t_ms=t_ms, reply_to=reply_to, **body)


def tokens(ts: int, reply_to: int, index: int, text: str, last: bool = False) -> Envelope:
    return env(Kind.LLM_TOKENS, ts, turn=1, text=text, index=index, last=last, reply_to=reply_to)


def started(log: CallLog) -> None:
    log.apply(SOURCE_CALLS, env(Kind.CALL_SETUP, T0, seq=1, **{"from": "+1555", "to": "+1666"}))
    log.apply(SOURCE_EVENTS, fact("call_started", T0 + 0.5, direction="inbound"))


def test_a_call_is_listed_from_setup_to_close_with_how_it_ended() -> None:
    log = CallLog()
    started(log)
    log.apply(
        SOURCE_CALLS, env(Kind.CALL_PROMPT, T0 + 100, seq=2, turn=1, voicePrompt="hi", last=True)
    )
    assert log.open_calls() == [CALL]
    end = {"type": "end", "handoffData": json.dumps({"reason": "end_call"})}
    log.apply(SOURCE_GATEWAY, env(Kind.GATEWAY_SEND, T0 + 900, frame=end, origin="llm"))
    log.apply(SOURCE_CALLS, env(Kind.CALL_CLOSED, T0 + 1500, seq=3, code=1000, reason="x"))
    (summary,) = log.summaries(T0 + 5000)
    assert summary["call"] == CALL
    assert (summary["from"], summary["to"], summary["direction"]) == ("+1555", "+1666", "inbound")
    assert summary["turns"] == 1
    assert summary["duration_s"] == 1.5
    assert summary["outcome"] == "agent ended (end_call)"
    assert summary["problems"] == []
    assert log.open_calls() == []


def test_a_caller_who_hangs_up_and_a_gateway_shutdown_read_differently() -> None:
    log = CallLog()
    started(log)
    log.apply(SOURCE_CALLS, env(Kind.CALL_CLOSED, T0 + 10, seq=2, code=1000, reason=""))
    assert log.summaries()[0]["outcome"] == "caller hung up"
    other = CallLog()
    started(other)
    other.apply(SOURCE_CALLS, env(Kind.CALL_CLOSED, T0 + 10, seq=2, code=1001, reason="going away"))
    assert other.summaries()[0]["outcome"] == "gateway closed (going away)"


def test_calls_are_newest_first_and_bounded() -> None:
    log = CallLog(max_calls=2)
    for i in range(3):
        log.apply(
            SOURCE_CALLS,
            Envelope(Kind.CALL_SETUP, f"CA{i}", {"from": "a", "to": "b"}, ts=T0 + i * 1000),
        )
    assert [s["call"] for s in log.summaries()] == ["CA2", "CA1"]


def test_the_transcript_streams_the_reply_and_marks_what_a_barge_in_cut() -> None:
    log = CallLog()
    started(log)
    log.apply(
        SOURCE_CALLS,
        env(Kind.CALL_PROMPT, T0 + 100, seq=2, turn=1, voicePrompt="Book a table", last=True),
    )
    log.apply(SOURCE_GATEWAY, tokens(T0 + 110, 2, 0, "Sure, for "))
    item = log.call(CALL).to_json()["transcript"][-1]  # type: ignore[union-attr]
    assert (item["kind"], item["text"], item["done"]) == ("agent", "Sure, for ", False)
    log.apply(SOURCE_GATEWAY, tokens(T0 + 160, 2, 1, "how many people "))
    # The interrupt (partition stream) may be read before or after late tokens.
    log.apply(
        SOURCE_CALLS,
        env(
            Kind.CALL_INTERRUPT,
            T0 + 170,
            seq=3,
            turn=1,
            utteranceUntilInterrupt="Sure, for",
            durationUntilInterruptMs=600,
        ),
    )
    log.apply(SOURCE_GATEWAY, tokens(T0 + 175, 2, 2, "tonight?", last=True))
    result = {
        "reply_to": 2,
        "text": "Sure, for how many people tonight? ",
        "cancelled": "interrupt",
    }
    log.apply(SOURCE_CALLS, env(Kind.LLM_RESULT, T0 + 180, seq=2, turn=1, **result))
    view = log.call(CALL)
    assert view is not None
    agent = [i for i in view.to_json()["transcript"] if i["kind"] == "agent"]
    assert len(agent) == 1
    assert agent[0]["barge_in"] is True
    assert agent[0]["heard"] == "Sure, for"
    assert agent[0]["cut"].strip() == "how many people tonight?"
    assert view.summary()["interruptions"] == 1


def test_a_redelivered_token_batch_is_not_shown_twice() -> None:
    log = CallLog()
    started(log)
    for _ in range(2):
        log.apply(SOURCE_GATEWAY, tokens(T0 + 110, 2, 0, "Hello "))
    log.apply(SOURCE_GATEWAY, tokens(T0 + 120, 2, 1, "there.", last=True))
    # The result (partition stream) read before the last token changes nothing shown.
    log.apply(SOURCE_CALLS, env(Kind.LLM_RESULT, T0 + 119, seq=2, reply_to=2, text="Hello there."))
    (agent,) = [i for i in log.call(CALL).to_json()["transcript"] if i["kind"] == "agent"]  # type: ignore[union-attr]
    assert agent["text"] == "Hello there."
    assert agent["done"] is True


def test_dtmf_reprompts_tools_and_problems_are_marked() -> None:
    log = CallLog()
    started(log)
    log.apply(SOURCE_CALLS, env(Kind.CALL_DTMF, T0 + 50, seq=2, digit="5"))
    reprompt = {"type": "text", "token": "Are you still there?", "last": True}
    log.apply(
        SOURCE_GATEWAY, env(Kind.GATEWAY_SEND, T0 + 60, frame=reprompt, origin="conversation")
    )
    tool_call = {
        "id": "t1",
        "name": "send_digits",
        "input": {"digits": "12"},
        "result": "ok",
        "is_error": False,
    }
    log.apply(
        SOURCE_CALLS,
        env(Kind.LLM_RESULT, T0 + 70, seq=2, reply_to=2, text="", tool_calls=[tool_call]),
    )
    digits = {"type": "sendDigits", "digits": "12"}
    log.apply(SOURCE_GATEWAY, env(Kind.GATEWAY_SEND, T0 + 71, frame=digits, origin="llm"))
    log.apply(SOURCE_EVENTS, fact("provider_error", T0 + 80, reply_to=2, error="overloaded"))
    log.apply(SOURCE_EVENTS, fact("frame_rejected", T0 + 81, reason="bad_json"))
    log.apply(SOURCE_DEAD, env(Kind.LLM_REQUEST, T0 + 90), dead_error="poison")
    view = log.call(CALL)
    assert view is not None
    kinds = [(i["kind"], i["text"]) for i in view.to_json()["transcript"]]
    assert ("dtmf", "5") in kinds
    assert ("reprompt", "Are you still there?") in kinds
    assert ("tool", "send_digits") in kinds
    assert ("tool", "sendDigits: 12") in kinds
    assert ("error", "dead letter: poison") in kinds
    summary = view.summary()
    assert summary["problems"] == ["frame rejected: bad_json", "1 apology", "1 dead letter"]
    assert (summary["apologies"], summary["dead_letters"], summary["tool_calls"]) == (1, 1, 1)


def test_entries_of_unknown_calls_and_foreign_sources_change_nothing() -> None:
    log = CallLog()
    assert log.apply(SOURCE_GATEWAY, tokens(T0, 2, 0, "x")) is None
    assert log.apply(SOURCE_DEAD, env(Kind.LLM_REQUEST, T0), dead_error="e") is None
    assert log.apply("llm", env(Kind.LLM_REQUEST, T0)) is None
    assert log.summaries() == []


def test_turn_latency_is_split_into_the_stages_the_caller_waits_through() -> None:
    log = CallLog()
    started(log)
    for name, t in [
        ("prompt_received", 1000.0),
        ("prompt_applied", 1002.0),
        ("llm_requested", 1002.5),
        ("request_taken", 1005.0),
        ("provider_first_token", 1305.0),
        ("first_token_sent", 1306.5),
        ("last_token_sent", 1900.0),
    ]:
        log.apply(SOURCE_EVENTS, fact(name, T0 + t, reply_to=2, turn=1))
    # A redelivered fact keeps the first time seen.
    log.apply(SOURCE_EVENTS, fact("prompt_applied", T0 + 1100.0, reply_to=2, turn=1))
    (turn,) = log.call(CALL).turn_timings()  # type: ignore[union-attr]
    assert turn["turn"] == 1
    assert turn["first_token_ms"] == 306.5
    assert turn["stages_ms"] == {
        "gateway_to_conversation": 2.0,
        "conversation_to_llm": 3.0,
        "llm_first_token": 300.0,
        "to_caller": 1.5,
    }
    latency = log.latency()
    assert latency["turns"] == 1
    assert latency["first_token_ms"]["p50"] == 306.5


def test_percentiles_are_nearest_rank() -> None:
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}
    values = [float(v) for v in range(1, 101)]
    assert percentiles(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}


def test_a_held_reply_shows_only_once_adopted() -> None:
    log = CallLog()
    started(log)

    def held(ts: int, reply_to: int, index: int, text: str, last: bool = False) -> Envelope:
        e = tokens(ts, reply_to, index, text, last)
        return Envelope(e.kind, e.call, {**e.body, "held": True}, session=SESSION, ts=ts)

    # Speculations on two interim prompts (seq 3 revised, seq 4 adopted by the
    # final prompt 5); only the adopted one is the agent's.
    log.apply(SOURCE_GATEWAY, held(T0 + 100, 3, 0, "For ten?"))
    log.apply(SOURCE_GATEWAY, held(T0 + 200, 4, 0, "For two, "))
    log.apply(
        SOURCE_CALLS, env(Kind.CALL_PROMPT, T0 + 250, seq=5, voicePrompt="For two.", last=True)
    )
    transcript = log.call(CALL).to_json()["transcript"]  # type: ignore[union-attr]
    assert [i["kind"] for i in transcript] == ["caller"]
    adopt = Envelope(Kind.GATEWAY_ADOPT, CALL, {"reply_to": 4, "seq": 5}, session=SESSION)
    log.apply(SOURCE_GATEWAY, adopt)
    log.apply(SOURCE_GATEWAY, held(T0 + 270, 4, 1, "at eight.", last=True))
    agents = [i for i in log.call(CALL).to_json()["transcript"] if i["kind"] == "agent"]  # type: ignore[union-attr]
    assert [(a["text"], a["done"]) for a in agents] == [("For two, at eight.", True)]
    assert log.call(CALL).held == {}  # type: ignore[union-attr]
