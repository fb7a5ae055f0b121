"""Resuming a call after a failed session: only when it may help, a bounded number of times.

Twilio reports a session that ended in error on the ``<Connect action>``
callback (``SessionStatus=failed``, ``ErrorCode``) and leaves the call up: the
TwiML we answer decides what happens. A fresh ``<Connect><ConversationRelay>``
helps when the failure was transient (the socket dropped, the speech
recogniser's connection broke); it cannot help a failure that will repeat (a
bad voice or provider setting, a crash on setup), where it kept the caller in
a reconnect loop for the rest of the call. So a call is resumed only for the
transient codes below, and at most ``limit`` times; otherwise the caller
hears a short apology and the call hangs up or goes to the configured human
handoff.

The count lives in the bus, so every gateway agrees whichever one Twilio
calls: resume ``n`` of a call is the key ``keys.resume(call, n)``, claimed
with an atomic ``SET NX`` whose value is the failed session's id. Twilio may
send the same callback again (a retried webhook): the session that already
holds a slot gets the same answer instead of a second slot.
"""

from __future__ import annotations

from typing import Final

from bus.base import Bus
from bus.keys import Keys
from gateway.config import DEFAULT_MAX_RESUMES as DEFAULT_MAX_RESUMES

# 64105: the WebSocket ended (the app's side dropped it); 64114: the speech
# recogniser's connection failed; 39001: the network connection to the
# WebSocket server failed (docs/PROTOCOL-REFERENCE.md, section 5).
TRANSIENT_ERROR_CODES: Final = frozenset({"64105", "64114", "39001"})
# A claimed slot outlives any call (Twilio's maximum call length is 4 h).
RESUME_TTL_MS: Final = 6 * 3600 * 1000


def is_transient(error_code: str | None) -> bool:
    """Whether a session that failed with ``error_code`` is worth reconnecting.

    No code at all (Twilio documents one on every failure) is taken as a
    dropped socket: the resume limit still bounds it.
    """
    code = (error_code or "").strip()
    return not code or code in TRANSIENT_ERROR_CODES


async def claim_resume(
    bus: Bus, keys: Keys, call_sid: str, session_id: str, limit: int
) -> int | None:
    """This failed session's resume number (1..``limit``), or None when used up.

    Idempotent per ``session_id``: asking again for the same session returns
    the same number.
    """
    for n in range(1, limit + 1):
        key = keys.resume(call_sid, n)
        if await bus.set(key, session_id, ttl_ms=RESUME_TTL_MS, nx=True):
            return n
        if await bus.get(key) == session_id:
            return n
    return None
