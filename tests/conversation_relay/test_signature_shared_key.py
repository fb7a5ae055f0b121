"""Twilio's other signature schemes: SharedKey HMAC-SHA256, and repeated form parameters."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from relay.signature import HMAC_SHA1, HMAC_SHA256, algorithm_of, sign, verify

URL = "https://agent.example.com/twiml"
SECRET = "shared-key-secret"


def _reference(secret: str, data: str, digest: str) -> str:
    """The documented construction, written out independently of twilio-python."""
    mac = hmac.new(secret.encode(), data.encode(), getattr(hashlib, digest))
    return base64.b64encode(mac.digest()).decode()


def test_a_shared_key_signs_the_same_string_with_hmac_sha256() -> None:
    params = {"CallSid": "CA1", "From": "+1555"}
    data = URL + "CallSidCA1" + "From+1555"
    good = _reference(SECRET, data, "sha256")
    assert sign(SECRET, URL, params, algorithm=HMAC_SHA256) == good
    assert verify(SECRET, URL, params, good, algorithm=HMAC_SHA256)
    # The same secret under the other algorithm, or the wrong secret: no.
    assert not verify(SECRET, URL, params, good)
    assert not verify("auth-token", URL, params, good, algorithm=HMAC_SHA256)
    assert not verify(SECRET, URL, params, good, algorithm="HMAC_MD5")


@pytest.mark.parametrize(
    ("header", "algorithm"),
    [
        (None, HMAC_SHA1),
        ("", HMAC_SHA1),
        ("key=webhooks_sharedkey_123,algorithm=HMAC_SHA256", HMAC_SHA256),
        ("algorithm=hmac_sha256, key=abc", HMAC_SHA256),
        ("key=abc", HMAC_SHA1),
    ],
)
def test_the_settings_header_names_the_algorithm(header: str | None, algorithm: str) -> None:
    assert algorithm_of(header) == algorithm


def test_a_repeated_parameter_is_signed_with_all_its_values() -> None:
    # Twilio: names sorted; for a repeated name each distinct value, sorted.
    pairs = [("To", "+1666"), ("Digits", "2"), ("Digits", "1"), ("Digits", "2")]
    data = URL + "Digits1" + "Digits2" + "To+1666"
    good = _reference("token", data, "sha1")
    assert sign("token", URL, pairs) == good
    assert verify("token", URL, pairs, good)
    assert verify("token", URL, {"To": "+1666", "Digits": ["2", "1"]}, good)
    # Keeping only one of the values (as a plain dict would) breaks it.
    assert not verify("token", URL, {"To": "+1666", "Digits": "2"}, good)
