from __future__ import annotations

from collections.abc import Sequence
from typing import overload

from hypothesis import given
from hypothesis import strategies as st

from actors.heard import Heard, locate_heard

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


class _Flood(Sequence[str]):
    """18 MB of ``tokensPlayed`` chunks (the flood that froze a worker), ending
    in the real ones; records which chunks were read."""

    def __init__(self, real: list[str], junk: int = 18_000) -> None:
        self.real = real
        self.junk = junk
        self.read: set[int] = set()

    def __len__(self) -> int:
        return self.junk + len(self.real)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        if isinstance(i, slice):
            raise TypeError("the flood is read one chunk at a time")
        i = i + len(self) if i < 0 else i
        if not 0 <= i < len(self):
            raise IndexError(i)
        self.read.add(i)
        return "x" * 1000 if i < self.junk else self.real[i - self.junk]


def test_a_flood_of_played_chunks_costs_only_the_newest_and_still_finds_the_cut() -> None:
    flood = _Flood(["Sentence 1 of the reply.", " Sentence 2 of"])
    heard = locate_heard(REPLY, played=flood)
    assert heard == locate_heard(REPLY, played=flood.real)
    assert heard.text == "Sentence 1 of the reply. Sentence 2 of"
    # Bounded work: the chunks within twice the reply's length, none older.
    assert flood.read == {flood.junk - 1, flood.junk, flood.junk + 1}


def test_a_fragment_far_longer_than_the_reply_falls_back_to_the_duration() -> None:
    # Nothing longer than the reply can have been heard of it: only the end
    # of such a fragment is looked at, and it matches nothing here.
    fragment = "blah " * 200_000 + "Sentence 2 of"
    heard = locate_heard(REPLY, fragment=fragment, duration_ms=1000, chars_per_second=30)
    assert heard == Heard("Sentence 1 of the reply.", "duration")
