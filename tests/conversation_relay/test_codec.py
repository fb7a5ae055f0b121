"""The sans-IO ConversationRelay core: parsing, serializing, ordering, 64107 counting.

Pure functions, no I/O: plain (synchronous) tests plus hypothesis properties.
Frame shapes follow Twilio's documented and observed traffic.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import (
    CLOSE_MALFORMED,
    MAX_CONSECUTIVE_INVALID,
    REASON_MALFORMED,
    Dtmf,
    End,
    Error,
    FrameErrorKind,
    InboundMessage,
    Info,
    Interrupt,
    Language,
    LocalProtocolError,
    OutboundMessage,
    Play,
    Prompt,
    ProtocolError,
    RelayConnection,
    RemoteProtocolError,
    SendDigits,
    Setup,
    Text,
    TwilioSide,
    inbound_from_wire,
    outbound_from_wire,
    parse_inbound,
    parse_outbound,
    serialize,
    to_wire,
    wire_type,
)

# The documented setup example, plus a field Twilio might add later.
SETUP_FRAME = json.dumps(
    {
        "type": "setup",
        "sessionId": "VX00000000000000000000000000000000",
        "accountSid": "AC00000000000000000000000000000000",
        "parentCallSid": "",
        "callSid": "CA00000000000000000000000000000000",
        "from": "+18005550100",
        "to": "+18005550101",
        "forwardedFrom": "+18005550102",
        "callerName": "",
        "direction": "inbound",
        "callType": "PSTN",
        "callStatus": "RINGING",
        "customParameters": {"callReference": "bar"},
        "someFutureField": {"nested": True},
    }
)

INBOUND_SAMPLES: list[InboundMessage] = [
    Setup(
        session_id="VX1",
        call_sid="CA1",
        account_sid="AC1",
        from_="+15550100",
        to="+15550199",
        direction="inbound",
        call_type="PSTN",
        call_status="RINGING",
        custom_parameters={"tenant": "acme"},
    ),
    Prompt(voice_prompt="Hi! Can you tell me about life?", lang="en-US", last=True),
    Prompt(voice_prompt="Hi! Can", lang="en", last=False),
    Dtmf(digit="#"),
    Interrupt(
        utterance_until_interrupt="Life is a complex set of", duration_until_interrupt_ms=460
    ),
    Interrupt(utterance_until_interrupt="Sentence 2 of", duration_until_interrupt_ms=684.5),
    Error(description="Invalid message received, code: 64107, hello"),
    Info(name="tokensPlayed", value="Hello there."),
]

OUTBOUND_SAMPLES: list[OutboundMessage] = [
    Text(token=" Hello"),
    Text(token="", last=True),
    Text(token="<phoneme>x</phoneme>", lang="en-US", interruptible=False, preemptible=True),
    Play(source="https://example.com/hold.mp3"),
    Play(source="https://example.com/hold.mp3", loop=0, preemptible=True, interruptible=False),
    SendDigits(digits="9www4085551212#*"),
    Language(tts_language="sv-SE"),
    Language(transcription_language="en-US"),
    Language(tts_language="sv-SE", transcription_language="en-US"),
    End(),
    End(handoff_data='{"reasonCode":"live-agent-handoff"}'),
]


INBOUND_TYPES = (Setup, Prompt, Dtmf, Interrupt, Error, Info)
OUTBOUND_TYPES = (Text, Play, SendDigits, Language, End)


def _remote(frame: str | bytes, *, outbound: bool = False) -> RemoteProtocolError:
    parse = parse_outbound if outbound else parse_inbound
    with pytest.raises(RemoteProtocolError) as info:
        parse(frame)
    return info.value


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("msg", INBOUND_SAMPLES, ids=lambda m: type(m).__name__)
def test_inbound_round_trips(msg: InboundMessage) -> None:
    frame = serialize(msg)
    assert parse_inbound(frame) == msg
    assert inbound_from_wire(json.loads(frame)) == msg
    assert to_wire(msg) == json.loads(frame)


@pytest.mark.parametrize("msg", OUTBOUND_SAMPLES, ids=lambda m: type(m).__name__)
def test_outbound_round_trips(msg: OutboundMessage) -> None:
    frame = serialize(msg)
    assert parse_outbound(frame) == msg
    assert outbound_from_wire(json.loads(frame)) == msg


def test_setup_parses_the_documented_example_and_ignores_unknown_fields() -> None:
    msg = parse_inbound(SETUP_FRAME)
    assert msg == Setup(
        session_id="VX00000000000000000000000000000000",
        call_sid="CA00000000000000000000000000000000",
        account_sid="AC00000000000000000000000000000000",
        parent_call_sid="",
        from_="+18005550100",
        to="+18005550101",
        forwarded_from="+18005550102",
        caller_name="",
        direction="inbound",
        call_type="PSTN",
        call_status="RINGING",
        custom_parameters={"callReference": "bar"},
    )
    # Frozen, and the parameters cannot be changed behind its back either.
    with pytest.raises(TypeError):
        msg.custom_parameters["x"] = "y"  # type: ignore[index]
    assert hash(msg) == hash(parse_inbound(SETUP_FRAME))


def test_setup_defaults_absent_strings_and_parameters() -> None:
    msg = parse_inbound('{"type":"setup","sessionId":"VX1","callSid":"CA1"}')
    assert isinstance(msg, Setup)
    assert (msg.from_, msg.parent_call_sid, msg.call_status) == ("", "", "")
    assert dict(msg.custom_parameters) == {}


def test_wire_names_are_twilios() -> None:
    assert to_wire(Setup(session_id="VX1", call_sid="CA1", from_="+1"))["from"] == "+1"
    assert serialize(Text(token="Hi", last=True)) == '{"type":"text","token":"Hi","last":true}'
    assert serialize(End()) == '{"type":"end"}'
    assert serialize(SendDigits(digits="1w2")) == '{"type":"sendDigits","digits":"1w2"}'
    assert to_wire(Language(tts_language="sv-SE")) == {"type": "language", "ttsLanguage": "sv-SE"}
    # Whole milliseconds go out as an integer, as Twilio sends them.
    assert to_wire(Interrupt("x", 460.0))["durationUntilInterruptMs"] == 460


def test_unknown_extra_fields_are_ignored_both_ways() -> None:
    assert parse_inbound(
        '{"type":"prompt","voicePrompt":"hi","lang":"en-US","last":true,"confidence":0.9}'
    ) == Prompt("hi", "en-US", True)
    assert parse_inbound('{"type":"info","name":"agentSpeaking","value":"on","ts":1}') == Info(
        "agentSpeaking", "on"
    )
    assert parse_outbound('{"type":"text","token":"a","x":1}') == Text(token="a")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(460, 460.0), (684.25, 684.25), ('"460"', 460.0), ('" 12.5 "', 12.5), ("0", 0.0)],
)
def test_interrupt_duration_accepts_number_or_numeric_string(raw: object, expected: float) -> None:
    frame = (
        '{"type":"interrupt","utteranceUntilInterrupt":"Life is",'
        f'"durationUntilInterruptMs":{raw}}}'
    )
    msg = parse_inbound(frame)
    assert msg == Interrupt("Life is", expected)


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ('"soon"', FrameErrorKind.BAD_VALUE),
        ('"NaN"', FrameErrorKind.BAD_VALUE),
        ("true", FrameErrorKind.WRONG_TYPE),
        ("[1]", FrameErrorKind.WRONG_TYPE),
    ],
)
def test_interrupt_duration_rejects_non_numbers(raw: str, kind: FrameErrorKind) -> None:
    err = _remote(f'{{"type":"interrupt","durationUntilInterruptMs":{raw}}}')
    assert err.kind is kind


def test_info_keeps_non_string_values_as_json_text() -> None:
    assert parse_inbound('{"type":"info","name":"roundTripDelayMs","value":120}') == Info(
        "roundTripDelayMs", "120"
    )


# --------------------------------------------------------------------------- bad frames


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ("hello", FrameErrorKind.NOT_JSON),
        ('{"type":"prompt"', FrameErrorKind.NOT_JSON),
        ("[" * 5000, FrameErrorKind.NOT_JSON),
        ('["setup"]', FrameErrorKind.NOT_OBJECT),
        ('"setup"', FrameErrorKind.NOT_OBJECT),
        ("null", FrameErrorKind.NOT_OBJECT),
        ('{"type":"connected"}', FrameErrorKind.UNKNOWN_TYPE),
        ('{"type":"media","media":{}}', FrameErrorKind.UNKNOWN_TYPE),
        ('{"voicePrompt":"hi"}', FrameErrorKind.MISSING_FIELD),
        ('{"type":7}', FrameErrorKind.WRONG_TYPE),
        ('{"type":"setup","callSid":"CA1"}', FrameErrorKind.MISSING_FIELD),
        ('{"type":"setup","sessionId":"VX1","callSid":"CA1","from":5}', FrameErrorKind.WRONG_TYPE),
        (
            '{"type":"setup","sessionId":"VX1","callSid":"CA1","customParameters":{"a":1}}',
            FrameErrorKind.WRONG_TYPE,
        ),
        ('{"type":"prompt","lang":"en-US","last":true}', FrameErrorKind.MISSING_FIELD),
        ('{"type":"prompt","voicePrompt":"hi","last":"true"}', FrameErrorKind.WRONG_TYPE),
        ('{"type":"dtmf"}', FrameErrorKind.MISSING_FIELD),
        ('{"type":"dtmf","digit":1}', FrameErrorKind.WRONG_TYPE),
        ('{"type":"error"}', FrameErrorKind.MISSING_FIELD),
        ('{"type":"info","value":"on"}', FrameErrorKind.MISSING_FIELD),
    ],
)
def test_bad_inbound_frames_raise_typed_remote_errors(frame: str, kind: FrameErrorKind) -> None:
    err = _remote(frame)
    assert err.kind is kind
    assert err.frame_excerpt == frame[:200]


def test_binary_frames_are_rejected() -> None:
    err = _remote(b'{"type":"prompt","voicePrompt":"hi"}')
    assert err.kind is FrameErrorKind.BINARY
    assert err.frame_excerpt.startswith('{"type"')
    assert _remote(b"\x00\xff", outbound=True).kind is FrameErrorKind.BINARY


def test_too_large_frames_are_rejected_by_utf8_size() -> None:
    token = "é" * 40  # 80 bytes in UTF-8, 40 characters
    frame = serialize(Text(token=token))
    with pytest.raises(RemoteProtocolError) as info:
        parse_outbound(frame, max_bytes=len(frame) + 10)
    assert info.value.kind is FrameErrorKind.TOO_LARGE
    assert parse_outbound(frame, max_bytes=len(frame.encode()))
    assert len(_remote("x" * 70_000).frame_excerpt) == 200


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ('{"type":"interrupt"}', FrameErrorKind.UNKNOWN_TYPE),  # the app cannot interrupt
        ('{"type":"clear"}', FrameErrorKind.UNKNOWN_TYPE),
        ('{"type":"text"}', FrameErrorKind.MISSING_FIELD),
        ('{"type":"text","token":null}', FrameErrorKind.MISSING_FIELD),
        ('{"type":"text","token":5}', FrameErrorKind.WRONG_TYPE),
        ('{"type":"text","token":"a","last":1}', FrameErrorKind.WRONG_TYPE),
        ('{"type":"play"}', FrameErrorKind.MISSING_FIELD),
        ('{"type":"play","source":"not a url"}', FrameErrorKind.BAD_VALUE),
        ('{"type":"play","source":"https://x/a.mp3","loop":-1}', FrameErrorKind.BAD_VALUE),
        ('{"type":"play","source":"https://x/a.mp3","loop":1.5}', FrameErrorKind.WRONG_TYPE),
        ('{"type":"sendDigits"}', FrameErrorKind.MISSING_FIELD),
        ('{"type":"sendDigits","digits":""}', FrameErrorKind.BAD_VALUE),
        ('{"type":"sendDigits","digits":"12a"}', FrameErrorKind.BAD_VALUE),
        ('{"type":"language"}', FrameErrorKind.MISSING_FIELD),
        ('{"type":"language","ttsLanguage":""}', FrameErrorKind.MISSING_FIELD),
        ('{"type":"end","handoffData":{"a":1}}', FrameErrorKind.WRONG_TYPE),
    ],
)
def test_bad_outbound_frames_are_rejected_like_twilio(frame: str, kind: FrameErrorKind) -> None:
    assert _remote(frame, outbound=True).kind is kind


@pytest.mark.parametrize(
    ("msg", "kind"),
    [
        (SendDigits(digits="12x"), FrameErrorKind.BAD_VALUE),
        (SendDigits(digits=""), FrameErrorKind.BAD_VALUE),
        (Language(), FrameErrorKind.MISSING_FIELD),
        (Play(source="ftp://x/a.mp3"), FrameErrorKind.BAD_VALUE),
        (Text(token=None), FrameErrorKind.MISSING_FIELD),  # type: ignore[arg-type]
    ],
)
def test_serializing_an_invalid_outbound_message_is_a_local_error(
    msg: OutboundMessage, kind: FrameErrorKind
) -> None:
    with pytest.raises(LocalProtocolError) as info:
        serialize(msg)
    assert info.value.kind is kind


# --------------------------------------------------------------------------- RelayConnection


def test_relay_connection_requires_setup_first_and_once() -> None:
    conn = RelayConnection()
    with pytest.raises(RemoteProtocolError) as before:
        conn.receive('{"type":"prompt","voicePrompt":"hi","lang":"en-US","last":true}')
    assert before.value.kind is FrameErrorKind.BEFORE_SETUP
    assert conn.setup is None

    setup = conn.receive(SETUP_FRAME)
    assert conn.setup == setup
    assert conn.receive('{"type":"dtmf","digit":"1"}') == Dtmf("1")

    with pytest.raises(RemoteProtocolError) as dup:
        conn.receive(SETUP_FRAME)
    assert dup.value.kind is FrameErrorKind.DUPLICATE_SETUP
    assert conn.setup == setup  # the first one stays

    # A bad frame does not break the session.
    with pytest.raises(RemoteProtocolError):
        conn.receive("garbage")
    assert conn.receive('{"type":"dtmf","digit":"2"}') == Dtmf("2")
    assert (conn.frames_in, conn.errors_in, conn.frames_accepted) == (6, 3, 3)


def test_relay_connection_send_returns_frames_and_refuses_bad_ones() -> None:
    conn = RelayConnection()
    conn.receive(SETUP_FRAME)
    assert json.loads(conn.send(Text(token="Hi", last=True))) == {
        "type": "text",
        "token": "Hi",
        "last": True,
    }
    with pytest.raises(LocalProtocolError):
        conn.send(SendDigits(digits="abc"))
    with pytest.raises(LocalProtocolError) as info:
        conn.send(Prompt("hi", "en-US", True))  # type: ignore[arg-type]
    assert info.value.kind is FrameErrorKind.UNKNOWN_TYPE
    assert conn.frames_out == 1


# --------------------------------------------------------------------------- TwilioSide


def test_twilio_side_answers_invalid_frames_with_64107_and_keeps_going() -> None:
    side = TwilioSide()
    verdict = side.receive("this is not json")
    assert verdict.message is None
    assert verdict.error is not None and verdict.error.kind is FrameErrorKind.NOT_JSON
    assert verdict.reply is not None
    assert parse_inbound(verdict.reply) == Error(
        "Invalid message received, code: 64107, this is not json"
    )
    assert verdict.close is None
    ok = side.receive('{"type":"text","token":"Hi","last":true}')
    assert ok.message == Text(token="Hi", last=True)
    assert (ok.error, ok.reply, ok.close) == (None, None, None)
    assert (side.invalid_in, side.consecutive_invalid) == (1, 0)


def test_twilio_side_closes_1007_after_ten_invalid_in_a_row() -> None:
    side = TwilioSide()
    for _ in range(MAX_CONSECUTIVE_INVALID - 1):
        assert side.receive('{"type":"interrupt"}').close is None
    side.receive('{"type":"text","token":""}')  # a valid one resets the run
    verdicts = [side.receive("{}") for _ in range(MAX_CONSECUTIVE_INVALID)]
    assert [v.close for v in verdicts[:-1]] == [None] * (MAX_CONSECUTIVE_INVALID - 1)
    assert verdicts[-1].close == (CLOSE_MALFORMED, REASON_MALFORMED)
    assert side.invalid_in == 2 * MAX_CONSECUTIVE_INVALID - 1


def test_twilio_side_sends_setup_first_and_once() -> None:
    side = TwilioSide()
    with pytest.raises(LocalProtocolError) as before:
        side.send(Prompt("hi", "en-US", True))
    assert before.value.kind is FrameErrorKind.BEFORE_SETUP
    frame = side.send(Setup(session_id="VX1", call_sid="CA1"))
    assert parse_inbound(frame) == Setup(session_id="VX1", call_sid="CA1")
    with pytest.raises(LocalProtocolError) as dup:
        side.send(Setup(session_id="VX2", call_sid="CA1"))
    assert dup.value.kind is FrameErrorKind.DUPLICATE_SETUP
    with pytest.raises(LocalProtocolError):
        side.send(Text(token="x"))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- properties

_text = st.text(max_size=40)
# A SID is never empty and has no spaces (the codec refuses such a setup).
_sid = st.from_regex(r"[A-Za-z0-9]{1,40}", fullmatch=True)
_opt_bool = st.none() | st.booleans()

inbound_messages: st.SearchStrategy[InboundMessage] = st.one_of(
    st.builds(
        Setup,
        session_id=_sid,
        call_sid=_sid,
        account_sid=_text,
        from_=_text,
        to=_text,
        call_status=st.sampled_from(["RINGING", "IN_PROGRESS"]),
        custom_parameters=st.dictionaries(_text, _text, max_size=4),
    ),
    st.builds(Prompt, voice_prompt=_text, lang=_text, last=st.booleans()),
    st.builds(Dtmf, digit=st.sampled_from(list("0123456789*#"))),
    st.builds(
        Interrupt,
        utterance_until_interrupt=_text,
        duration_until_interrupt_ms=st.floats(0, 1e7, allow_nan=False)
        | st.integers(0, 10**7).map(float),
    ),
    st.builds(Error, description=_text),
    st.builds(Info, name=_text, value=_text),
)

outbound_messages: st.SearchStrategy[OutboundMessage] = st.one_of(
    st.builds(
        Text,
        token=_text,
        last=st.booleans(),
        lang=st.none() | st.sampled_from(["en-US", "sv-SE", "multi"]),
        interruptible=_opt_bool,
        preemptible=_opt_bool,
    ),
    st.builds(
        Play,
        source=st.sampled_from(["https://example.com/a.mp3", "http://h/x.wav?y=1"]),
        loop=st.none() | st.integers(0, 1000),
        preemptible=_opt_bool,
        interruptible=_opt_bool,
    ),
    st.builds(SendDigits, digits=st.from_regex(r"[0-9w#*]{1,20}", fullmatch=True)),
    st.builds(
        Language,
        tts_language=st.sampled_from(["en-US", "sv-SE"]),
        transcription_language=st.none() | st.sampled_from(["en-US", "de-DE"]),
    ),
    st.builds(End, handoff_data=st.none() | _text),
)


@given(inbound_messages)
def test_property_inbound_serialize_parse_round_trip(msg: InboundMessage) -> None:
    assert parse_inbound(serialize(msg)) == msg


@given(outbound_messages)
def test_property_outbound_serialize_parse_round_trip(msg: OutboundMessage) -> None:
    assert parse_outbound(serialize(msg)) == msg


@given(inbound_messages | outbound_messages)
def test_property_serialize_is_byte_compatible_with_compact_json(
    msg: InboundMessage | OutboundMessage,
) -> None:
    # serialize uses orjson on the hot path: the wire text must stay exactly
    # what json.dumps wrote (compact, unescaped non-ASCII, same key order).
    wire = to_wire(msg)
    assert serialize(msg) == json.dumps(wire, separators=(",", ":"), ensure_ascii=False)
    assert wire_type(msg) == wire["type"]


def test_serialize_keeps_controls_and_separators_like_json() -> None:
    for token in ['\x00\x1f\x7f\n\t"\\/', "\u2028\u2029\ufeff\U0001f600 é"]:
        msg = Text(token=token, last=False)
        expected = json.dumps(to_wire(msg), separators=(",", ":"), ensure_ascii=False)
        assert serialize(msg) == expected


def test_a_lone_surrogate_is_never_written() -> None:
    # No UTF-8 socket can carry it: the frame would fail at the write.
    with pytest.raises(LocalProtocolError) as info:
        serialize(Text(token="\ud800 lone", last=False))
    assert info.value.kind is FrameErrorKind.BAD_VALUE


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
_types = st.sampled_from(
    [
        *("setup", "prompt", "dtmf", "interrupt", "error", "info"),
        *("text", "play", "sendDigits", "language", "end", "x"),
    ]
)
_keys = st.sampled_from(
    [
        *("sessionId", "callSid", "voicePrompt", "lang", "last", "digit", "token", "source"),
        *("loop", "digits", "ttsLanguage", "durationUntilInterruptMs", "customParameters"),
        *("name", "value", "description", "utteranceUntilInterrupt", "handoffData"),
    ]
)


@given(st.text(max_size=200) | st.binary(max_size=50))
def test_property_arbitrary_text_only_ever_raises_remote_errors(frame: str | bytes) -> None:
    for parse, types in ((parse_inbound, INBOUND_TYPES), (parse_outbound, OUTBOUND_TYPES)):
        try:
            msg = parse(frame)
        except RemoteProtocolError as exc:
            assert isinstance(exc.kind, FrameErrorKind)
        else:
            assert isinstance(msg, types)


@given(_types, st.dictionaries(_keys, _json_values, max_size=6))
def test_property_arbitrary_objects_parse_or_raise_remote_errors(
    type_: str, fields: dict[str, Any]
) -> None:
    frame = json.dumps({"type": type_, **fields})
    for parse in (parse_inbound, parse_outbound):
        try:
            msg = parse(frame)
        except RemoteProtocolError as exc:
            assert isinstance(exc.kind, FrameErrorKind)
        else:
            # Whatever parses serializes to a frame that parses to the same message.
            assert parse(serialize(msg)) == msg


def test_protocol_errors_form_the_documented_tree() -> None:
    assert issubclass(RemoteProtocolError, ProtocolError)
    assert issubclass(LocalProtocolError, ProtocolError)
    assert not issubclass(RemoteProtocolError, LocalProtocolError)
    err = RemoteProtocolError(FrameErrorKind.NOT_JSON, "bad", "{")
    assert (err.kind, err.frame_excerpt) == (FrameErrorKind.NOT_JSON, "{")
    assert "not_json" in str(err)
