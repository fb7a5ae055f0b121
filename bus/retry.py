"""Riding out bus outages: exponential backoff with full jitter, logged once.

Every long-running loop that talks to the bus (actor read loops, the LLM
reclaimer, the gateway's tail, heartbeats) keeps one ``Backoff``. On a
retriable ``BusError`` (``ConnectionLost``: Redis restarted, the network
blinked) it calls ``await backoff.failed(exc)``, which sleeps a random time
in ``[0, min(cap, base * 2**n)]`` ("full jitter": many workers that lost
Redis at the same moment do not reconnect in lock-step); after the next
success it calls ``backoff.succeeded()``.

Logging is per outage, not per attempt: ``bus_unavailable`` once when the
first failure of an outage happens (warning), ``bus_recovered`` once when
the loop works again (with how long the outage lasted and how many attempts
failed). A dead Redis therefore costs one log line per loop, not one per
retry, and no loop spins.

Retriable means weather, not a bug: a lost connection (``ConnectionLost``)
and the server refusing a command because of its own state (``OOM`` at
``maxmemory``, ``READONLY`` after a failover, ``LOADING``, ``BUSY``,
``MASTERDOWN``; see ``bus.base.WEATHER_REPLIES``) are ridden out the same way.

``BusHealth`` is the process's view of the weather, fed by every ``Backoff``
(one shared instance, ``HEALTH``, since every loop of a process talks to the
same bus): *degraded* from the first failed attempt of any loop until a
loop succeeds with no failure for ``settle_s``. It logs ``bus_degraded``
once when the process turns degraded and ``bus_healthy`` once when it is
well again; ``/readyz`` answers 503 and the ``switchboard_bus_degraded``
gauge is 1 in between. A loop abandoned mid-outage (its call ended) cannot
leave the process degraded for ever: a failure older than ``stale_s`` with
nothing heard since no longer counts.

``append_once`` is for the one write that must neither be lost nor doubled
when the bus blinks (a caller's event, which the gateway cannot ask Twilio
to send again): it retries a failed append, and before each retry looks for
the entry on the stream, since a lost connection leaves unknown whether the
append ran. The append is ``append_replicated``: on a cluster with replicas
an entry no replica confirmed counts as a lost connection too. During a
failover that covers both outcomes: an entry the old master took and copied
to its replica is found and not added again; one it took but never copied
(or took while paused, to drop it on rejoining) is gone, and is appended
again.

``missing_group`` recognises the error a consumer-group command gets after
Redis lost its data (a restart without persistence): the loop re-creates its
group and carries on instead of crashing.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
import trio

from bus.base import Bus, BusError, CommandError, Fields
from bus.envelope import now_ms

T = TypeVar("T")

DEFAULT_BASE_S = 0.05
DEFAULT_CAP_S = 2.0


log = structlog.get_logger()


class BusHealth:
    """Whether this process's bus is failing now (see the module docstring).

    Times come from ``trio.current_time()``; one instance per process
    (``HEALTH``), or one per test. State from an earlier ``trio.run`` (another
    test in the same process, on another clock) is forgotten.
    """

    def __init__(self, *, settle_s: float = 5.0, stale_s: float = 15.0) -> None:
        self.settle_s = settle_s
        self.stale_s = stale_s
        self.outages = 0  # outages seen since start (a counter, for /metrics)
        self._degraded_since: float | None = None
        self._last_failure = 0.0
        self._last_error = ""
        self._run: object = None

    def _same_run(self) -> None:
        run = trio.lowlevel.current_trio_token()
        if run is not self._run:
            self._run = run
            self._degraded_since = None

    @property
    def degraded(self) -> bool:
        """True during an outage: a recent failure and no settled success since."""
        self._same_run()
        if self._degraded_since is None:
            return False
        if trio.current_time() - self._last_failure >= self.stale_s:
            self._end(trio.current_time(), "stale")
            return False
        return True

    def failed(self, exc: BaseException) -> None:
        """Record one failed bus command of any loop."""
        self._same_run()
        now = trio.current_time()
        self._last_failure = now
        self._last_error = f"{type(exc).__name__}: {exc}"
        if self._degraded_since is None:
            self._degraded_since = now
            self.outages += 1
            log.warning("bus_degraded", error=self._last_error, outage=self.outages)

    def succeeded(self) -> None:
        """Record one successful bus command; ends the outage once failures settled."""
        self._same_run()
        if self._degraded_since is None:
            return
        now = trio.current_time()
        if now - self._last_failure >= self.settle_s:
            self._end(now, "recovered")

    def _end(self, now: float, how: str) -> None:
        started = self._degraded_since if self._degraded_since is not None else now
        self._degraded_since = None
        log.info(
            "bus_healthy",
            how=how,
            outage_s=round(now - started, 3),
            last_error=self._last_error,
        )


HEALTH = BusHealth()


def missing_group(exc: BaseException) -> bool:
    """True for ``NOGROUP``: the stream or its consumer group is gone (data lost)."""
    return isinstance(exc, CommandError) and "NOGROUP" in str(exc)


class Backoff:
    """Backoff state of one loop. ``what`` names the loop in the log events.

    ``random`` is injectable so tests can pin the jitter; delays come from
    ``trio.sleep``, so ``autojump_clock`` tests run them instantly.
    """

    def __init__(
        self,
        what: str,
        *,
        base_s: float = DEFAULT_BASE_S,
        cap_s: float = DEFAULT_CAP_S,
        rng: Callable[[], float] = random.random,
        health: BusHealth | None = None,
        **fields: Any,
    ) -> None:
        self.what = what
        self.health = health if health is not None else HEALTH
        self.base_s = base_s
        self.cap_s = cap_s
        self._rng = rng
        self._fields = fields
        self.failures = 0
        self._outage_started: float | None = None

    @property
    def in_outage(self) -> bool:
        """True between the first failure and the next success."""
        return self.failures > 0

    def next_delay(self) -> float:
        """The sleep before the next attempt: uniform in ``[0, min(cap, base*2**n)]``."""
        ceiling = min(self.cap_s, self.base_s * (1 << min(self.failures, 30)))
        return float(self._rng()) * ceiling

    async def failed(self, exc: BusError) -> None:
        """Record a failed attempt and sleep before the next one.

        Re-raises ``exc`` when it is not retriable: a refused command will
        not work better later, and hiding it would turn a bug into a spin.
        """
        if not exc.retriable:
            raise exc
        self.health.failed(exc)
        if self.failures == 0:
            self._outage_started = trio.current_time()
            log.warning(
                "bus_unavailable",
                loop=self.what,
                error=f"{type(exc).__name__}: {exc}",
                **self._fields,
            )
        delay = self.next_delay()  # the first retry waits up to base_s
        self.failures += 1
        await trio.sleep(delay)

    def succeeded(self) -> None:
        """Record a successful attempt; logs ``bus_recovered`` after an outage."""
        self.health.succeeded()
        if self.failures == 0:
            return
        started = self._outage_started if self._outage_started is not None else 0.0
        log.info(
            "bus_recovered",
            loop=self.what,
            failed_attempts=self.failures,
            outage_s=round(trio.current_time() - started, 3),
            **self._fields,
        )
        self.failures = 0
        self._outage_started = None


async def retry_bus(
    what: str,
    op: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff | None = None,
    **fields: Any,
) -> T:
    """Run ``op`` until it succeeds, backing off on retriable bus errors.

    Non-retriable errors propagate. Meant for the few commands a loop cannot
    go on without (creating its group at start-up, a dispatcher's first
    ``last_id``); ordinary loops keep a ``Backoff`` of their own instead.
    """
    backoff = backoff if backoff is not None else Backoff(what, **fields)
    while True:
        try:
            result = await op()
        except BusError as exc:
            await backoff.failed(exc)
            continue
        backoff.succeeded()
        return result


# How far before the first attempt ``append_once`` looks for its entry: the
# server's clock (entry ids) and ours may disagree by this much.
CLOCK_SLACK_MS = 2000


async def append_once(
    bus: Bus,
    stream: str,
    fields: Fields,
    *,
    patience_s: float,
    backoff: Backoff | None = None,
    **log_fields: Any,
) -> str:
    """Append ``fields`` to ``stream`` exactly once, retrying for up to ``patience_s``.

    After a retriable failure (the append may or may not have run), each
    retry first reads the stream from just before the first attempt and
    returns the id of an entry with exactly these fields if there is one.
    Entries are told apart by their fields, so ``fields`` must be unique to
    this write (an envelope is: it carries its session, seq and timestamp).
    Raises the last error when ``patience_s`` runs out, and non-retriable
    errors at once.
    """
    backoff = backoff if backoff is not None else Backoff("append", **log_fields)
    deadline = trio.current_time() + patience_s
    since = f"{max(0, now_ms() - CLOCK_SLACK_MS)}-0"
    attempted = False
    while True:
        try:
            if attempted:
                for entry in await bus.range(stream, since, "+"):
                    if entry.fields == fields:
                        backoff.succeeded()
                        return entry.id
            attempted = True
            entry_id = await bus.append_replicated(stream, fields)
        except BusError as exc:
            if not exc.retriable or trio.current_time() >= deadline:
                raise
            with trio.move_on_at(deadline):  # one last try when patience runs out
                await backoff.failed(exc)
            continue
        backoff.succeeded()
        return entry_id
