"""The reply deadline's shell: the apology, and the withdrawal of the late reply.

The rule is :mod:`gateway.reply_deadline` (pure): a final prompt whose reply
has not started within ``reply_deadline_s`` gets ``reply_apology``, which
asks the caller to say it again. So the late reply is withdrawn: the fence
drops it (:meth:`gateway.fence.ReplyFence.withdraw`, at once) and the
conversation is told (``inbound.reply_withdrawn``, a ``call.interrupt``
marked ``withdrawn``) in a task of its own, so a slow bus never delays the
next prompt's apology.
"""

from __future__ import annotations

import structlog
import trio

from gateway import inbound
from gateway.dispatch import Dispatcher
from gateway.session import Session
from relay import Text

__all__ = ["apologise_when_late"]

log = structlog.get_logger()


async def apologise_when_late(dispatcher: Dispatcher, session: Session) -> None:
    """Apologise for, and withdraw, each reply that misses its deadline; runs
    for the session's life."""
    ctx = dispatcher.ctx
    apology = Text(token=ctx.config.reply_apology, last=True)
    async with trio.open_nursery() as nursery:
        while True:
            armed = session.reply_armed
            due = session.reply.due_at
            if due is None:
                await armed.wait()
                continue
            with trio.move_on_at(due):
                await armed.wait()  # a newer prompt moved the deadline
            if not session.reply.due(trio.current_time()):
                continue
            seq = session.apologised()
            log.warning(
                "reply_late",
                deadline_s=ctx.config.reply_deadline_s,
                reply_to=seq,
                hint="no reply started in time: are conversation and llm workers running?",
                **session.log_context(),
            )
            dispatcher.offer(session, None, apology)
            nursery.start_soon(inbound.reply_withdrawn, ctx, session, seq)
