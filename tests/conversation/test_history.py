"""Cutting a reply's history messages to what the caller heard."""

from __future__ import annotations

from typing import Any

from actors.history import request_messages, truncate_reply

USE = {"type": "tool_use", "id": "toolu_1", "name": "transfer", "input": {}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def test_heard_whole_keeps_everything_and_compacts_single_text_blocks() -> None:
    messages = [{"role": "assistant", "content": [text("Hello there.")]}]
    assert truncate_reply(messages, "Hello there.", None) == [
        {"role": "assistant", "content": "Hello there."}
    ]


def test_cut_inside_a_string_reply() -> None:
    messages = [{"role": "assistant", "content": "One two three four."}]
    assert truncate_reply(messages, "One two three four.", "One two") == [
        {"role": "assistant", "content": "One two"}
    ]


def test_nothing_heard_drops_the_reply() -> None:
    messages = [{"role": "assistant", "content": "One two."}]
    assert truncate_reply(messages, "One two.", "") == []


def test_cut_before_a_tool_use_keeps_the_pair_and_drops_later_text() -> None:
    reply = "Let me transfer you. You are now in the queue."
    messages = [
        {"role": "assistant", "content": [text("Let me transfer you. "), USE]},
        {"role": "user", "content": [RESULT]},
        {"role": "assistant", "content": [text("You are now in the queue.")]},
    ]
    assert truncate_reply(messages, reply, "Let me") == [
        {"role": "assistant", "content": [text("Let me"), USE]},
        {"role": "user", "content": [RESULT]},
    ]
    # Heard into the second round.
    assert truncate_reply(messages, reply, "Let me transfer you. You are") == [
        {"role": "assistant", "content": [text("Let me transfer you. "), USE]},
        {"role": "user", "content": [RESULT]},
        {"role": "assistant", "content": "You are"},
    ]


def test_input_is_not_modified() -> None:
    messages = [{"role": "assistant", "content": [text("abc def"), USE]}]
    truncate_reply(messages, "abc def", "abc")
    assert messages == [{"role": "assistant", "content": [text("abc def"), USE]}]


def test_request_messages_merge_same_role_runs_and_drop_empty_ones() -> None:
    history = [
        {"role": "assistant", "content": "Hi."},
        {"role": "assistant", "content": "Are you there?"},
        {"role": "user", "content": "yes"},
        {"role": "user", "content": ""},
        {"role": "user", "content": "I am"},
    ]
    assert request_messages(history) == [
        {"role": "assistant", "content": "Hi. Are you there?"},
        {"role": "user", "content": "yes I am"},
    ]
