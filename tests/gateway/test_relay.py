"""Relay sessions end to end: raw WebSocket clients against a real gateway.

Each test plays Twilio with trio-websocket clients on loopback, and the actors
by reading and writing the bus directly.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
from gwkit import (
    PUBLIC_URL,
    TOKEN,
    Running,
    entries,
    http,
    prompt_frame,
    session_token,
    setup_frame,
    start_gateway,
    wait_for_kind,
)
from structlog.testing import capture_logs
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket

from bus.base import Bus, CommandError, Fields
from bus.envelope import Kind
from bus.memory import MemoryBus
from gateway import calltoken
from gateway.lifecycle import CLOSE_TIMEOUT
from relay.signature import sign
from relay.twiml import parse_twiml
from switchboard.testing import FaultyBus


def _ws(port: int, *, signature: str | None = None, path: str = "/relay") -> Any:
    headers = [] if signature is None else [(b"X-Twilio-Signature", signature.encode())]
    return open_websocket("127.0.0.1", port, path, use_ssl=False, extra_headers=headers)


async def _open_call(gw: Running, ws: Any, call_sid: str, session_id: str) -> None:
    """Send setup and wait until the gateway published it (the session is live)."""
    await ws.send_message(setup_frame(call_sid, session_id))
    await wait_for_kind(gw.bus, gw.calls_stream(call_sid), Kind.CALL_SETUP)


async def test_caller_events_land_on_the_partition_stream(nursery: trio.Nursery, bus: Bus) -> None:
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus, gateway_id="gw-a")
        async with _ws(gw.port) as ws:
            await ws.send_message(setup_frame("CA100", "VX100", customParameters={"k": "v"}))
            await ws.send_message(prompt_frame("hello", last=False))
            # A final prompt that overtakes an interim one still waiting for
            # the session's append slot replaces it (gateway.interim, rule 4);
            # this test is about what lands, so the interim goes first.
            await entries(bus, gw.calls_stream("CA100"), 2)
            await ws.send_message(prompt_frame("hello there"))
            await ws.send_message(json.dumps({"type": "dtmf", "digit": "5"}))
            await ws.send_message(
                json.dumps(
                    {
                        "type": "interrupt",
                        "utteranceUntilInterrupt": "Sentence 2 of",
                        "durationUntilInterruptMs": "460",
                        "extraField": 1,
                    }
                )
            )
            await ws.send_message(
                json.dumps({"type": "info", "name": "agentSpeaking", "value": "on"})
            )
            await ws.send_message(json.dumps({"type": "error", "description": "code: 64107"}))
            got = await entries(bus, gw.calls_stream("CA100"), 7)
        closed = await wait_for_kind(bus, gw.calls_stream("CA100"), Kind.CALL_CLOSED)
    assert [e.kind for e in got] == [
        "call.setup",
        "call.prompt",
        "call.prompt",
        "call.dtmf",
        "call.interrupt",
        "call.info",
        "call.error",
    ]
    assert [e.seq for e in got] == [1, 2, 3, 4, 5, 6, 7]
    assert {(e.call, e.session, e.gateway) for e in got} == {("CA100", "VX100", "gw-a")}
    # Turns are the conversation's to number: after a final prompt, still 0.
    assert {e.turn for e in got} == {0}
    setup = got[0].body
    assert setup["type"] == "setup"
    assert setup["callSid"] == "CA100"
    assert setup["from"] == "+15550001111"
    assert setup["customParameters"] == {"k": "v"}
    assert got[1].body == {"type": "prompt", "voicePrompt": "hello", "lang": "en-US", "last": False}
    assert got[2].body["voicePrompt"] == "hello there"
    assert got[2].body["last"] is True
    assert got[3].body == {"type": "dtmf", "digit": "5"}
    assert got[4].body == {
        "type": "interrupt",
        "utteranceUntilInterrupt": "Sentence 2 of",
        "durationUntilInterruptMs": 460,
    }
    assert got[5].body == {"type": "info", "name": "agentSpeaking", "value": "on"}
    # The client closed normally: call.closed follows with its code, next seq.
    last = closed[-1]
    assert last.body["code"] == 1000
    assert last.seq == 8
    assert (last.call, last.session, last.gateway) == ("CA100", "VX100", "gw-a")


async def test_tokens_reach_the_right_socket(nursery: trio.Nursery, bus: Bus) -> None:
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus)
        async with _ws(gw.port) as one, _ws(gw.port) as two:
            await _open_call(gw, one, "CA1", "VX1")
            await _open_call(gw, two, "CA2", "VX2")
            await one.send_message(prompt_frame("hi"))
            await gw.tokens("CA2", "VX2", reply_to=0, index=0, text="Welcome ")
            await gw.tokens("CA1", "VX1", reply_to=2, index=0, text="Hello")
            await gw.tokens("CA1", "VX1", reply_to=2, index=1, text=" there.", last=False)
            await gw.tokens("CA1", "VX1", reply_to=2, index=2, text="", last=True)
            await gw.tokens("CA2", "VX2", reply_to=0, index=1, text="back!", last=True)
            got_one = [json.loads(await one.get_message()) for _ in range(3)]
            got_two = [json.loads(await two.get_message()) for _ in range(2)]
    assert got_one == [
        {"type": "text", "token": "Hello", "last": False},
        {"type": "text", "token": " there.", "last": False},
        {"type": "text", "token": "", "last": True},
    ]
    assert got_two == [
        {"type": "text", "token": "Welcome ", "last": False},
        {"type": "text", "token": "back!", "last": True},
    ]


async def test_fencing_and_dedup(nursery: trio.Nursery, bus: Bus) -> None:
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus)
        async with _ws(gw.port) as ws:
            await _open_call(gw, ws, "CA1", "VX1")  # seq 1
            stream = gw.calls_stream("CA1")
            await ws.send_message(prompt_frame("first"))  # seq 2
            await entries(bus, stream, 2)
            await gw.tokens("CA1", "VX1", reply_to=2, index=0, text="A")
            await gw.tokens("CA1", "VX1", reply_to=2, index=0, text="A-again")  # duplicate
            await gw.tokens("CA1", "VX1", reply_to=2, index=1, text="B")
            assert json.loads(await ws.get_message())["token"] == "A"
            assert json.loads(await ws.get_message())["token"] == "B"
            await ws.send_message(
                json.dumps(
                    {
                        "type": "interrupt",
                        "utteranceUntilInterrupt": "A",
                        "durationUntilInterruptMs": 100,
                    }
                )
            )  # seq 3: fences reply 2
            await entries(bus, stream, 3)
            await gw.tokens("CA1", "VX1", reply_to=2, index=2, text="late", last=True)
            await ws.send_message(prompt_frame("partial", last=False))  # seq 4: no fence
            await ws.send_message(prompt_frame("second"))  # seq 5: fences replies < 5
            await entries(bus, stream, 5)
            await gw.tokens("CA1", "VX1", reply_to=3, index=0, text="stale")
            await gw.tokens("CA1", "VX0", reply_to=5, index=0, text="old session")
            await gw.tokens("CA9", "VX9", reply_to=5, index=0, text="no such call")
            await gw.tokens("CA1", "VX1", reply_to=5, index=0, text="C")
            await gw.tokens("CA1", "VX1", reply_to=5, index=1, text="", last=True)
            after = [json.loads(await ws.get_message()) for _ in range(2)]
    assert after == [
        {"type": "text", "token": "C", "last": False},
        {"type": "text", "token": "", "last": True},
    ]
    dropped = gw.gateway.metrics.outbound_dropped
    assert dropped.labels("duplicate")._value.get() == 1
    assert dropped.labels("fenced")._value.get() == 2
    assert dropped.labels("stale_session")._value.get() == 1
    assert dropped.labels("no_session")._value.get() == 1


async def test_nothing_of_a_reply_is_spoken_after_its_last_token(
    nursery: trio.Nursery, bus: Bus
) -> None:
    # Two LLM workers streaming one reclaimed request: A ended the reply at
    # index 1, B's batches run on to index 3. B's tail must not be heard.
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus)
        async with _ws(gw.port) as ws:
            await _open_call(gw, ws, "CA1", "VX1")
            await ws.send_message(prompt_frame("hi"))  # seq 2
            await entries(bus, gw.calls_stream("CA1"), 2)
            await gw.tokens("CA1", "VX1", reply_to=2, index=0, text="Hello there.")
            await gw.tokens("CA1", "VX1", reply_to=2, index=1, text=" Bye.", last=True)
            for index, text in enumerate(["Hello", " there.", " Bye", "."]):
                await gw.tokens("CA1", "VX1", reply_to=2, index=index, text=text, last=index == 3)
            await gw.send_frame("CA1", "VX1", {"type": "sendDigits", "digits": "1"})
            heard = [json.loads(await ws.get_message()) for _ in range(3)]
    assert heard == [
        {"type": "text", "token": "Hello there.", "last": False},
        {"type": "text", "token": " Bye.", "last": True},
        {"type": "sendDigits", "digits": "1"},
    ]
    assert gw.gateway.metrics.outbound_dropped.labels("after_last")._value.get() == 4


async def test_long_replies_are_split_and_model_output_cleaned(
    nursery: trio.Nursery, bus: Bus
) -> None:
    sentence = "This sentence is part of a very long reply that goes on. "
    long_text = sentence * 3000  # ~170 KB in one batch
    with trio.fail_after(20):
        gw = await start_gateway(nursery, bus)
        async with _ws(gw.port) as ws:
            await _open_call(gw, ws, "CA1", "VX1")
            await ws.send_message(prompt_frame("talk"))  # seq 2
            await entries(bus, gw.calls_stream("CA1"), 2)
            dirty = "\x1b[2J\x1b[31mRed\x1b[0m \u202epay\u202c\x00 now. "
            await gw.tokens("CA1", "VX1", reply_to=2, index=0, text=dirty + "\x1b[3")
            await gw.tokens("CA1", "VX1", reply_to=2, index=1, text="1mOK. ")
            await gw.tokens("CA1", "VX1", reply_to=2, index=2, text=long_text, last=True)
            first = await ws.get_message()
            second = await ws.get_message()
            frames = []
            while not frames or not json.loads(frames[-1])["last"]:
                frames.append(await ws.get_message())
    assert json.loads(first) == {"type": "text", "token": "Red pay now. ", "last": False}
    assert json.loads(second) == {"type": "text", "token": "OK. ", "last": False}
    limit = gw.config.max_text_frame_bytes
    assert len(frames) > 1
    assert all(len(frame.encode()) <= limit for frame in frames)
    tokens = [json.loads(frame)["token"] for frame in frames]
    assert "".join(tokens) == long_text
    assert all(token.endswith(". ") for token in tokens)  # cut at sentence ends
    assert [json.loads(frame)["last"] for frame in frames] == [False] * (len(frames) - 1) + [True]


async def test_gateway_send_end_then_twilio_closes(nursery: trio.Nursery, bus: Bus) -> None:
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus)
        async with _ws(gw.port) as ws:
            await _open_call(gw, ws, "CA1", "VX1")
            await gw.send_frame("CA1", "VX1", {"type": "sendDigits", "digits": "12#"})
            await gw.send_frame("CA1", "VX1", {"type": "bogus"})  # invalid: dropped
            await gw.send_frame("CA1", "VX1", {"type": "end", "handoffData": '{"to":"human"}'})
            first = json.loads(await ws.get_message())
            second = json.loads(await ws.get_message())
        closed = await wait_for_kind(bus, gw.calls_stream("CA1"), Kind.CALL_CLOSED)
    assert first == {"type": "sendDigits", "digits": "12#"}
    assert second == {"type": "end", "handoffData": '{"to":"human"}'}
    assert closed[-1].body["code"] == 1000


async def test_end_without_close_is_closed_by_us(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    # The virtual clock only with the in-process bus: a real redis-server's
    # replies take real time, during which autojump would race ahead.
    bus = MemoryBus()
    with trio.fail_after(30):
        gw = await start_gateway(nursery, bus)
        async with _ws(gw.port) as ws:
            await _open_call(gw, ws, "CA1", "VX1")
            await gw.send_frame("CA1", "VX1", {"type": "end"})
            assert json.loads(await ws.get_message()) == {"type": "end"}
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
    assert info.value.reason is not None
    assert info.value.reason.code == 1000


BAD_FRAMES: list[tuple[str | bytes, str]] = [
    ("this is not json", "not_json"),
    ("[1, 2, 3]", "not_object"),
    ('{"type": "mystery"}', "unknown_type"),
    ('{"type": "prompt", "lang": "en-US", "last": true}', "missing_field"),
    ('{"type": "prompt", "voicePrompt": 5, "lang": "en-US", "last": true}', "wrong_type"),
    (b"\x00\x01binary", "binary"),
    ('{"type": "setup", "sessionId": "VX2", "callSid": "CA2"}', "duplicate_setup"),
    # Hostile values: each costs its frame, never the session.
    ('{"type": "interrupt", "durationUntilInterruptMs": 18446744073709551616}', "bad_value"),
    ('{"type": "interrupt", "durationUntilInterruptMs": "-5"}', "bad_value"),
    ('{"type": "prompt", "voicePrompt": "a\\ud800b", "lang": "en-US", "last": true}', "bad_value"),
    ('{"type": "info", "name": "x", "value": "\\udfff"}', "bad_value"),
    ('{"type": "dtmf", "digit": "\\ud83d"}', "bad_value"),
    ('{"type": "error", "description": "\\udc00"}', "bad_value"),
]


async def test_a_setup_without_a_call_sid_is_refused_and_never_registered(
    nursery: trio.Nursery, bus: Bus
) -> None:
    with trio.fail_after(10), capture_logs() as logs:
        gw = await start_gateway(nursery, bus)
        async with _ws(gw.port) as ws:
            await ws.send_message(setup_frame("", "VX1"))
            await ws.send_message(setup_frame("CA1", "VX1", callerName="\udc00"))
            await _open_call(gw, ws, "CA1", "VX1")
            live = set(gw.gateway.sessions)
    rejected = [(e["event"], e["kind"]) for e in logs if e["event"] == "frame_rejected"]
    assert rejected == [("frame_rejected", "bad_value")] * 2
    assert live == {"CA1"}


async def test_bad_frames_are_logged_and_dropped_other_calls_unaffected(
    nursery: trio.Nursery, bus: Bus
) -> None:
    with trio.fail_after(10), capture_logs() as logs:
        gw = await start_gateway(nursery, bus)
        async with _ws(gw.port) as bad, _ws(gw.port) as good:
            await bad.send_message(prompt_frame("too early"))
            await _open_call(gw, bad, "CABAD", "VXBAD")
            await _open_call(gw, good, "CAGOOD", "VXGOOD")
            for frame, _ in BAD_FRAMES:
                await bad.send_message(frame)
            await good.send_message(prompt_frame("still here"))
            await bad.send_message(prompt_frame("and me"))
            bad_events = await entries(bus, gw.calls_stream("CABAD"), 2)
            good_events = await entries(bus, gw.calls_stream("CAGOOD"), 2)
            await gw.tokens("CAGOOD", "VXGOOD", reply_to=2, index=0, text="ok", last=True)
            await gw.tokens("CABAD", "VXBAD", reply_to=2, index=0, text="ok too", last=True)
            good_reply = json.loads(await good.get_message())
            bad_reply = json.loads(await bad.get_message())
    rejected = [e for e in logs if e["event"] == "frame_rejected"]
    assert [e["kind"] for e in rejected] == ["before_setup"] + [kind for _, kind in BAD_FRAMES]
    assert rejected[0]["call_sid"] is None
    assert {e["call_sid"] for e in rejected[1:]} == {"CABAD"}
    assert all(e["log_level"] == "warning" for e in rejected)
    # The bad frames never reached the bus and never used up a seq number.
    assert [(e.kind, e.seq) for e in bad_events] == [("call.setup", 1), ("call.prompt", 2)]
    assert bad_events[1].body["voicePrompt"] == "and me"
    assert [(e.kind, e.seq) for e in good_events] == [("call.setup", 1), ("call.prompt", 2)]
    assert good_reply == {"type": "text", "token": "ok", "last": True}
    assert bad_reply == {"type": "text", "token": "ok too", "last": True}
    rejected_metric = gw.gateway.metrics.frames_rejected
    assert rejected_metric.labels("not_json")._value.get() == 1
    assert rejected_metric.labels("before_setup")._value.get() == 1


async def test_oversize_frame_closes_only_that_socket(nursery: trio.Nursery, bus: Bus) -> None:
    with trio.fail_after(10), capture_logs() as logs:
        gw = await start_gateway(nursery, bus, max_frame_bytes=2048)
        async with _ws(gw.port) as big, _ws(gw.port) as good:
            await _open_call(gw, big, "CABIG", "VXBIG")
            await _open_call(gw, good, "CAGOOD", "VXGOOD")
            await big.send_message(prompt_frame("x" * 5000))
            closed = await wait_for_kind(bus, gw.calls_stream("CABIG"), Kind.CALL_CLOSED)
            with pytest.raises(ConnectionClosed) as info:
                await big.get_message()
            await good.send_message(prompt_frame("fine"))
            good_events = await entries(bus, gw.calls_stream("CAGOOD"), 2)
            await gw.tokens("CAGOOD", "VXGOOD", reply_to=2, index=0, text="yes", last=True)
            reply = json.loads(await good.get_message())
    assert info.value.reason is not None
    assert info.value.reason.code == 1009
    assert [e.kind for e in closed] == ["call.setup", "call.closed"]
    assert closed[-1].body["code"] == 1009
    rejected = [e for e in logs if e["event"] == "frame_rejected"]
    assert [(e["kind"], e["call_sid"]) for e in rejected] == [("too_large", "CABIG")]
    assert good_events[1].body["voicePrompt"] == "fine"
    assert reply == {"type": "text", "token": "yes", "last": True}


async def test_upgrade_signatures(nursery: trio.Nursery, bus: Bus) -> None:
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus, auth_token=TOKEN)
        port = gw.port
        refused: list[int] = []
        for signature in (
            None,
            "bm9wZQ==",
            sign(TOKEN, f"ws://127.0.0.1:{port}/relay", {}),  # the local URL: wrong
            sign(TOKEN, f"{PUBLIC_URL}/relay", {}),  # https, not the wss url in TwiML
        ):
            with pytest.raises(ConnectionRejected) as info:
                async with _ws(port, signature=signature):
                    pass  # pragma: no cover - never reached
            refused.append(info.value.status_code)
        assert gw.gateway.sessions == {}
        good = sign(TOKEN, "wss://agent.example.com/relay", {})
        async with _ws(port, signature=good) as ws:
            await _open_call(gw, ws, "CA1", "VX1")
            assert set(gw.gateway.sessions) == {"CA1"}
        query = sign(TOKEN, "wss://agent.example.com/relay?tenant=acme", {})
        async with _ws(port, signature=query, path="/relay?tenant=acme") as ws:
            await _open_call(gw, ws, "CA2", "VX2")
    assert refused == [403, 403, 403, 403]
    assert gw.gateway.metrics.webhooks.labels("/relay", "403")._value.get() == 4


async def test_cancel_closes_sessions_going_away(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    # The virtual clock only with the in-process bus: a real redis-server's
    # replies take real time, during which autojump would race ahead.
    bus = MemoryBus()
    with trio.fail_after(30):
        gw = await start_gateway(nursery, bus)
        async with _ws(gw.port) as one, _ws(gw.port) as two:
            await _open_call(gw, one, "CA1", "VX1")
            await _open_call(gw, two, "CA2", "VX2")
            started = trio.current_time()
            gw.scope.cancel()
            codes = []
            for ws in (one, two):
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
                assert info.value.reason is not None
                codes.append(info.value.reason.code)
            await gw.finished.wait()
            shutdown_s = trio.current_time() - started
        closed = [
            await wait_for_kind(bus, gw.calls_stream(c), Kind.CALL_CLOSED) for c in ("CA1", "CA2")
        ]
    assert codes == [1001, 1001]
    assert [c[-1].body for c in closed] == [{"code": 1001, "reason": "going away"}] * 2
    # The close handshakes completed: no close timed out (autojump would show it).
    assert shutdown_s < CLOSE_TIMEOUT


async def test_new_session_on_same_call_takes_over(nursery: trio.Nursery, bus: Bus) -> None:
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus)
        async with _ws(gw.port) as old:
            await _open_call(gw, old, "CA1", "VX1")
        await wait_for_kind(bus, gw.calls_stream("CA1"), Kind.CALL_CLOSED)
        async with _ws(gw.port) as new:
            await new.send_message(setup_frame("CA1", "VX2"))
            events = await entries(bus, gw.calls_stream("CA1"), 3)
            await gw.tokens("CA1", "VX1", reply_to=1, index=0, text="old")
            await gw.tokens("CA1", "VX2", reply_to=1, index=0, text="new", last=True)
            reply = json.loads(await new.get_message())
    assert [(e.kind, e.session, e.seq) for e in events] == [
        ("call.setup", "VX1", 1),
        ("call.closed", "VX1", 2),
        ("call.setup", "VX2", 1),
    ]
    assert reply["token"] == "new"


async def test_a_second_socket_cannot_take_over_a_live_call(
    nursery: trio.Nursery, bus: Bus
) -> None:
    hijacks = [
        ("no token", setup_frame("CA1", "VXH1", token="")),
        ("another call's token", setup_frame("CA1", "VXH2", token=session_token("CA2"))),
        ("a forged token", setup_frame("CA1", "VXH3", token="9999999999..AAAA")),
        ("the call's own first token, replayed", setup_frame("CA1", "VXH4")),
    ]
    with trio.fail_after(10), capture_logs() as logs:
        gw = await start_gateway(nursery, bus, auth_token=TOKEN)
        signed = sign(TOKEN, "wss://agent.example.com/relay")
        async with _ws(gw.port, signature=signed) as victim:
            await _open_call(gw, victim, "CA1", "VX1")
            for _, frame in hijacks:
                async with _ws(gw.port, signature=signed) as hijacker:
                    await hijacker.send_message(frame)
                    with pytest.raises(ConnectionClosed) as info:
                        await hijacker.get_message()
                    assert info.value.reason is not None
                    assert info.value.reason.code == 1008
            await victim.send_message(prompt_frame("my card number is 4111"))
            events = await entries(bus, gw.calls_stream("CA1"), 2)
            await gw.tokens("CA1", "VX1", reply_to=2, index=0, text="Thanks.", last=True)
            reply = json.loads(await victim.get_message())
            live = {call: s.session_id for call, s in gw.gateway.sessions.items()}
    assert [(e.kind, e.session) for e in events] == [("call.setup", "VX1"), ("call.prompt", "VX1")]
    assert reply == {"type": "text", "token": "Thanks.", "last": True}
    assert live == {"CA1": "VX1"}
    refused = [e["reason"] for e in logs if e["event"] == "session_refused"]
    assert refused == ["token_missing", "token_wrong_call", "token_wrong_call", "call_already_live"]


async def test_the_resume_path_replaces_a_stale_session(nursery: trio.Nursery, bus: Bus) -> None:
    # Twilio reported VX1 failed on /action and the answer's token supersedes it,
    # while this gateway has not yet seen VX1's socket go (a half-open connection).
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus)
        async with _ws(gw.port) as stale, _ws(gw.port) as resumed:
            await _open_call(gw, stale, "CA1", "VX1")
            token = session_token("CA1", supersedes="VX1")
            await resumed.send_message(setup_frame("CA1", "VX2", token=token))
            await entries(bus, gw.calls_stream("CA1"), 2)
            await gw.tokens("CA1", "VX2", reply_to=1, index=0, text="back", last=True)
            reply = json.loads(await resumed.get_message())
            live = {call: s.session_id for call, s in gw.gateway.sessions.items()}
    assert reply == {"type": "text", "token": "back", "last": True}
    assert live == {"CA1": "VX2"}


async def test_the_live_sessions_own_socket_may_come_back(nursery: trio.Nursery, bus: Bus) -> None:
    # applicationReconnect: Twilio reopens the socket of the same session.
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus)
        async with _ws(gw.port) as old, _ws(gw.port) as again:
            await _open_call(gw, old, "CA1", "VX1")
            await again.send_message(setup_frame("CA1", "VX1"))
            await entries(bus, gw.calls_stream("CA1"), 2)
            await gw.tokens("CA1", "VX1", reply_to=1, index=0, text="here", last=True)
            reply = json.loads(await again.get_message())
            live = gw.gateway.sessions["CA1"]
    assert reply == {"type": "text", "token": "here", "last": True}
    assert live.session_id == "VX1"


async def test_the_twiml_token_admits_its_call_only(nursery: trio.Nursery, bus: Bus) -> None:
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus)
        twiml = await http(gw.port, "POST", "/twiml", form={"CallSid": "CA7"})
        relay = parse_twiml(twiml.text).relay
        assert relay is not None
        token = relay.parameters[calltoken.PARAMETER]
        async with _ws(gw.port) as other:
            await other.send_message(setup_frame("CA8", "VX8", token=token))
            with pytest.raises(ConnectionClosed):
                await other.get_message()
        async with _ws(gw.port) as right:
            await _open_call(gw, right, "CA7", "VX7")
            live = set(gw.gateway.sessions)
    assert live == {"CA7"}


async def test_sockets_that_never_send_setup_are_closed(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    bus = MemoryBus()
    with trio.fail_after(60), capture_logs() as logs:
        gw = await start_gateway(nursery, bus, setup_timeout_s=3.0)
        async with AsyncExitStack() as stack:
            idle = [await stack.enter_async_context(_ws(gw.port)) for _ in range(20)]
            opened = trio.current_time()
            codes = []
            for ws in idle:
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
                assert info.value.reason is not None
                codes.append(info.value.reason.code)
            waited = trio.current_time() - opened
            health = await http(gw.port, "GET", "/healthz")
    assert codes == [1008] * 20
    assert 3.0 <= waited < 10.0
    assert health.status == 200
    assert len([e for e in logs if e["event"] == "setup_timeout"]) == 20
    assert gw.gateway.sessions == {}


async def test_at_the_socket_limit_upgrades_get_503_and_health_still_answers(
    nursery: trio.Nursery,
) -> None:
    bus = MemoryBus()
    with trio.fail_after(20):
        gw = await start_gateway(nursery, bus, max_sockets=5, setup_timeout_s=60.0)
        async with AsyncExitStack() as stack:
            for _ in range(5):
                await stack.enter_async_context(_ws(gw.port))
            with pytest.raises(ConnectionRejected) as info:
                async with _ws(gw.port):
                    pass
            health = await http(gw.port, "GET", "/healthz")
        # The idle sockets are gone (once the server noticed): upgrades are welcome again.
        while True:
            try:
                async with _ws(gw.port) as ws:
                    await _open_call(gw, ws, "CA1", "VX1")
                    break
            except ConnectionRejected:
                continue
    assert info.value.status_code == 503
    assert health.status == 200


def _boom_prompt(stream: str, fields: Fields) -> bool:
    return fields.get("c") == "CABOOM" and fields.get("k") == Kind.CALL_PROMPT


async def test_a_failing_session_ends_alone(nursery: trio.Nursery) -> None:
    # The bus refuses one call's prompts for good, as a key of the wrong type
    # would. (A full Redis is weather: its refusals are retried, not fatal.)
    bus = FaultyBus(MemoryBus())
    wrong = CommandError("WRONGTYPE Operation against a key holding the wrong kind of value")
    bus.fail_before("append", error=wrong, when=_boom_prompt, times=None)
    with trio.fail_after(10), capture_logs() as logs:
        gw = await start_gateway(nursery, bus)
        async with _ws(gw.port) as boom, _ws(gw.port) as good:
            await _open_call(gw, boom, "CABOOM", "VX1")
            await _open_call(gw, good, "CAGOOD", "VX2")
            await boom.send_message(prompt_frame("this breaks"))
            with pytest.raises(ConnectionClosed) as info:
                await boom.get_message()
            await good.send_message(prompt_frame("this works"))
            good_events = await entries(bus, gw.calls_stream("CAGOOD"), 2)
            await gw.tokens("CAGOOD", "VX2", reply_to=2, index=0, text="fine", last=True)
            reply = json.loads(await good.get_message())
            metrics = await http(gw.port, "GET", "/metrics")
            live = set(gw.gateway.sessions)
    assert info.value.reason is not None
    assert info.value.reason.code == 1011
    failed = [e for e in logs if e["event"] == "session_failed"]
    assert [(e["call_sid"], e["log_level"]) for e in failed] == [("CABOOM", "error")]
    assert good_events[1].body["voicePrompt"] == "this works"
    assert reply == {"type": "text", "token": "fine", "last": True}
    assert live == {"CAGOOD"}
    assert "switchboard_gateway_active_calls 1.0" in metrics.text
    assert 'switchboard_gateway_frames_in_total{type="prompt"} 2.0' in metrics.text
    assert 'switchboard_gateway_frames_out_total{type="text"} 1.0' in metrics.text
