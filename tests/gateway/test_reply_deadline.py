"""The reply deadline's rule (gateway.reply_deadline), on its own: no I/O, no clock."""

from __future__ import annotations

from gateway.reply_deadline import ReplyDeadline


def test_a_final_prompt_arms_the_deadline() -> None:
    rule = ReplyDeadline(deadline_s=4.0)
    assert not rule.due(100.0)
    rule.prompted(seq=3, now=100.0)
    assert not rule.due(103.9)
    assert rule.due(104.0)


def test_any_text_to_the_caller_disarms_it() -> None:
    rule = ReplyDeadline(deadline_s=4.0)
    rule.prompted(seq=3, now=100.0)
    rule.spoke()
    assert not rule.due(1000.0)


def test_the_apology_is_said_once_per_prompt() -> None:
    rule = ReplyDeadline(deadline_s=4.0)
    rule.prompted(seq=3, now=100.0)
    assert rule.apologised() == 3
    assert not rule.due(200.0)
    rule.prompted(seq=5, now=300.0)  # the call goes on: the next prompt arms it again
    assert rule.due(304.0)
    assert rule.apologised() == 5


def test_a_newer_prompt_moves_the_deadline() -> None:
    rule = ReplyDeadline(deadline_s=4.0)
    rule.prompted(seq=3, now=100.0)
    rule.prompted(seq=7, now=103.0)
    assert not rule.due(104.5)
    assert rule.due(107.0)
    assert rule.apologised() == 7


def test_zero_turns_it_off() -> None:
    rule = ReplyDeadline(deadline_s=0)
    rule.prompted(seq=3, now=100.0)
    assert not rule.due(1e9)
