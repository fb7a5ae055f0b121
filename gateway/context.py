"""What every part of one gateway shares: the bus, settings, metrics, facts, sessions."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import trio

from bus.base import Bus
from bus.facts import FactPublisher
from bus.keys import Keys
from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from gateway.session import Session

__all__ = ["GatewayContext"]


@dataclass(eq=False, slots=True)
class GatewayContext:
    """One gateway process's shared state; ``sessions`` holds live sessions by call sid."""

    bus: Bus
    config: GatewayConfig
    metrics: GatewayMetrics
    facts: FactPublisher
    sessions: dict[str, Session] = field(default_factory=dict)
    ready: bool = False
    # Signs session tokens (gateway.calltoken): the configured session secret,
    # else the Twilio auth token, else random (then only this process admits
    # the sessions its TwiML announced).
    token_secret: bytes = b""
    open_sockets: int = 0  # relay sockets from upgrade to close (gateway.lifecycle)
    # Set at the first SIGTERM: no new calls; live ones finish or are handed over.
    draining: bool = False
    sessions_changed: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        if not self.token_secret:
            secret = self.config.session_secret or self.config.auth_token
            self.token_secret = secret.encode() if secret else secrets.token_bytes(32)

    def touch_sessions(self) -> None:
        """Wake whoever waits for ``sessions`` to change (the drain)."""
        self.sessions_changed.set()
        self.sessions_changed = trio.Event()

    @property
    def keys(self) -> Keys:
        return self.config.keys

    def fact(self, session: Session, name: str, **fields: object) -> None:
        """Publish a fact about ``session`` without waiting (see ``bus.facts``)."""
        self.facts.emit(
            name,
            call=session.call_sid,
            session=session.session_id,
            gateway=self.config.gateway_id,
            seq=session.seq,
            **fields,
        )
