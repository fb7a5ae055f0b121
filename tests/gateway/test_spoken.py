"""Text on its way to TTS (gateway.spoken): cleaning and splitting, pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.spoken import clean, clean_part, split_text, string_bytes


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("plain words, kept.", "plain words, kept."),
        ("line one\nline two\ttab", "line one\nline two\ttab"),
        ("\x1b[31mred\x1b[0m alert", "red alert"),
        ("title\x1b]0;pwned\x07 here", "title here"),
        ("bell\x07 null\x00 del\x7f c1\x85 ok", "bell null del c1 ok"),
        ("pay \u202eevil\u202c now", "pay evil now"),
        ("\u2066isolate\u2069 \u061cmark", "isolate mark"),
        ("half \ud83d pair", "half  pair"),
        ("caf\u00e9 \U0001f600 \u4f60\u597d", "caf\u00e9 \U0001f600 \u4f60\u597d"),
    ],
)
def test_clean(raw: str, spoken: str) -> None:
    assert clean(raw) == spoken


def test_a_short_token_is_one_piece() -> None:
    assert split_text("Hello there.", 100) == ["Hello there."]
    assert split_text("", 100) == [""]


def test_long_text_splits_at_sentence_ends_first() -> None:
    text = "One two three. Four five six. Seven eight nine ten eleven."
    pieces = split_text(text, 32)
    assert pieces == ["One two three. Four five six. ", "Seven eight nine ten eleven."]


def test_without_a_sentence_end_it_splits_at_a_space() -> None:
    pieces = split_text("alpha beta gamma delta epsilon", 12)
    assert pieces == ["alpha beta ", "gamma delta ", "epsilon"]


def test_never_inside_a_tag() -> None:
    text = 'Say <break time="500ms"/> then <emphasis level="strong">this</emphasis> now.'
    pieces = split_text(text, 30)
    assert "".join(pieces) == text
    for piece in pieces:
        assert piece.count("<") == piece.count(">"), piece


def test_a_word_longer_than_the_budget_is_cut_between_characters() -> None:
    pieces = split_text("a " + "x" * 25 + " b", 10)
    assert "".join(pieces) == "a " + "x" * 25 + " b"
    assert all(string_bytes(p) <= 10 for p in pieces)


def test_escapes_count_against_the_budget() -> None:
    text = '"quoted" ' * 20  # every quote is two bytes in the frame
    pieces = split_text(text, 40)
    assert all(string_bytes(p) <= 40 for p in pieces)
    assert "".join(pieces) == text


def test_a_budget_too_small_for_any_character_is_refused() -> None:
    with pytest.raises(ValueError):
        split_text("abc", 5)


@given(st.text(max_size=400).map(clean), st.integers(6, 120))
def test_pieces_fit_and_join_back(text: str, budget: int) -> None:
    pieces = split_text(text, budget)
    assert "".join(pieces) == text
    assert all(string_bytes(p) <= budget for p in pieces)
    assert all(pieces) or pieces == [""]


def test_an_escape_cut_between_batches_is_removed_whole() -> None:
    held = ""
    spoken = []
    for batch in ["Red\x1b[3", "1mAlert\x1b", "[0m done\x1b]0;ti", "tle\x07 end\x1b["]:
        text, held = clean_part(held, batch)
        spoken.append(text)
    assert spoken == ["Red", "Alert", " done", " end"]
    assert held == "\x1b["  # dropped when the reply ends


def test_a_long_unterminated_escape_is_not_held() -> None:
    # Not held back for ever: cleaned now (an unterminated OSC runs to the end).
    text, held = clean_part("", "a\x1b]" + "x" * 100)
    assert (text, held) == ("a", "")
