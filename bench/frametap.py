"""A wire tap on ConversationRelay WebSockets: what each side of a call sent.

Both ends of a call in one process (the dev composition and the simulator)
talk through ``trio_websocket``; :func:`tapped` wraps
``WebSocketConnection.send_message`` (and ``get_message``) for as long as it
is open and records every text frame with the side that sent it: ``twilio``
(the client end) or ``app`` (the server end). The two ends of one socket are
paired by the ``sessionId`` of the ``setup`` frame (sent by one, read by the
other), and sessions grouped into calls by its ``callSid``.

Nothing in Switchboard is imported or patched, so the same tap records a
commit from before a refactor and one from after it; only the library seam is
wrapped. :func:`normalize` drops what differs between two runs of the same
call (ids, timings) and keeps the frame types and texts.

As a pytest plugin (``-p frametap``, with ``FRAMETAP_OUT=path.json``) it
records every test's calls and writes them, keyed by test id, at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio_websocket

# Fields whose values differ from run to run: random ids and measured times.
VOLATILE = frozenset(
    {"callSid", "sessionId", "accountSid", "parentCallSid", "durationUntilInterruptMs"}
)


@dataclass
class _End:
    """One end of one socket: who it is, which session, what it sent."""

    order: int
    side: str  # "twilio" (client) or "app" (server)
    call_sid: str = ""
    session_id: str = ""
    sent: list[str] = field(default_factory=list)

    def learn(self, message: str) -> None:
        """Take the ids from the ``setup`` frame (sent by Twilio's end, read by the app's)."""
        if not self.session_id:
            frame = _frame(message)
            if frame.get("type") == "setup":
                self.call_sid = str(frame.get("callSid", ""))
                self.session_id = str(frame.get("sessionId", ""))


@dataclass
class Tap:
    """Every frame sent on a tapped socket, per end, in sending order."""

    # Keyed by the connection itself: holding it keeps its identity from
    # being reused by a later connection.
    ends: dict[trio_websocket.WebSocketConnection, _End] = field(default_factory=dict)

    def _end(self, conn: trio_websocket.WebSocketConnection) -> _End:
        side = "twilio" if conn.is_client else "app"
        return self.ends.setdefault(conn, _End(order=len(self.ends), side=side))

    def sent(self, conn: trio_websocket.WebSocketConnection, message: str | bytes) -> None:
        if isinstance(message, str):
            end = self._end(conn)
            end.sent.append(message)
            if end.side == "twilio":
                end.learn(message)

    def received(self, conn: trio_websocket.WebSocketConnection, message: str | bytes) -> None:
        end = self._end(conn)
        if isinstance(message, str) and end.side == "app":
            end.learn(message)

    def calls(self) -> list[dict[str, Any]]:
        """One entry per call (its sessions in order), normalized, sorted by content."""
        sessions: dict[str, dict[str, list[str]]] = {}
        call_of: dict[str, str] = {}
        for end in sorted(self.ends.values(), key=lambda e: e.order):
            key = end.session_id or f"?{end.order}"  # no setup: a socket of its own
            sides = sessions.setdefault(key, {"twilio": [], "app": []})
            sides[end.side] += end.sent
            call_of.setdefault(key, end.call_sid or key)
        by_call: dict[str, list[dict[str, list[str]]]] = {}
        for key, sides in sessions.items():
            by_call.setdefault(call_of[key], []).append(sides)
        calls = [
            {
                "sessions": [
                    {side: [normalize(f) for f in frames] for side, frames in s.items()}
                    for s in call_sessions
                ]
            }
            for call_sessions in by_call.values()
        ]
        # Calls may run concurrently: their order is not part of the behaviour.
        return sorted(calls, key=lambda c: json.dumps(c, sort_keys=True))


def _frame(message: str) -> dict[str, Any]:
    try:
        value = json.loads(message)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def normalize(message: str) -> dict[str, Any] | str:
    """The frame without its volatile fields; a non-JSON frame as is."""
    frame = _frame(message)
    if not frame:
        return message
    return {k: v for k, v in frame.items() if k not in VOLATILE}


@contextmanager
def tapped() -> Iterator[Tap]:
    """Record every ``send_message`` on any trio_websocket connection meanwhile."""
    tap = Tap()
    cls = trio_websocket.WebSocketConnection
    original_send, original_get = cls.send_message, cls.get_message

    async def send_message(self: trio_websocket.WebSocketConnection, message: str | bytes) -> None:
        await original_send(self, message)
        tap.sent(self, message)

    async def get_message(self: trio_websocket.WebSocketConnection) -> str | bytes:
        message = await original_get(self)
        tap.received(self, message)
        return message

    cls.send_message, cls.get_message = send_message, get_message  # type: ignore[method-assign]
    try:
        yield tap
    finally:
        cls.send_message, cls.get_message = original_send, original_get  # type: ignore[method-assign]


# --------------------------------------------------------------------------- pytest plugin

FAILED = "failed"  # what a failed test records instead of its calls
_recorded: dict[str, Any] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with tapped() as tap:
        try:
            return (yield)
        finally:
            if tap.ends:
                _recorded[item.nodeid] = tap.calls()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        _recorded[report.nodeid] = FAILED


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = os.environ.get("FRAMETAP_OUT")
    if out:
        Path(out).write_text(json.dumps(_recorded, indent=1, sort_keys=True) + "\n")
