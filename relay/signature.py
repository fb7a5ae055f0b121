"""``X-Twilio-Signature`` checking for webhooks and the WebSocket upgrade.

Twilio signs ``base64(HMAC-SHA1(auth_token, url + sorted(name + value)))``
where ``url`` is the public URL it requested (for the relay socket: the
``url`` attribute of ``<ConversationRelay>`` exactly as written, with no
parameters). A repeated form parameter contributes every one of its values
(each distinct value, sorted), as twilio-python's validator does. When a
Webhook Rule signs with a SharedKey instead, Twilio adds
``X-Twilio-Webhooks-Signature-Settings: key=<id>,algorithm=HMAC_SHA256``:
the same string, HMAC-SHA256, keyed with that key's secret
(docs/PROTOCOL-REFERENCE.md, section 6). The digest itself comes from twilio-python's
``RequestValidator``; the comparison is ours so that it is constant time
(``hmac.compare_digest``) and tries the URL with and without its default port,
since Twilio is not consistent about which one it signs.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from twilio.request_validator import RequestValidator

__all__ = [
    "ALGORITHMS",
    "HMAC_SHA1",
    "HMAC_SHA256",
    "SETTINGS_HEADER",
    "SIGNATURE_HEADER",
    "Params",
    "algorithm_of",
    "sign",
    "url_variants",
    "verify",
]

SIGNATURE_HEADER: Final = "X-Twilio-Signature"
# Present when a Webhook Rule signs with a SharedKey: key=<id>,algorithm=<name>.
SETTINGS_HEADER: Final = "X-Twilio-Webhooks-Signature-Settings"
HMAC_SHA1: Final = "HMAC_SHA1"
HMAC_SHA256: Final = "HMAC_SHA256"
ALGORITHMS: Final = frozenset({HMAC_SHA1, HMAC_SHA256})
# Form parameters: one value per name, several (a repeated name), or pairs.
Params = Mapping[str, str | Sequence[str]] | Sequence[tuple[str, str]]
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


def algorithm_of(settings_header: str | None) -> str:
    """The algorithm named by ``X-Twilio-Webhooks-Signature-Settings``.

    ``key=<id>,algorithm=HMAC_SHA256`` names it; no header (or none named)
    is the Auth Token scheme, HMAC-SHA1.
    """
    for part in (settings_header or "").split(","):
        name, separator, value = part.partition("=")
        if separator and name.strip().lower() == "algorithm" and value.strip():
            return value.strip().upper()
    return HMAC_SHA1


class _MultiParams(dict[str, list[str]]):
    """Form parameters with every value of a repeated name (twilio's ``getall``)."""

    def getall(self, name: str) -> list[str]:
        return self[name]


def _multi(params: Params | None) -> _MultiParams:
    out = _MultiParams()
    if params is None:
        return out
    items = params.items() if isinstance(params, Mapping) else params
    for name, value in items:
        values = [value] if isinstance(value, str) else list(value)
        out.setdefault(name, []).extend(values)
    return out


def sign(secret: str, url: str, params: Params | None = None, *, algorithm: str = HMAC_SHA1) -> str:
    """The signature Twilio would send for ``url`` plus its form ``params``.

    ``secret``: the Auth Token (HMAC-SHA1), or a Webhook Setting's SharedKey
    secret with the algorithm it names (HMAC-SHA256). Every value of a
    repeated parameter is signed, as Twilio does. No ``params`` for the
    WebSocket upgrade. Twilio's side (the simulator) and tests sign with this.
    """
    validator = RequestValidator(secret)
    return str(validator.compute_signature(url, _multi(params), algorithm))


def verify(
    secret: str,
    url: str,
    params: Params,
    signature: str | None,
    *,
    algorithm: str = HMAC_SHA1,
) -> bool:
    """True when ``signature`` is Twilio's signature of ``url`` + ``params``.

    A missing (``None``) or empty signature is never valid, nor is an
    algorithm other than ``HMAC_SHA1`` and ``HMAC_SHA256``.
    """
    if not signature or algorithm.upper() not in ALGORITHMS:
        return False
    validator = RequestValidator(secret)
    given = signature.strip().encode()
    multi = _multi(params)
    ok = False
    # Check every variant (no early exit) so timing does not tell which matched.
    for candidate in url_variants(url):
        expected = str(validator.compute_signature(candidate, multi, algorithm)).encode()
        ok |= hmac.compare_digest(expected, given)
    return ok
