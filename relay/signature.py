"""``X-Twilio-Signature`` checking for webhooks and the WebSocket upgrade.

Twilio signs ``base64(HMAC-SHA1(auth_token, url + sorted(name + value)))``
where ``url`` is the public URL it requested (for the relay socket: the
``url`` attribute of ``<ConversationRelay>`` exactly as written, with no
parameters). The digest itself comes from twilio-python's
``RequestValidator``; the comparison is ours so that it is constant time
(``hmac.compare_digest``) and tries the URL with and without its default port,
since Twilio is not consistent about which one it signs.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from twilio.request_validator import RequestValidator

__all__ = ["SIGNATURE_HEADER", "sign", "url_variants", "verify"]

SIGNATURE_HEADER: Final = "X-Twilio-Signature"
_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


def url_variants(url: str) -> list[str]:
    """``url`` as given, without its port, and with its scheme's default port."""
    parts = urlsplit(url)
    variants = [url]
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    if parts.port is not None:
        bare = parts._replace(netloc=prefix + host)
        variants.append(urlunsplit(bare))
    else:
        default = _DEFAULT_PORTS.get(parts.scheme)
        if default is not None:
            variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
    return variants


def sign(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    """The signature Twilio would send for ``url`` plus sorted form ``params``.

    No ``params`` for the WebSocket upgrade. Twilio's side (the simulator) and
    tests sign with this.
    """
    validator = RequestValidator(auth_token)
    return str(validator.compute_signature(url, dict(params or {})))


def verify(auth_token: str, url: str, params: Mapping[str, str], signature: str | None) -> bool:
    """True when ``signature`` is Twilio's signature of ``url`` + ``params``.

    A missing (``None``) or empty signature is never valid.
    """
    if not signature:
        return False
    validator = RequestValidator(auth_token)
    given = signature.strip().encode()
    ok = False
    # Check every variant (no early exit) so timing does not tell which matched.
    for candidate in url_variants(url):
        expected = str(validator.compute_signature(candidate, dict(params))).encode()
        ok |= hmac.compare_digest(expected, given)
    return ok
