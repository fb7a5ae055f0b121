"""What can go wrong on Twilio's side of a call.

Errors::

    Exception
     +-- SimulatorError        the call could not be placed or went wrong
          +-- HttpError         a webhook answered with a non-2xx status
          +-- RelayConnectError the WebSocket upgrade failed or was rejected
          +-- SessionClosed     the session ended while waiting (``.partial`` reply)
     +-- ValueError
          +-- relay.twiml.TwimlError  the TwiML is not usable (no relay, bad url, bad XML)
"""

from __future__ import annotations

from switchboard.twilio.reply import Reply


class SimulatorError(Exception):
    """The simulated call could not be placed or went wrong."""


class ConnectionFailed(SimulatorError):
    """A webhook's connection failed before any response arrived (Twilio retries it)."""


class HttpError(SimulatorError):
    """A webhook (voice or action) answered with a non-2xx status."""

    def __init__(self, url: str, status: int, body: str) -> None:
        super().__init__(f"{url} answered HTTP {status}: {body[:200]!r}")
        self.url = url
        self.status = status
        self.body = body


class RelayConnectError(SimulatorError):
    """The WebSocket upgrade failed; ``status_code`` is the HTTP status if rejected."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class SessionClosed(SimulatorError):
    """The relay session ended while we waited for the app; ``partial`` holds what
    arrived of the reply being collected."""

    def __init__(self, message: str, partial: Reply | None = None) -> None:
        super().__init__(message)
        self.partial = partial
