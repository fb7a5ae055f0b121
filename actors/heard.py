"""What the caller actually heard of a reply that was cut off.

Twilio tells us in two ways, and neither is a plain prefix of our text:

- ``info tokensPlayed`` (when subscribed): the exact text of each synthesized
  chunk as it finished playing, including the partial chunk at a barge-in.
  The best record: the heard text is their concatenation.
- ``interrupt.utteranceUntilInterrupt``: only the chunk that was playing when
  the caller barged in (observed on real calls: ``"Sentence 2 of"`` after
  sentence 1 had played fully), and ``durationUntilInterruptMs`` for it.

Either way the text may differ from what we sent in whitespace, case,
punctuation and SSML tags, so matching is done on a normalised form that keeps
a map back to positions in the original reply. ``locate_heard`` returns the
longest prefix of the reply the caller heard, cut at the end of the matched
text (a fragment that occurs more than once is taken at the occurrence
nearest the playback position); when nothing matches it falls back to an
estimate from the playback duration, cut at a word boundary, and says which
method it used.

Bounded work: nothing the caller heard can be longer than the reply, so only
the newest ``tokensPlayed`` chunks and the end of the fragment, up to about
twice the reply's length, are matched. The cost is linear in the reply's
length whatever a caller (or a flood of ``info`` frames) sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from relay.speech import CHARS_PER_SECOND

_TAG = re.compile(r"<[^>]*>")

# Extra characters of played text looked at beyond twice the reply's length
# (SSML tags and whitespace Twilio adds or drops).
_SLACK = 256
# Occurrences of a fragment considered; a reply that repeats a phrase more
# often than this is taken at one of the first ones.
_MAX_MATCHES = 64


@dataclass(frozen=True, slots=True)
class Heard:
    """The part of a reply the caller heard, and how we know."""

    text: str
    method: str  # "complete" | "tokens_played" | "fragment" | "duration" | "none"


def _normalise(text: str) -> tuple[str, list[int]]:
    """Lower-case letters and digits with single spaces; map to original indices.

    SSML tags vanish; every other run of non-alphanumerics becomes one space.
    ``index[i]`` is the position in ``text`` just after normalised char ``i``.
    """
    out: list[str] = []
    index: list[int] = []
    pos = 0
    pending_space = False
    while pos < len(text):
        tag = _TAG.match(text, pos)
        if tag:
            pos = tag.end()
            pending_space = True
            continue
        ch = text[pos]
        pos += 1
        if ch.isalnum():
            if pending_space and out:
                out.append(" ")
                index.append(pos - 1)
            pending_space = False
            out.append(ch.lower())
            index.append(pos)
        else:
            pending_space = True
    return "".join(out), index


def _find_ends(reply: str, heard: str, *, start: int = 0) -> list[int]:
    """Positions in ``reply`` just after each match of ``heard`` at or after
    normalised offset ``start``, in order (overlapping matches included)."""
    norm_reply, index = _normalise(reply)
    norm_heard, _ = _normalise(heard)
    ends: list[int] = []
    if not norm_heard:
        return ends
    at = norm_reply.find(norm_heard, start)
    while at >= 0 and len(ends) < _MAX_MATCHES:
        ends.append(index[at + len(norm_heard) - 1])
        at = norm_reply.find(norm_heard, at + 1)
    return ends


def _find_end(reply: str, heard: str, *, start: int = 0) -> int | None:
    """Position in ``reply`` just after the first match of ``heard`` at or after
    normalised offset ``start``; None when it is not there."""
    ends = _find_ends(reply, heard, start=start)
    return ends[0] if ends else None


def _nearest(ends: list[int], position: float | None) -> int | None:
    """The match ending nearest the playback ``position`` (None: the first)."""
    if not ends:
        return None
    if position is None:
        return ends[0]
    return min(ends, key=lambda end: abs(end - position))


def _extend_to_word_end(reply: str, end: int) -> int:
    """A match may end inside a word the TTS split oddly; never cut mid-word."""
    while end < len(reply) and reply[end].isalnum():
        end += 1
    return end


def _cut_at_word(reply: str, chars: int) -> str:
    if chars >= len(reply):
        return reply
    cut = reply.rfind(" ", 0, max(chars, 0) + 1)
    return reply[:cut] if cut > 0 else ""


def _newest(played: Sequence[str], window: int) -> list[str]:
    """The newest chunks of ``played`` totalling at most ``window`` characters
    (the oldest of them cut to fit), without joining the rest."""
    out: list[str] = []
    room = window
    for chunk in reversed(played):
        out.append(chunk[-room:] if len(chunk) > room else chunk)
        room -= len(chunk)
        if room <= 0:
            break
    out.reverse()
    return out


def locate_heard(
    reply: str,
    *,
    played: Sequence[str] = (),
    fragment: str = "",
    duration_ms: float | None = None,
    chars_per_second: float = CHARS_PER_SECOND,
) -> Heard:
    """The prefix of ``reply`` the caller heard before the cut.

    ``played``: the ``tokensPlayed`` texts of this reply, in order (may be
    empty when not subscribed). ``fragment``/``duration_ms``: from the
    ``interrupt`` message (the chunk that was playing).
    """
    if not reply:
        return Heard("", "none")
    window = 2 * len(reply) + _SLACK
    played = _newest(played, window)
    fragment = fragment[-window:]
    played_text = "".join(played)
    played_end = 0
    if played_text.strip():
        end = _find_end(reply, played_text)
        if end is None and played:
            # The chunks may not join cleanly (spaces dropped between them):
            # match the last chunk, which ends where the caller stopped hearing.
            end = _find_end(reply, played[-1])
        if end is not None:
            played_end = _extend_to_word_end(reply, end)
            if not fragment.strip():
                return Heard(reply[:played_end].rstrip(), "tokens_played")
    if fragment.strip():
        # The fragment is from the chunk that was playing: search after what
        # had certainly played. A fragment found more than once ("yes" in a
        # reply that says it twice) is taken where playback had got to: the
        # played chunks plus the interrupt's duration at the speaking rate
        # (Twilio reports the duration of the chunk that was playing).
        # Without a duration, the first match (the conservative one).
        position = None
        if duration_ms is not None and duration_ms > 0:
            position = played_end + duration_ms / 1000 * chars_per_second
        start = len(_normalise(reply[:played_end])[0])
        end = _nearest(_find_ends(reply, fragment, start=start), position)
        if end is None and start:
            end = _nearest(_find_ends(reply, fragment), position)
        if end is not None:
            end = _extend_to_word_end(reply, max(end, played_end))
            return Heard(reply[:end].rstrip(), "fragment")
    if played_end:
        return Heard(reply[:played_end].rstrip(), "tokens_played")
    if duration_ms is not None and duration_ms > 0:
        estimate = int(duration_ms / 1000 * chars_per_second)
        return Heard(_cut_at_word(reply, estimate).rstrip(), "duration")
    return Heard("", "none")
