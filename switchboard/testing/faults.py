"""Bus fault injection: ``FaultyBus`` wraps a real bus and breaks chosen calls.

A command sent to Redis can fail in two ways that matter to its caller:

- *before* it reached the server (nothing happened), and
- *after* the server ran it, when only the reply was lost.

The caller cannot tell the two apart (``ConnectionLost``: "the command may or
may not have run"), so code that retries must be right in both cases. Tests
produce either one with ``fail_before`` / ``fail_after`` instead of
subclassing a bus::

    bus = FaultyBus(MemoryBus())
    bus.fail_after("ack")                      # the next ack runs, then "breaks"
    bus.fail_before("append", when=lambda stream, fields: stream == "x", times=None)
    await bus.completed("ack").wait()         # the next ack that went through
    held = bus.stall("append")                # the next append waits, not yet run,
    await held.reached.wait()                 # ... until the test has seen it wait
    held.release()                            # ... and lets it go on

A stall is the third case: a bus too slow to answer for a while. With
``moment="after"`` the call runs first and its *reply* is held: the caller
already has it (as when a reply and a cancel of its caller are read in the
same scheduler pass), so a cancel of the caller meanwhile does not take it
back; the caller goes on with the reply once released.

``when`` receives the call's arguments positionally, in the order the ``Bus``
protocol declares them (keyword-only ones included). Every other call goes
straight to the wrapped bus, which stays reachable as ``inner``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import structlog
import trio

from bus.base import Bus, BusError, ConnectionLost, Entry, Fields, Lease

T = TypeVar("T")
Moment = Literal["before", "after"]


log = structlog.get_logger()


@dataclass
class Fault:
    """One armed fault: which call, when in it, which error, how many times."""

    method: str
    moment: Moment
    error: BusError
    when: Callable[..., bool] | None = None
    times: int | None = 1  # None: every matching call
    hits: int = 0
    fired: trio.Event = field(default_factory=trio.Event)

    @property
    def spent(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def matches(self, method: str, moment: Moment, args: tuple[object, ...]) -> bool:
        if self.spent or method != self.method or moment != self.moment:
            return False
        return self.when is None or self.when(*args)


@dataclass
class Stall:
    """Matching calls wait, before they run, until ``release()``."""

    method: str
    when: Callable[..., bool] | None = None
    times: int | None = 1  # None: every matching call
    moment: Moment = "before"  # "after": the call ran, its reply is held
    hits: int = 0
    reached: trio.Event = field(default_factory=trio.Event)  # a call is waiting
    released: trio.Event = field(default_factory=trio.Event)

    def release(self) -> None:
        """Let the waiting calls (and any later match) go on."""
        self.released.set()

    def matches(self, method: str, moment: Moment, args: tuple[object, ...]) -> bool:
        if moment != self.moment or (self.times is not None and self.hits >= self.times):
            return False
        return method == self.method and (self.when is None or self.when(*args))

    async def hold(self) -> None:
        self.hits += 1
        self.reached.set()
        # A held reply is the caller's already: its cancel waits until then.
        with trio.CancelScope(shield=self.moment == "after"):
            await self.released.wait()


class FaultyBus:
    """A ``Bus`` that forwards to ``inner`` except where a fault is armed."""

    def __init__(self, inner: Bus) -> None:
        self.inner = inner
        self._faults: list[Fault] = []
        self._stalls: list[Stall] = []
        self._completed: dict[str, trio.Event] = {}

    # -- arming --------------------------------------------------------------

    def fail_before(
        self,
        method: str,
        *,
        error: BusError | None = None,
        when: Callable[..., bool] | None = None,
        times: int | None = 1,
    ) -> Fault:
        """Fail matching calls of ``method`` without running them."""
        err = error or ConnectionLost(f"injected: connection lost before {method} was sent")
        return self._arm(Fault(method, "before", err, when, times))

    def fail_after(
        self,
        method: str,
        *,
        error: BusError | None = None,
        when: Callable[..., bool] | None = None,
        times: int | None = 1,
    ) -> Fault:
        """Run matching calls of ``method``, then fail them as if the reply was lost."""
        err = error or ConnectionLost(f"injected: connection lost after {method} ran")
        return self._arm(Fault(method, "after", err, when, times))

    def stall(
        self,
        method: str,
        *,
        when: Callable[..., bool] | None = None,
        times: int | None = 1,
        moment: Moment = "before",
    ) -> Stall:
        """Hold matching calls of ``method`` (or, ``after``, their replies) until released."""
        if not callable(getattr(Bus, method, None)):
            raise ValueError(f"{method!r} is not a Bus method")
        stall = Stall(method, when, times, moment)
        self._stalls.append(stall)
        return stall

    def heal(self) -> None:
        """Disarm every fault and release every stall; calls go through untouched."""
        self._faults.clear()
        for stall in self._stalls:
            stall.release()
        self._stalls.clear()

    def completed(self, method: str) -> trio.Event:
        """An event set when the next call of ``method`` returns normally."""
        event = self._completed.get(method)
        if event is None or event.is_set():
            event = self._completed[method] = trio.Event()
        return event

    def _arm(self, fault: Fault) -> Fault:
        if not callable(getattr(Bus, fault.method, None)):
            raise ValueError(f"{fault.method!r} is not a Bus method")
        self._faults.append(fault)
        return fault

    def _check(self, method: str, moment: Moment, args: tuple[object, ...]) -> None:
        for fault in self._faults:
            if fault.matches(method, moment, args):
                fault.hits += 1
                fault.fired.set()
                log.info("bus_fault_injected", method=method, moment=moment)
                # A fresh exception each time: raising one instance twice
                # chains the first traceback into the second.
                raise type(fault.error)(*fault.error.args)

    async def _call(
        self, method: str, run: Callable[..., Awaitable[T]], *args: object, **kwargs: object
    ) -> T:
        seen = (*args, *kwargs.values())
        for stall in self._stalls:
            if stall.matches(method, "before", seen):
                await stall.hold()
        self._check(method, "before", seen)
        result = await run(*args, **kwargs)
        for stall in self._stalls:
            if stall.matches(method, "after", seen):
                await stall.hold()
        self._check(method, "after", seen)
        event = self._completed.get(method)
        if event is not None:
            event.set()
        return result

    # -- the Bus protocol ----------------------------------------------------
    # Keyword arguments are passed on explicitly (defaults included) so that
    # ``when`` always sees every argument in declaration order.

    async def append(self, stream: str, fields: Fields) -> str:
        return await self._call("append", self.inner.append, stream, fields)

    async def append_replicated(self, stream: str, fields: Fields) -> str:
        # Faults for "append" cover it: to a test it is the same write.
        return await self._call("append", self.inner.append_replicated, stream, fields)

    async def append_many(self, items: Sequence[tuple[str, Fields]]) -> list[str]:
        return await self._call("append_many", self.inner.append_many, items)

    async def ensure_group(self, stream: str, group: str, start: str = "0") -> None:
        await self._call("ensure_group", self.inner.ensure_group, stream, group, start)

    async def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        start: str = ">",
        count: int = 100,
        block_ms: int | None = None,
    ) -> list[Entry]:
        return await self._call(
            "read_group",
            self.inner.read_group,
            stream,
            group,
            consumer,
            start=start,
            count=count,
            block_ms=block_ms,
        )

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        return await self._call("ack", self.inner.ack, stream, group, ids)

    async def claim_idle(
        self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100
    ) -> list[Entry]:
        return await self._call(
            "claim_idle",
            self.inner.claim_idle,
            stream,
            group,
            consumer,
            min_idle_ms=min_idle_ms,
            count=count,
        )

    async def touch(self, stream: str, group: str, consumer: str, ids: Sequence[str]) -> None:
        await self._call("touch", self.inner.touch, stream, group, consumer, ids)

    async def pending_count(self, stream: str, group: str) -> int:
        return await self._call("pending_count", self.inner.pending_count, stream, group)

    async def group_lag(self, stream: str, group: str) -> int | None:
        return await self._call("group_lag", self.inner.group_lag, stream, group)

    async def read(
        self, stream: str, after: str, *, count: int = 100, block_ms: int | None = None
    ) -> list[Entry]:
        return await self._call(
            "read", self.inner.read, stream, after, count=count, block_ms=block_ms
        )

    async def last_id(self, stream: str) -> str:
        return await self._call("last_id", self.inner.last_id, stream)

    async def range(
        self, stream: str, start: str = "-", end: str = "+", count: int | None = None
    ) -> list[Entry]:
        return await self._call("range", self.inner.range, stream, start, end, count)

    async def get(self, key: str) -> str | None:
        return await self._call("get", self.inner.get, key)

    async def set(
        self, key: str, value: str, *, ttl_ms: int | None = None, nx: bool = False
    ) -> bool:
        return await self._call("set", self.inner.set, key, value, ttl_ms=ttl_ms, nx=nx)

    async def delete(self, key: str) -> None:
        await self._call("delete", self.inner.delete, key)

    async def acquire_lease(self, name: str, owner: str, ttl_ms: int) -> Lease | None:
        return await self._call("acquire_lease", self.inner.acquire_lease, name, owner, ttl_ms)

    async def renew_lease(self, lease: Lease, ttl_ms: int) -> bool:
        return await self._call("renew_lease", self.inner.renew_lease, lease, ttl_ms)

    async def release_lease(self, lease: Lease) -> None:
        await self._call("release_lease", self.inner.release_lease, lease)

    async def set_if_lease(
        self, key: str, value: str, lease: Lease, *, ttl_ms: int | None = None
    ) -> bool:
        return await self._call(
            "set_if_lease", self.inner.set_if_lease, key, value, lease, ttl_ms=ttl_ms
        )

    async def trim(self, stream: str, *, max_len: int) -> int:
        return await self._call("trim", self.inner.trim, stream, max_len=max_len)

    async def expire(self, key: str, ttl_ms: int) -> None:
        await self._call("expire", self.inner.expire, key, ttl_ms)

    async def heartbeat(self, group: str, member: str, ttl_ms: int) -> None:
        await self._call("heartbeat", self.inner.heartbeat, group, member, ttl_ms)

    async def live_members(self, group: str) -> list[str]:
        return await self._call("live_members", self.inner.live_members, group)

    async def leave(self, group: str, member: str) -> None:
        await self._call("leave", self.inner.leave, group, member)

    async def aclose(self) -> None:
        await self.inner.aclose()
