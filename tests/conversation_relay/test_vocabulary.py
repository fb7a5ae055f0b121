"""The keypad vocabulary and the handoff data of ``end``."""

from __future__ import annotations

import json

import pytest

from relay import End, Handoff, HandoffReason, dtmf


def test_phone_keys_and_entries() -> None:
    assert frozenset("0123456789*#") == dtmf.PHONE_KEYS
    assert dtmf.END_OF_ENTRY == "#"
    assert frozenset("0123456789*") == dtmf.ENTRY_KEYS
    assert all(dtmf.is_key(k) for k in "0123456789*#")
    for bad in ("", "12", "w", "a", "٣"):  # the last is an Arabic-Indic three
        assert not dtmf.is_key(bad)
    assert dtmf.is_keys("12#") and dtmf.is_keys("*")
    assert not dtmf.is_keys("") and not dtmf.is_keys("1w2")


def test_send_digits_take_the_pause() -> None:
    assert dtmf.is_send_digits("ww1234#")
    for bad in ("", "12a", "1 2", "+1"):
        assert not dtmf.is_send_digits(bad)


@pytest.mark.parametrize(
    ("handoff", "data"),
    [
        (Handoff.end_call(), {"reason": "end_call"}),
        (Handoff.silence(), {"reason": "silence"}),
        (Handoff.transfer(number="+15550100"), {"reason": "transfer", "number": "+15550100"}),
        (Handoff.transfer(queue="support"), {"reason": "transfer", "queue": "support"}),
    ],
)
def test_handoff_data_round_trips(handoff: Handoff, data: dict[str, str]) -> None:
    text = handoff.to_data()
    # The exact text recorded streams and action callbacks have always carried.
    assert text == json.dumps(data)
    assert handoff.end() == End(handoff_data=text)
    assert Handoff.parse(text) == handoff


def test_a_transfer_needs_exactly_one_target() -> None:
    with pytest.raises(ValueError):
        Handoff.transfer()
    with pytest.raises(ValueError):
        Handoff.transfer(number="+15550100", queue="support")


@pytest.mark.parametrize("data", [None, "", "not json", "[1, 2]", '"transfer"'])
def test_handoff_data_that_is_not_an_object_is_no_handoff(data: str | None) -> None:
    assert Handoff.parse(data) is None


def test_parsed_handoffs_keep_only_string_targets() -> None:
    # Handoff data comes back from a model's tool call through Twilio.
    parsed = Handoff.parse('{"reason": "transfer", "number": 15550100, "queue": ["x"]}')
    assert parsed == Handoff(HandoffReason.TRANSFER)
    assert Handoff.parse('{"number": "+15550100"}') == Handoff("", number="+15550100")
