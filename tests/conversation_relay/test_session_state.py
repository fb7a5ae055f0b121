"""RelayConnection's session state: setup first, nothing sent after ``end``.

Pure and synchronous: the protocol object alone, no socket.
"""

from __future__ import annotations

import json

import pytest

from relay import (
    End,
    FrameErrorKind,
    LocalProtocolError,
    RelayConnection,
    RemoteProtocolError,
    SessionState,
    Text,
)

SETUP = json.dumps({"type": "setup", "sessionId": "VX1", "callSid": "CA1"})
PROMPT = json.dumps({"type": "prompt", "voicePrompt": "hello", "lang": "en-US", "last": True})


def test_a_session_awaits_setup_then_opens() -> None:
    conn = RelayConnection()
    assert conn.state is SessionState.AWAITING_SETUP
    with pytest.raises(RemoteProtocolError):
        conn.receive(PROMPT)
    assert conn.state is SessionState.AWAITING_SETUP
    conn.receive(SETUP)
    assert conn.state is SessionState.OPEN


def test_end_moves_to_ending_and_later_sends_are_refused() -> None:
    conn = RelayConnection()
    conn.receive(SETUP)
    conn.send(Text(token="Goodbye.", last=True))
    frame = conn.send(End(handoff_data='{"reason": "end_call"}'))
    assert json.loads(frame) == {"type": "end", "handoffData": '{"reason": "end_call"}'}
    assert conn.state is SessionState.ENDING
    for late in (Text(token="one more thing", last=True), End()):
        with pytest.raises(LocalProtocolError) as refused:
            conn.send(late)
        assert refused.value.kind is FrameErrorKind.AFTER_END
    assert conn.frames_out == 2  # the refused ones were never counted as sent


def test_twilio_frames_still_parse_while_ending() -> None:
    # Twilio closes the socket shortly after ``end``; a prompt already on its
    # way still arrives and is still the caller's.
    conn = RelayConnection()
    conn.receive(SETUP)
    conn.send(End())
    assert conn.receive(PROMPT).voice_prompt == "hello"  # type: ignore[union-attr]
    assert conn.state is SessionState.ENDING


def test_a_closed_session_neither_sends_nor_receives() -> None:
    conn = RelayConnection()
    conn.receive(SETUP)
    conn.closed()
    assert conn.state is SessionState.CLOSED
    with pytest.raises(LocalProtocolError) as send:
        conn.send(Text(token="hi"))
    assert send.value.kind is FrameErrorKind.AFTER_END
    with pytest.raises(LocalProtocolError):
        conn.receive(PROMPT)


def test_an_invalid_end_does_not_end_the_session() -> None:
    # Validation comes before the state change: a refused message changes nothing.
    conn = RelayConnection()
    conn.receive(SETUP)
    with pytest.raises(LocalProtocolError):
        conn.send(End(handoff_data=7))  # type: ignore[arg-type]
    assert conn.state is SessionState.OPEN
