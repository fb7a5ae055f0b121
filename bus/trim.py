"""Keeping the bus's memory bounded by design, not by traffic.

Appends trim a stream by age (``MINID ~``), but only the stream appended to,
and only when something is appended: a quiet stream keeps its old entries,
and a busy one keeps every entry of the retention (24 h by default) however
many that is. ``serve_trimmer`` closes both gaps. Every ``interval_s`` (with
jitter, so a fleet does not trim in step) it trims each stream of its list
by age *and* to about ``max_len`` entries (``Bus.trim``), whether or not
anything was appended, and refreshes the time to live of its ``keep_alive``
keys (``Bus.expire``).

Who trims what: each actor process trims the streams it consumes (its
group's streams and the dead-letter stream); each gateway trims its own
stream and keeps it alive. A gateway stream is named for its gateway
(``HOST-PID``), so one whose gateway stopped is never appended to or read
again: its time to live (``ttl_ms``, several intervals) runs out and Redis
deletes it. Several workers trimming the same stream is harmless (``XTRIM``
with ``~`` is idempotent and cheap).

``max_len`` must hold more than a consumer group can fall behind: an entry
trimmed before it was read is gone (its caller event is lost). The default
(``DEFAULT_STREAM_MAX_LEN`` per stream) is far above a healthy lag and far
below what fills a Redis; docs/OPERATIONS.md has the arithmetic.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
import trio

from bus.base import Bus, BusError
from bus.retry import Backoff

log = structlog.get_logger()

DEFAULT_STREAM_MAX_LEN = 10_000
DEFAULT_TRIM_INTERVAL_S = 60.0
DEFAULT_KEEP_ALIVE_TTL_S = 600.0


@dataclass(frozen=True, slots=True)
class TrimPolicy:
    """How big streams may grow and how often they are trimmed (from settings)."""

    max_len: int = DEFAULT_STREAM_MAX_LEN
    interval_s: float = DEFAULT_TRIM_INTERVAL_S
    keep_alive_ttl_s: float = DEFAULT_KEEP_ALIVE_TTL_S


async def trim_once(
    bus: Bus, streams: Sequence[str], keep_alive: Sequence[str], policy: TrimPolicy
) -> int:
    """One pass: trim every stream, refresh every keep-alive key; entries removed."""
    removed = 0
    for stream in streams:
        removed += await bus.trim(stream, max_len=policy.max_len)
    for key in keep_alive:
        await bus.expire(key, int(policy.keep_alive_ttl_s * 1000))
    return removed


async def serve_trimmer(
    bus: Bus,
    streams: Sequence[str],
    policy: TrimPolicy,
    *,
    keep_alive: Sequence[str] = (),
    rng: Callable[[], float] = random.random,
    role: str = "",
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Trim ``streams`` and refresh ``keep_alive`` every ``policy.interval_s`` until cancelled.

    The first pass runs at once. Bus outages are ridden out (``Backoff``); a
    refused trim is logged and tried again at the next interval.
    """
    backoff = Backoff("trim", role=role)
    task_status.started()
    while True:
        try:
            removed = await trim_once(bus, streams, keep_alive, policy)
        except BusError as exc:
            if exc.retriable:
                await backoff.failed(exc)
                continue
            log.error("trim_failed", error=repr(exc), role=role)
        else:
            backoff.succeeded()
            if removed:
                log.info("streams_trimmed", removed=removed, streams=len(streams), role=role)
        # Up to +-10 %: many workers started together drift apart.
        await trio.sleep(policy.interval_s * (0.9 + 0.2 * rng()))
