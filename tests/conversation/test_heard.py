from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from actors.heard import locate_heard

REPLY = "Sentence 1 of the reply. Sentence 2 of the reply. Sentence 3 of the reply."


def test_fragment_of_a_later_chunk_is_located_inside_the_reply() -> None:
    # Observed on real calls: the fragment covers only the chunk that was playing.
    heard = locate_heard(REPLY, fragment="Sentence 2 of", duration_ms=684)
    assert heard.text == "Sentence 1 of the reply. Sentence 2 of"
    assert heard.method == "fragment"


def test_fragment_matching_tolerates_case_punctuation_whitespace_and_ssml() -> None:
    reply = 'Okay! <break time="300ms"/> Your order,   number 42, ships   tomorrow.'
    heard = locate_heard(reply, fragment="okay your ORDER number 42")
    assert heard.text == 'Okay! <break time="300ms"/> Your order,   number 42'


def test_tokens_played_are_the_exact_record() -> None:
    played = ["Sentence 1 of the reply.", " Sentence 2 of"]
    heard = locate_heard(REPLY, played=played)
    assert heard.text == "Sentence 1 of the reply. Sentence 2 of"
    assert heard.method == "tokens_played"


def test_fragment_searched_after_played_chunks() -> None:
    reply = "Yes. I can help. Yes. I can book it."
    heard = locate_heard(reply, played=["Yes. I can help."], fragment="Yes. I can")
    assert heard.text == "Yes. I can help. Yes. I can"


MENU = "Press one for sales. Press one again to confirm. Press one to hear this again."


def test_a_repeated_fragment_is_taken_nearest_the_playback_position() -> None:
    # 3.4 s at 14 chars/s is ~48 characters in: the third "Press one",
    # not the first (which would keep far less than the caller heard).
    heard = locate_heard(MENU, fragment="Press one", duration_ms=3400)
    assert heard.text == "Press one for sales. Press one again to confirm. Press one"
    assert heard.method == "fragment"
    # Early in playback the early occurrence is the nearest.
    assert locate_heard(MENU, fragment="Press one", duration_ms=300).text == "Press one"


def test_the_playback_position_counts_the_chunks_already_played() -> None:
    # The duration is the playing chunk's: it starts after the played ones.
    heard = locate_heard(
        MENU, played=["Press one for sales."], fragment="Press one", duration_ms=2100
    )
    assert heard.text == "Press one for sales. Press one again to confirm. Press one"


def test_without_a_duration_a_repeated_fragment_is_taken_at_its_first_match() -> None:
    assert locate_heard(MENU, fragment="Press one").text == "Press one"


def test_match_never_ends_mid_word() -> None:
    heard = locate_heard("Absolutely wonderful news.", fragment="Absolutely wond")
    assert heard.text == "Absolutely wonderful"


def test_unknown_fragment_falls_back_to_duration_at_a_word_boundary() -> None:
    heard = locate_heard(REPLY, fragment="something else entirely", duration_ms=1000)
    assert heard.method == "duration"
    assert REPLY.startswith(heard.text)
    assert len(heard.text) <= 14
    assert heard.text == "Sentence 1 of"


def test_nothing_known_means_nothing_heard() -> None:
    assert locate_heard(REPLY).text == ""
    assert locate_heard("", fragment="x").text == ""


@given(st.text(alphabet="abc .,<>/", max_size=60), st.integers(0, 60), st.integers(0, 60))
def test_heard_text_is_always_a_prefix(reply: str, a: int, b: int) -> None:
    fragment = reply[min(a, b) : max(a, b)]
    heard = locate_heard(reply, fragment=fragment, duration_ms=float(a * 100))
    assert reply.startswith(heard.text)
