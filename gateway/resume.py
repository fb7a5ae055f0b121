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

While the bus is away (a Redis restart), the count cannot be read. Resuming
then is the better failure than hanging up, but not without bound: every
resumed session fails again at once while Redis is down, and an unbounded
fallback cycled one call through 25 sessions in a second. ``LocalResumes``
keeps the same budget in the gateway's memory for such moments.
"""

from __future__ import annotations

from collections import OrderedDict
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


# Calls a gateway remembers while the bus is away (oldest forgotten first).
LOCAL_RESUME_CALLS: Final = 10_000


class LocalResumes:
    """The resume budget of this gateway alone, for when the bus cannot count.

    Same contract as ``claim_resume``: a number 1..``limit`` per failed
    session, the same number for the same session, None when used up.
    Pure and bounded (``capacity`` calls).
    """

    def __init__(self, capacity: int = LOCAL_RESUME_CALLS) -> None:
        self.capacity = capacity
        self._calls: OrderedDict[str, list[str]] = OrderedDict()

    def claim(self, call_sid: str, session_id: str, limit: int) -> int | None:
        sessions = self._calls.setdefault(call_sid, [])
        self._calls.move_to_end(call_sid)
        while len(self._calls) > self.capacity:
            self._calls.popitem(last=False)
        if session_id in sessions:
            return sessions.index(session_id) + 1
        if len(sessions) >= limit:
            return None
        sessions.append(session_id)
        return len(sessions)
