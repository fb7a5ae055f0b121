"""The keypad: which keys a caller can press and which digits the app can send.

One place for the phone's vocabulary, used by the protocol (``sendDigits``
validation), the conversation (buffering a caller's entry), the agent
profile (``dtmf.menu`` keys), the tools (``send_digits``) and the simulator
(what a simulated caller may press).

- A caller's key press arrives as one ``dtmf`` message per key, one of
  :data:`PHONE_KEYS` (``0-9``, ``*``, ``#``).
- :data:`END_OF_ENTRY` (``#``) closes a keypad entry; the other keys,
  :data:`ENTRY_KEYS`, are what an entry is made of.
- ``sendDigits`` takes the phone keys plus :data:`PAUSE` (``w``, half a
  second), e.g. ``"ww1234#"``.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "END_OF_ENTRY",
    "ENTRY_KEYS",
    "PAUSE",
    "PHONE_KEYS",
    "SEND_DIGITS_CHARS",
    "is_key",
    "is_keys",
    "is_send_digits",
]

PHONE_KEYS: Final = frozenset("0123456789*#")
END_OF_ENTRY: Final = "#"
ENTRY_KEYS: Final = PHONE_KEYS - {END_OF_ENTRY}
PAUSE: Final = "w"
SEND_DIGITS_CHARS: Final = PHONE_KEYS | {PAUSE}


def is_key(key: str) -> bool:
    """True for exactly one phone key (``"5"``, ``"#"``), as one ``dtmf`` message carries."""
    return len(key) == 1 and key in PHONE_KEYS


def is_keys(keys: str) -> bool:
    """True for a non-empty run of phone keys (``"123#"``), as a caller can type them."""
    return bool(keys) and all(key in PHONE_KEYS for key in keys)


def is_send_digits(digits: str) -> bool:
    """True for a valid ``sendDigits`` value: one or more of ``0-9 * # w``."""
    return bool(digits) and all(char in SEND_DIGITS_CHARS for char in digits)
