"""Per-call session tokens: a relay session may only join the call it was issued for.

Pure: no I/O; the caller passes the time.

Twilio's upgrade signature covers only the relay URL, which is the same for
every call, so it says nothing about *which* call a socket belongs to: any
socket could send ``setup`` with a live call's ``callSid`` and take its
session over. So every ``<Connect><ConversationRelay>`` we answer carries a
token as ``<Parameter name="sb_session">``, which Twilio hands back in
``setup.customParameters`` (Twilio's TwiML ``<ConversationRelay>`` page;
Twilio's own guidance for ``<Stream>`` is to pass values this way rather than
in the socket URL's query, error 31922). The token is

    ``EXPIRY.SUPERSEDES.MAC``  with  ``MAC = HMAC-SHA256(secret, CALLSID|EXPIRY|SUPERSEDES)``

(url-safe base64, no padding). ``EXPIRY`` is a Unix time in whole seconds;
``SUPERSEDES`` is the ``SessionId`` of the failed session this one resumes
(empty for a call's first session), taken from the signed ``<Connect action>``
callback that asked for the resume. The gateway accepts a ``setup`` only with
a token for its ``callSid`` that has not expired, and lets a new socket
replace the live one of the same call only when the token names that live
session as the one it supersedes (Twilio itself said, in a signed callback,
that the session ended) or when it carries the live session's own
``sessionId`` (Twilio reopening the socket of that session).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

__all__ = ["PARAMETER", "TOKEN_TTL_S", "Grant", "TokenRejected", "check", "issue"]

PARAMETER: Final = "sb_session"
# Valid for as long as the call can last (Twilio ends calls at 4 hours), so a
# socket Twilio reopens for the same session (``applicationReconnect``) late
# in a long call is still admitted; the token names one call either way.
TOKEN_TTL_S: Final = 4 * 3600 + 600


class TokenRejected(Exception):
    """A ``setup`` whose token does not admit it; ``reason`` is a short word for logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token allows: join its call, replacing ``supersedes`` if live."""

    supersedes: str


def _mac(secret: bytes, call_sid: str, expiry: int, supersedes: str) -> str:
    message = f"{call_sid}|{expiry}|{supersedes}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue(
    secret: bytes, call_sid: str, *, now: float, supersedes: str = "", ttl_s: int = TOKEN_TTL_S
) -> str:
    """The token for one new session of ``call_sid``."""
    expiry = int(now) + ttl_s
    return f"{expiry}.{supersedes}.{_mac(secret, call_sid, expiry, supersedes)}"


def check(secret: bytes, token: str | None, call_sid: str, *, now: float) -> Grant:
    """The grant of ``token`` for a ``setup`` of ``call_sid``; :class:`TokenRejected` if none."""
    if not token:
        raise TokenRejected("missing")
    expiry_text, _, rest = token.partition(".")
    supersedes, _, mac = rest.rpartition(".")
    if not expiry_text.isdigit() or not mac or len(expiry_text) > 12:
        raise TokenRejected("malformed")
    expiry = int(expiry_text)
    if not hmac.compare_digest(mac, _mac(secret, call_sid, expiry, supersedes)):
        raise TokenRejected("wrong_call")
    if now > expiry:
        raise TokenRejected("expired")
    return Grant(supersedes)
