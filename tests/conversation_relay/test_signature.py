"""X-Twilio-Signature: the URL Twilio signed, form parameters, ports."""

from __future__ import annotations

import base64
import hashlib
import hmac

from relay.signature import sign, url_variants, verify

TOKEN = "12345"


def _reference(url: str, params: dict[str, str]) -> str:
    """Twilio's algorithm written out, independent of twilio-python."""
    data = url + "".join(k + params[k] for k in sorted(params))
    mac = hmac.new(TOKEN.encode(), data.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def test_sign_matches_the_documented_algorithm() -> None:
    params = {"CallSid": "CA1", "From": "+1555", "To": "+1666", "Empty": ""}
    url = "https://agent.example.com/twiml"
    assert sign(TOKEN, url, params) == _reference(url, params)


def test_right_wrong_and_missing() -> None:
    url = "https://agent.example.com/twiml"
    params = {"CallSid": "CA1"}
    good = _reference(url, params)
    assert verify(TOKEN, url, params, good)
    assert not verify(TOKEN, url, {"CallSid": "CA2"}, good)
    assert not verify(TOKEN, "https://evil.example.com/twiml", params, good)
    assert not verify("other-token", url, params, good)
    assert not verify(TOKEN, url, params, None)
    assert not verify(TOKEN, url, params, "")
    assert not verify(TOKEN, url, params, good[:-2])


def test_websocket_url_without_params() -> None:
    url = "wss://agent.example.com/relay"
    good = _reference(url, {})
    assert verify(TOKEN, url, {}, good)
    assert not verify(TOKEN, "ws://127.0.0.1:8080/relay", {}, good)


def test_port_variants_both_ways() -> None:
    # Twilio may sign with or without the default port; accept either.
    pairs = [
        ("https://a.example.com/x", "https://a.example.com:443/x"),
        ("https://a.example.com:443/x", "https://a.example.com/x"),
        ("wss://a.example.com/relay", "wss://a.example.com:443/relay"),
    ]
    for ours, signed in pairs:
        assert verify(TOKEN, ours, {}, _reference(signed, {}))
    assert url_variants("http://h:8080/p?q=1") == ["http://h:8080/p?q=1", "http://h/p?q=1"]
