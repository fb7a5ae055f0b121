"""Thinking blocks survive the history's cuts and merges unchanged."""

from __future__ import annotations

from actors.history import request_messages, truncate_reply

THINKING = {"type": "thinking", "thinking": "They want hours.", "signature": "sig_1"}
REDACTED = {"type": "redacted_thinking", "data": "SEALED=="}
USE = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"day": "Sunday"}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "10-4"}


def test_a_barge_in_cut_keeps_the_thinking_and_tool_pairs() -> None:
    reply = [
        {
            "role": "assistant",
            "content": [THINKING, REDACTED, {"type": "text", "text": "Let me check."}, USE],
        },
        {"role": "user", "content": [RESULT]},
        {"role": "assistant", "content": [{"type": "text", "text": "We open at ten on Sunday."}]},
    ]
    text = "Let me check. We open at ten on Sunday."
    kept = truncate_reply(reply, text, "Let me check. We open")
    assert kept[0]["content"][:2] == [THINKING, REDACTED]
    assert kept[0]["content"][3] == USE
    assert kept[1] == {"role": "user", "content": [RESULT]}
    assert kept[2]["content"] == "We open"
    # Nothing heard of the text: the thinking and the tool pair still stay.
    silent = truncate_reply(reply, text, "")
    assert silent[0]["content"] == [THINKING, REDACTED, USE]


def test_a_request_sends_the_blocks_back_as_they_were() -> None:
    history = [
        {"role": "user", "content": "Sunday hours?"},
        {"role": "assistant", "content": [THINKING, REDACTED, USE]},
        {"role": "user", "content": [RESULT]},
    ]
    assert request_messages(history) == history
