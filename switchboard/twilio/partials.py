"""When Twilio sends partial prompts while the caller speaks, and with what text.

With ``partialPrompts`` on, Twilio sends an interim ``prompt`` (``last:
false``) about every 250 ms while the caller speaks, each with the whole
utterance recognised so far; the final prompt (``last: true``) follows
about 500 ms after the last interim one, once the end of speech is
detected. In recorded calls the final text repeated the last interim text
word for word most of the time; otherwise the recogniser revised the last
word (docs/PROTOCOL-REFERENCE.md). ``plan_partials`` lays one utterance
out that way, pure, so the driver only sleeps and sends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PARTIAL_INTERVAL_MS = 250.0
FINAL_AFTER_MS = 500.0


@dataclass(frozen=True, slots=True)
class PartialPlan:
    """One utterance: interim prompts ``(ms after speech starts, text)``, then the final."""

    partials: tuple[tuple[float, str], ...]
    final_at_ms: float
    final: str


def misheard(word: str) -> str:
    """``word`` as the recogniser first heard it: another word, punctuation kept."""
    core = word.rstrip(".,!?;:")
    tail = word[len(core) :]
    if not core:
        return word + "s"
    changed = core[:-1] if core.endswith("s") and len(core) > 1 else core + "s"
    return changed + tail


def plan_partials(
    text: str,
    speech_ms: float,
    *,
    changed: bool = False,
    interval_ms: float = PARTIAL_INTERVAL_MS,
    final_after_ms: float = FINAL_AFTER_MS,
) -> PartialPlan:
    """Interim prompts every ``interval_ms`` while ``text`` is spoken over ``speech_ms``.

    Each carries the words spoken by then (at least one); a tick with no
    new word sends nothing (the recogniser has nothing new to report); the last one,
    when speech ends, carries every word, its last word ``misheard`` when
    ``changed``. The final prompt, ``text`` itself, follows ``final_after_ms``
    later. An utterance of one word still gets one interim prompt.
    """
    words = text.split()
    if not words:
        return PartialPlan((), speech_ms + final_after_ms, text)
    speech_ms = max(speech_ms, 0.0)
    partials: list[tuple[float, str]] = []
    t = interval_ms
    while t < speech_ms:
        n = max(1, min(len(words), math.floor(len(words) * t / speech_ms)))
        said = " ".join(words[:n])
        if not partials or partials[-1][1] != said:
            partials.append((t, said))
        t += interval_ms
    last = [*words[:-1], misheard(words[-1])] if changed else words
    partials.append((speech_ms, " ".join(last)))
    return PartialPlan(tuple(partials), speech_ms + final_after_ms, text)
