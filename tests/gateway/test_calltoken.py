"""Per-call session tokens (gateway.calltoken): pure, synchronous."""

from __future__ import annotations

import pytest

from gateway.calltoken import TOKEN_TTL_S, TokenRejected, check, issue

SECRET = b"secret"
NOW = 1_800_000_000.0


def _reason(token: str | None, call_sid: str = "CA1", *, now: float = NOW) -> str:
    with pytest.raises(TokenRejected) as info:
        check(SECRET, token, call_sid, now=now)
    return info.value.reason


def test_a_token_admits_its_call_until_it_expires() -> None:
    token = issue(SECRET, "CA1", now=NOW)
    assert check(SECRET, token, "CA1", now=NOW + TOKEN_TTL_S).supersedes == ""
    assert _reason(token, now=NOW + TOKEN_TTL_S + 1) == "expired"


def test_a_token_names_the_session_it_supersedes() -> None:
    token = issue(SECRET, "CA1", now=NOW, supersedes="VX9")
    assert check(SECRET, token, "CA1", now=NOW).supersedes == "VX9"
    # Editing the superseded session breaks the MAC.
    assert _reason(token.replace("VX9", "VX8")) == "wrong_call"


def test_another_call_another_secret_or_garbage_is_refused() -> None:
    token = issue(SECRET, "CA1", now=NOW)
    assert _reason(token, "CA2") == "wrong_call"
    assert _reason(issue(b"other", "CA1", now=NOW)) == "wrong_call"
    assert _reason(None) == "missing"
    assert _reason("") == "missing"
    for garbage in ["x", "abc.def", "1.", "." * 5, "9" * 40 + "..mac"]:
        assert _reason(garbage) == "malformed"
    # A later expiry with the old MAC is not accepted.
    expiry, rest = token.split(".", 1)
    assert _reason(f"{int(expiry) + 999}.{rest}") == "wrong_call"
