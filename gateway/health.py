"""Honest health: is anyone there to answer the calls this gateway carries?

The gateway cannot answer a caller by itself, so it watches the workers it
depends on, through the bus alone:

- **Live workers per role**: every actor process heartbeats into its role's
  liveness registry (``Keys.members(group)``, ``Bus.heartbeat``); a role
  whose registry is empty has nobody serving it.
- **Consumer-group lag** per group and stream (``Bus.group_lag``): entries
  appended but not yet delivered to the group. Pending counts (delivered, not
  acked) stay at 0 when no worker reads at all; lag is what rises then.

:class:`HealthRules` is the pure part: from successive samples it decides
what to log (``role_unserved`` once when a role has no live worker,
``role_served`` when one is back; ``group_lag_growing`` once when a group's
lag rose over ``GROWING_SAMPLES`` samples in a row, ``group_lag_settled``
when it stops). :class:`HealthWatch` is the shell: it reads the bus (at
scrape time for ``/metrics``, and every ``interval_s`` for the log), sets the
gauges and logs what the rules say. It creates the conversation and LLM
groups if no worker has yet, so that calls with nobody to serve them show as
lag instead of nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog
import trio

from bus.base import BusError
from bus.keys import GROUP_CONVERSATION, GROUP_LLM, GROUP_TELEMETRY
from gateway.context import GatewayContext

__all__ = ["GROWING_SAMPLES", "HealthRules", "HealthWatch", "Notice", "Sample"]

log = structlog.get_logger()

GROWING_SAMPLES = 3  # samples in a row with rising lag before a warning
SAMPLE_TIMEOUT_S = 1.0  # bound on one sample's bus reads
HEALTH_INTERVAL_S = 5.0  # how often the gateway samples for the log


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading: live workers per role, lag per group (summed over its streams)."""

    live: Mapping[str, int]
    lag: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Notice:
    """A log line the rules ask for: ``event`` at ``level`` with ``fields``."""

    event: str
    level: str
    fields: Mapping[str, object]


@dataclass(eq=False, slots=True)
class HealthRules:
    """What successive samples mean; pure."""

    growing_samples: int = GROWING_SAMPLES
    _unserved: set[str] = field(default_factory=set)
    _last_lag: dict[str, int] = field(default_factory=dict)
    _rises: dict[str, int] = field(default_factory=dict)
    _growing: set[str] = field(default_factory=set)

    def observe(self, sample: Sample) -> list[Notice]:
        """The notices ``sample`` calls for, given the samples before it."""
        out: list[Notice] = []
        for role, live in sample.live.items():
            if live == 0 and role not in self._unserved:
                self._unserved.add(role)
                out.append(
                    Notice(
                        "role_unserved",
                        "warning",
                        {"role": role, "hint": f"start `switchboard actor {role}`"},
                    )
                )
            elif live > 0 and role in self._unserved:
                self._unserved.discard(role)
                out.append(Notice("role_served", "info", {"role": role, "live": live}))
        for group, lag in sample.lag.items():
            before = self._last_lag.get(group)
            self._last_lag[group] = lag
            rose = before is not None and lag > before
            self._rises[group] = self._rises.get(group, 0) + 1 if rose else 0
            if self._rises[group] >= self.growing_samples and group not in self._growing:
                self._growing.add(group)
                out.append(
                    Notice(
                        "group_lag_growing",
                        "warning",
                        {"group": group, "lag": lag, "samples": self._rises[group]},
                    )
                )
            elif not rose and group in self._growing:
                self._growing.discard(group)
                out.append(Notice("group_lag_settled", "info", {"group": group, "lag": lag}))
        return out


class HealthWatch:
    """Reads the registries and the groups' lag; sets the gauges; logs the rules' notices."""

    def __init__(self, ctx: GatewayContext, *, interval_s: float = HEALTH_INTERVAL_S) -> None:
        self.ctx = ctx
        self.interval_s = interval_s
        self.rules = HealthRules()
        self._lock = trio.Lock()

    def groups(self) -> dict[str, list[str]]:
        """The built-in consumer groups and the streams each reads."""
        keys = self.ctx.keys
        return {
            GROUP_CONVERSATION: keys.all_calls(),
            GROUP_LLM: keys.llm_streams(),
            GROUP_TELEMETRY: keys.event_streams(),
        }

    async def sample(self) -> Sample:
        """Read and publish one sample (gauges set as values arrive), bounded in time.

        A role or group the bus could not answer about within the bound is
        left out of the sample (and keeps its previous gauge value).
        """
        metrics, bus = self.ctx.metrics, self.ctx.bus
        live: dict[str, int] = {}
        lag: dict[str, int] = {}
        async with self._lock:
            with trio.move_on_after(SAMPLE_TIMEOUT_S):
                for role in self.groups():
                    try:
                        members = await bus.live_members(self.ctx.keys.members(role))
                    except BusError:
                        continue
                    live[role] = len(members)
                    metrics.workers_live.labels(role).set(len(members))
                for group, streams in self.groups().items():
                    pending = 0
                    total: int | None = None
                    for stream in streams:
                        try:
                            pending += await bus.pending_count(stream, group)
                            behind = await bus.group_lag(stream, group)
                        except BusError:
                            continue  # no such group (yet): no worker ever read it
                        if behind is not None:
                            metrics.bus_lag.labels(group, stream).set(behind)
                            total = (total or 0) + behind
                    metrics.bus_pending.labels(group).set(pending)
                    if total is not None:
                        lag[group] = total
        return Sample(live, lag)

    async def _ensure_groups(self) -> bool:
        """Create the groups every call needs (conversation, llm) if missing, so
        their lag shows from the first call even before any worker started.

        Workers create them the same way (from ``0``) on start; creating one
        first changes nothing for them. False when the bus is not there yet.
        """
        groups = self.groups()
        try:
            for group in (GROUP_CONVERSATION, GROUP_LLM):
                for stream in groups[group]:
                    await self.ctx.bus.ensure_group(stream, group)
        except BusError:
            return False
        return True

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sample every ``interval_s`` and log what the rules say, until cancelled."""
        task_status.started()
        ensured = False
        while True:
            if not ensured:
                ensured = await self._ensure_groups()
            for notice in self.rules.observe(await self.sample()):
                if notice.level == "warning":
                    log.warning(notice.event, **notice.fields)
                else:
                    log.info(notice.event, **notice.fields)
            await trio.sleep(self.interval_s)
