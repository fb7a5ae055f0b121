"""A session's caller events to the bus, in order, interim prompts coalesced.

The session's reader (:mod:`gateway.lifecycle`) hands every accepted frame
to :meth:`CallerEvents.publish` in the order it read them. A final prompt,
an interrupt, a key or any other event is appended before ``publish``
returns, as before: the socket is not read meanwhile, so a slow bus holds
the caller's frames in the socket's buffers (bounded backpressure, see
``gateway.inbound.PUBLISH_PATIENCE_S``). An interim prompt instead goes
through the session's :class:`~gateway.interim.InterimGate` and, when kept,
waits for the session's one append slot, where the :meth:`run` task appends
it; the reader goes on reading. So a bus slower than Twilio's interim
cadence costs one append per call, not a backlog of stale words, and the
partition stream still holds every event in the order the caller made them
(the gate's rule 4).
"""

from __future__ import annotations

import trio

from bus.envelope import Envelope
from gateway import inbound
from gateway.context import GatewayContext
from gateway.interim import InterimGate, InterimOutcome
from gateway.session import Session
from relay import Dtmf, InboundMessage, Interrupt, Prompt

__all__ = ["CallerEvents"]


class CallerEvents:
    """The publisher of one session's caller events; :meth:`run` is its append slot."""

    def __init__(self, ctx: GatewayContext, session: Session, *, interim_prompts: bool) -> None:
        self.ctx = ctx
        self.session = session
        self.gate: InterimGate[Envelope] = InterimGate(enabled=interim_prompts)
        self._busy = False  # an interim prompt's append is in flight
        self._changed = trio.Event()

    def _count(self, outcomes: list[InterimOutcome]) -> None:
        for outcome in outcomes:
            if outcome is not InterimOutcome.QUEUED:  # counted once it is published
                self.ctx.metrics.count_interim.inc(outcome.value)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def publish(self, msg: InboundMessage) -> None:
        """Publish the caller event ``msg``, stamped by the reader just before."""
        if isinstance(msg, Prompt) and not msg.last:
            env = inbound.stamped(self.ctx, self.session, msg)
            self._count(self.gate.interim(msg.voice_prompt, env))
            self._wake()
            return
        if isinstance(msg, Prompt):
            self._count(self.gate.final())
        elif isinstance(msg, Interrupt | Dtmf):
            self.gate.broken()
        env = inbound.stamped(self.ctx, self.session, msg)
        # Behind the interim prompts before it: the one in flight and the one waiting.
        while self._busy or self.gate.waiting is not None:
            await self._changed.wait()
        await inbound.append(self.ctx, self.session, env)

    async def run(self) -> None:
        """Append waiting interim prompts, one at a time, until cancelled."""
        while True:
            env = self.gate.take()
            if env is None:
                await self._changed.wait()
                continue
            self._busy = True
            try:
                await inbound.append(self.ctx, self.session, env)
            finally:
                self._busy = False
                self._wake()
            self._count([InterimOutcome.PUBLISHED])
