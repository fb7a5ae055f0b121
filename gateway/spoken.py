"""Text on its way to Twilio's text-to-speech: cleaned, and cut into frames that fit.

Pure: no I/O, no clock.

:func:`clean` removes what a voice must never be handed and a terminal or log
viewer must never interpret: C0/C1 control characters (tab and newline stay),
ANSI escape sequences, Unicode bidirectional overrides, embeddings and
isolates, and lone surrogates (no UTF-8 socket can carry them). Model output
is untrusted text; the gateway cleans every ``text`` token before it is sent.

:func:`split_text` cuts a token whose frame would be too large into pieces
that each fit ``budget`` bytes of JSON string content, preferring the end of a
sentence, then a space, and never cutting inside an SSML tag (``<...>``). The
pieces joined are the token exactly (spaces included). Twilio publishes no
size limit for ConversationRelay messages (docs/PROTOCOL-REFERENCE.md), so the
gateway keeps every text frame far below the 64 KiB the rest of the project
assumes for a frame.
"""

from __future__ import annotations

import re
from typing import Final

import orjson

__all__ = ["clean", "clean_part", "split_text", "string_bytes"]

# ESC followed by a CSI (ESC [ ... final byte), an OSC (ESC ] ... BEL or ESC \),
# or any other two-character escape; then a bare CSI/OSC of the 8-bit forms.
_ANSI: Final = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[@-_]?"
    r"|\x9b[0-?]*[ -/]*[@-~]"
)
# C0 controls except tab and newline, DEL, C1 controls; bidi embeddings and
# overrides (U+202A-U+202E), isolates (U+2066-U+2069), the Arabic letter mark
# (U+061C); lone surrogates.
_UNSPEAKABLE: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
# A unit never split unless it alone is over budget: an SSML tag with the
# spaces after it, a word with the spaces after it, a run of spaces, or a
# stray ``<`` that opens no tag.
_UNITS: Final = re.compile(r"<[^<>]*>\s*|[^\s<]+\s*|\s+|<")
_SENTENCE_END: Final = re.compile(r"[.!?;:\u3002\uff01\uff1f]['\")\]]*\s+$|\n\s*$")


# An escape sequence cut off at the end of a piece of a stream: ESC alone, an
# unfinished CSI or OSC. At most this long (an OSC that never ends is not held).
_OPEN_ESCAPE: Final = re.compile(r"(?:\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*)?|\x9b[0-?]*[ -/]*)\Z")
_MAX_HELD: Final = 64


def clean_part(held: str, text: str) -> tuple[str, str]:
    """Clean one piece of a stream (a reply's token batch).

    ``held`` is what the previous piece held back. Returns the cleaned text
    and what to hold back for the next piece: an escape sequence cut off at
    the end, so its tail (``31m``) is not spoken when the next piece starts
    with it. Whatever is held when the stream ends is dropped.
    """
    text = held + text
    found = _OPEN_ESCAPE.search(text)
    if found is not None and len(text) - found.start() <= _MAX_HELD:
        return clean(text[: found.start()]), text[found.start() :]
    return clean(text), ""


def clean(text: str) -> str:
    """``text`` without control characters, ANSI escapes, bidi controls, lone surrogates."""
    if text.isascii() and text.isprintable():
        return text
    return _UNSPEAKABLE.sub("", _ANSI.sub("", text))


def string_bytes(text: str) -> int:
    """Bytes ``text`` takes inside a JSON string in a frame (escapes counted)."""
    return len(orjson.dumps(text)) - 2


def split_text(text: str, budget: int) -> list[str]:
    """``text`` in pieces of at most ``budget`` JSON string bytes each (see module doc).

    ``text`` must be clean (no lone surrogates). ``budget`` must be at least 6
    bytes (the largest escaped character).
    """
    if budget < 6:
        raise ValueError(f"budget of {budget} bytes cannot hold every character")
    if string_bytes(text) <= budget:
        return [text]
    pieces: list[str] = []
    units: list[str] = []
    size = 0
    sentence_end = 0  # units[:sentence_end] end with a sentence

    def flush(upto: int) -> None:
        nonlocal units, size, sentence_end
        pieces.append("".join(units[:upto]))
        units = units[upto:]
        size = sum(string_bytes(u) for u in units)
        sentence_end = 0

    for unit in (m.group() for m in _UNITS.finditer(text)):
        unit_size = string_bytes(unit)
        if size + unit_size > budget and units:
            flush(sentence_end or len(units))
            if units and size + unit_size > budget:
                flush(len(units))
        if unit_size > budget:
            pieces.extend(_hard_cut(unit, budget))
            continue
        units.append(unit)
        size += unit_size
        if _SENTENCE_END.search(unit):
            sentence_end = len(units)
    if units:
        pieces.append("".join(units))
    return pieces


def _hard_cut(unit: str, budget: int) -> list[str]:
    """A single word or tag longer than ``budget``, cut between characters."""
    out: list[str] = []
    start, size = 0, 0
    for i, char in enumerate(unit):
        char_size = string_bytes(char)
        if size + char_size > budget:
            out.append(unit[start:i])
            start, size = i, 0
        size += char_size
    out.append(unit[start:])
    return out
