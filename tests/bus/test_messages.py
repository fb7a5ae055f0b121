"""Typed bus messages: every kind round-trips through an encoded envelope, the
wire stays the one recorded streams hold, and a bad body is a ``MalformedEntry``."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import relay
from bus.base import MalformedEntry
from bus.envelope import Envelope, Kind
from bus.messages import (
    BusMessage,
    CallClosed,
    CallDtmf,
    CallError,
    CallInfo,
    CallInterrupt,
    CallPrompt,
    CallSetup,
    ControlCancel,
    ConversationTimer,
    Fact,
    GatewaySend,
    HistoryMessage,
    LlmRequest,
    LlmResult,
    LlmTokens,
    Timings,
    ToolCall,
    UnknownKind,
    Usage,
    decode,
    envelope,
)

# What JSON (and orjson) can carry: no lone surrogates, 64-bit integers, finite floats.
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
ints = st.integers(-(2**53), 2**53)
ms = st.floats(0, 1e9, allow_nan=False)
json_value = st.recursive(
    st.none() | st.booleans() | ints | ms | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
json_object = st.dictionaries(text, json_value, max_size=4)

blocks = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, text),
    st.builds(
        lambda i, n, x: {"type": "tool_use", "id": i, "name": n, "input": x},
        text,
        text,
        json_object,
    ),
    st.builds(
        lambda i, c, e: {"type": "tool_result", "tool_use_id": i, "content": c, "is_error": e},
        text,
        text,
        st.booleans(),
    ),
)
history: st.SearchStrategy[list[HistoryMessage]] = st.lists(
    st.builds(
        lambda r, c: {"role": r, "content": c},
        st.sampled_from(["user", "assistant"]),
        text | st.lists(blocks, max_size=3),
    ),
    max_size=4,
)

messages: st.SearchStrategy[BusMessage] = st.one_of(
    st.builds(
        CallSetup,
        session_id=text,
        call_sid=text,
        from_=text,
        to=text,
        direction=text,
        call_status=text,
        custom_parameters=st.dictionaries(text, text, max_size=3),
    ),
    st.builds(CallPrompt, voice_prompt=text, lang=text, last=st.booleans()),
    st.builds(CallDtmf, digit=text),
    st.builds(
        CallInterrupt,
        utterance_until_interrupt=text,
        duration_until_interrupt_ms=ms,
        withdrawn=st.integers(min_value=0, max_value=2**31),
    ),
    st.builds(CallInfo, name=text, value=text),
    st.builds(CallError, description=text),
    st.builds(CallClosed, code=st.none() | ints, reason=text),
    st.builds(LlmRequest, system=text, messages=history, reply_to=st.none() | ints),
    st.builds(LlmTokens, text=text, index=ints, last=st.booleans(), reply_to=ints),
    st.builds(
        LlmResult,
        text=text,
        reply_to=ints,
        stop_reason=st.none() | text,
        usage=st.builds(Usage, input_tokens=ints, output_tokens=ints),
        timings=st.builds(Timings, first_token_ms=st.none() | ms, total_ms=ms),
        error=st.none() | text,
        cancelled=st.booleans(),
        messages=st.none() | history,
        tool_calls=st.lists(
            st.builds(
                ToolCall, id=text, name=text, input=json_object, result=text, is_error=st.booleans()
            ),
            max_size=3,
        ).map(tuple),
    ),
    st.builds(GatewaySend, frame=json_object, after_speech=st.booleans(), origin=text),
    st.builds(ControlCancel, reply_to=ints, reason=text),
    st.builds(ConversationTimer, timer=text, deadline_ms=ints),
    st.builds(
        Fact,
        name=text,
        t_ms=ms,
        fields=st.dictionaries(text.filter(lambda k: k not in ("fact", "t_ms")), json_value),
    ),
)


@given(messages)
def test_every_message_round_trips_through_an_encoded_envelope(message: BusMessage) -> None:
    env = envelope(message, call="CA1", session="VX1", gateway="gw1", seq=3, turn=2)
    decoded = Envelope.decode(env.encode())
    assert decoded.kind is message.KIND
    assert decode(decoded) == message


# The bodies as the bus carried them before the types existed (from the gateway's
# to_wire, the LLM actor and the conversation), byte for byte.
RECORDED: list[tuple[Kind, dict[str, Any], BusMessage]] = [
    (
        Kind.CALL_PROMPT,
        {"type": "prompt", "voicePrompt": "Hi there", "lang": "en-US", "last": True},
        CallPrompt(voice_prompt="Hi there", lang="en-US", last=True),
    ),
    (
        Kind.CALL_INTERRUPT,
        {
            "type": "interrupt",
            "utteranceUntilInterrupt": "Sure, the",
            "durationUntilInterruptMs": 460,
        },
        CallInterrupt(utterance_until_interrupt="Sure, the", duration_until_interrupt_ms=460.0),
    ),
    (
        # The gateway's: it withdrew the late reply to prompt 7 after its apology.
        Kind.CALL_INTERRUPT,
        {
            "type": "interrupt",
            "utteranceUntilInterrupt": "",
            "durationUntilInterruptMs": 0,
            "withdrawn": 7,
        },
        CallInterrupt(withdrawn=7),
    ),
    (
        Kind.LLM_TOKENS,
        {"text": "Hello", "index": 0, "last": False, "reply_to": 4},
        LlmTokens(text="Hello", index=0, last=False, reply_to=4),
    ),
    (
        Kind.LLM_RESULT,
        {
            "text": "Done.",
            "reply_to": 4,
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 12, "output_tokens": 3},
            "timings": {"first_token_ms": 210.5, "total_ms": 480.25},
            "error": None,
            "cancelled": False,
            "messages": [
                {"role": "assistant", "content": [{"type": "text", "text": "Done."}]},
            ],
            "tool_calls": [
                {"id": "tu1", "name": "end_call", "input": {}, "result": "ok", "is_error": False}
            ],
        },
        LlmResult(
            text="Done.",
            reply_to=4,
            stop_reason="end_turn",
            usage=Usage(12, 3),
            timings=Timings(210.5, 480.25),
            messages=[{"role": "assistant", "content": [{"type": "text", "text": "Done."}]}],
            tool_calls=(ToolCall(id="tu1", name="end_call", input={}, result="ok"),),
        ),
    ),
    (
        Kind.GATEWAY_SEND,
        {"frame": {"type": "end", "handoffData": "{}"}, "after_speech": True, "origin": "llm"},
        GatewaySend(frame={"type": "end", "handoffData": "{}"}, after_speech=True, origin="llm"),
    ),
    (
        Kind.CONTROL_CANCEL,
        {"reply_to": 7, "reason": "interrupt"},
        ControlCancel(reply_to=7, reason="interrupt"),
    ),
    (
        Kind.CONVERSATION_TIMER,
        {"timer": "silence", "deadline_ms": 1764500000000},
        ConversationTimer(timer="silence", deadline_ms=1764500000000),
    ),
    (
        Kind.EVENT,
        {"fact": "first_token_sent", "t_ms": 1764500000000.125, "reply_to": 4},
        Fact(name="first_token_sent", t_ms=1764500000000.125, fields={"reply_to": 4}),
    ),
]


@pytest.mark.parametrize(("kind", "body", "message"), RECORDED, ids=[k for k, _, _ in RECORDED])
def test_recorded_bodies_decode_and_encode_unchanged(
    kind: Kind, body: dict[str, Any], message: BusMessage
) -> None:
    fields = Envelope(kind=kind, call="CA1", body=body).encode()
    assert decode(Envelope.decode(fields)) == message
    assert message.to_body() == body


inbound = st.one_of(
    st.builds(
        relay.Setup,
        session_id=text,
        call_sid=text,
        account_sid=text,
        caller_name=text,
        custom_parameters=st.dictionaries(text, text, max_size=2),
    ),
    st.builds(relay.Prompt, voice_prompt=text, lang=text, last=st.booleans()),
    st.builds(relay.Dtmf, digit=text),
    st.builds(relay.Interrupt, utterance_until_interrupt=text, duration_until_interrupt_ms=ms),
    st.builds(relay.Info, name=text, value=text),
    st.builds(relay.Error, description=text),
)
INBOUND_KINDS = {
    relay.Setup: Kind.CALL_SETUP,
    relay.Prompt: Kind.CALL_PROMPT,
    relay.Dtmf: Kind.CALL_DTMF,
    relay.Interrupt: Kind.CALL_INTERRUPT,
    relay.Info: Kind.CALL_INFO,
    relay.Error: Kind.CALL_ERROR,
}


@given(inbound)
def test_caller_events_keep_the_twilio_frame_the_gateway_puts_on_the_bus(
    frame: relay.InboundMessage,
) -> None:
    wire = relay.to_wire(frame)
    env = Envelope(kind=INBOUND_KINDS[type(frame)], call="CA1", body=wire)
    message = decode(Envelope.decode(env.encode()))
    assert message.to_body() == wire


BAD_BODIES: list[tuple[Kind, dict[str, Any], str]] = [
    (Kind.CALL_PROMPT, {"voicePrompt": 3}, "voicePrompt"),
    (Kind.CALL_PROMPT, {"voicePrompt": "hi", "last": "yes"}, "last"),
    (Kind.CALL_DTMF, {}, "digit"),
    (Kind.CALL_INTERRUPT, {"durationUntilInterruptMs": "soon"}, "durationUntilInterruptMs"),
    (Kind.CALL_SETUP, {"customParameters": {"a": 1}}, "customParameters"),
    (Kind.CALL_CLOSED, {"code": "1000"}, "code"),
    (Kind.LLM_REQUEST, {"messages": [{"content": "no role"}]}, "messages"),
    (Kind.LLM_REQUEST, {"messages": [{"role": "user", "content": [1]}]}, "messages"),
    (Kind.LLM_REQUEST, {"messages": [], "reply_to": True}, "reply_to"),
    (Kind.LLM_TOKENS, {"text": "a", "index": 0, "last": False}, "reply_to"),
    (Kind.LLM_TOKENS, {"text": "a", "index": 1.5, "last": False, "reply_to": 1}, "index"),
    (Kind.LLM_RESULT, {"text": "a"}, "reply_to"),
    (Kind.LLM_RESULT, {"reply_to": 1, "usage": {"input_tokens": "12"}}, "input_tokens"),
    (Kind.LLM_RESULT, {"reply_to": 1, "tool_calls": ["end_call"]}, "tool_calls"),
    (Kind.GATEWAY_SEND, {"frame": "text"}, "frame"),
    (Kind.CONTROL_CANCEL, {"reason": "interrupt"}, "reply_to"),
    (Kind.CONVERSATION_TIMER, {"timer": "silence", "deadline_ms": None}, "deadline_ms"),
    (Kind.EVENT, {"t_ms": 1.0}, "fact"),
]


@pytest.mark.parametrize(
    ("kind", "body", "field"), BAD_BODIES, ids=[f"{k}-{f}" for k, _, f in BAD_BODIES]
)
def test_a_bad_body_is_a_malformed_entry_naming_kind_and_field(
    kind: Kind, body: dict[str, Any], field: str
) -> None:
    env = Envelope.decode(Envelope(kind=kind, call="CA1", body=body).encode())
    with pytest.raises(MalformedEntry) as raised:
        decode(env)
    assert kind.value in str(raised.value)
    assert repr(field) in str(raised.value)


@given(st.sampled_from(list(Kind)), json_object)
def test_any_json_body_decodes_or_is_a_malformed_entry(kind: Kind, body: dict[str, Any]) -> None:
    env = Envelope.decode(Envelope(kind=kind, call="CA1", body=body).encode())
    try:
        message = decode(env)
    except MalformedEntry:
        return
    assert message.KIND is kind


def test_a_plugin_kind_travels_as_a_string_and_has_no_message_type() -> None:
    env = Envelope.decode(Envelope(kind="analytics.call", call="CA1", body={"n": 1}).encode())
    assert env.kind == "analytics.call"
    assert not isinstance(env.kind, Kind)
    assert env.body == {"n": 1}
    with pytest.raises(UnknownKind):
        decode(env)


def test_a_known_kind_decodes_as_the_enum() -> None:
    env = Envelope.decode(Envelope(kind="call.prompt", call="CA1").encode())
    assert env.kind is Kind.CALL_PROMPT


def test_older_entries_without_newer_fields_get_their_defaults() -> None:
    request = LlmRequest.from_body({"system": "Be brief.", "messages": []})
    assert request.reply_to is None
    result = LlmResult.from_body({"text": "Hi", "reply_to": 2})
    assert (result.messages, result.tool_calls, result.cancelled) == (None, (), False)
    assert CallPrompt.from_body({"voicePrompt": "Hi"}).last is True
    assert (
        CallInterrupt.from_body({"durationUntilInterruptMs": "460"}).duration_until_interrupt_ms
        == 460.0
    )


def test_fact_readers_give_typed_fields_or_nothing() -> None:
    fact = Fact(
        name="completion_done",
        t_ms=1.0,
        fields={"reply_to": 3, "cancelled": True, "error": 5, "usage": {"input_tokens": 9}},
    )
    assert fact.int_field("reply_to") == 3
    assert fact.bool_field("cancelled") is True
    assert fact.str_field("error") is None
    assert fact.usage() == Usage(input_tokens=9)
    assert Fact(name="x", t_ms=1.0, fields={"usage": {"input_tokens": "9"}}).usage() is None
