"""Start real ``switchboard`` processes and wait for their readiness events.

Used by the system tests and the benchmarks. A process runs the real CLI
(``python -m switchboard.cli ROLE ...``) with JSON logs on stderr; we read
those lines as they come and wait for an event (``switchboard_ready``) instead
of sleeping. On exit the process gets SIGTERM and must stop on its own (its
exit code is recorded); only if it does not within the grace period is it
killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio


@dataclass
class SwitchboardProcess:
    """A running CLI process and the log events it printed so far."""

    args: Sequence[str]
    process: trio.Process
    events: list[dict[str, Any]] = field(default_factory=list)
    other_lines: list[str] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)
    returncode: int | None = None
    output_done: trio.Event = field(default_factory=trio.Event)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _add(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            self.other_lines.append(line)
            return
        if isinstance(event, dict):
            self.events.append(event)
        else:
            self.other_lines.append(line)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, event: str, **match: Any) -> dict[str, Any]:
        """Wait until the process logs ``event`` (with matching fields); return it."""
        seen = 0
        while True:
            for item in self.events[seen:]:
                if item.get("event") == event and all(item.get(k) == v for k, v in match.items()):
                    return item
            seen = len(self.events)
            if self.process.returncode is not None:
                tail = "\n".join(self.other_lines[-20:])
                raise RuntimeError(
                    f"{' '.join(self.args)} exited ({self.process.returncode}) "
                    f"before logging {event!r}\n{tail}"
                )
            await self._changed.wait()

    @property
    def port(self) -> int:
        """The port a serving process bound, from its ``switchboard_ready`` event."""
        for event in self.events:
            if event.get("event") == "switchboard_ready" and "url" in event:
                return int(str(event["url"]).rsplit(":", 1)[1])
        raise LookupError(f"{' '.join(self.args)} logged no switchboard_ready with a url")

    def held_partitions(self) -> dict[int, int]:
        """Partition -> epoch this (conversation) worker holds, by its log so far."""
        held: dict[int, int] = {}
        for event in self.events:
            name = event.get("event")
            if name == "partition_acquired":
                held[int(event["partition"])] = int(event["epoch"])
            elif name in ("partition_released", "partition_lost"):
                held.pop(int(event["partition"]), None)
        return held

    def kill9(self) -> None:
        """SIGKILL: the way a worker dies in production failures."""
        self.process.send_signal(signal.SIGKILL)


async def first_to_log(
    procs: Sequence[SwitchboardProcess], event: str, **match: Any
) -> SwitchboardProcess:
    """Wait until one of ``procs`` logs ``event`` (with matching fields); return it."""
    winner: list[SwitchboardProcess] = []
    async with trio.open_nursery() as nursery:
        for proc in procs:

            async def watch(proc: SwitchboardProcess = proc) -> None:
                await proc.wait_for(event, **match)
                winner.append(proc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
    return winner[0]


async def _pump(proc: SwitchboardProcess, stream: trio.abc.ReceiveStream) -> None:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                proc._add(line.decode(errors="replace"))
    if buffer.strip():
        proc._add(buffer.decode(errors="replace"))
    # Wake waiters so they notice the exit.
    await proc.process.wait()
    proc._changed.set()
    proc.output_done.set()


# How long a process may take to log its readiness event. A hang guard, not
# a speed check: on a 2-core machine with both cores busy elsewhere, starting
# one Python process with its imports can take tens of seconds.
READY_TIMEOUT_S = 120.0
# Hang guards for tests of several processes, sized the same way: a whole
# test (below pytest's own per-test timeout), and one step that waits for the
# system to react (a takeover, a reconnect, a reply).
HANG_GUARD_S = 480.0
TAKEOVER_GUARD_S = 60.0


@asynccontextmanager
async def open_switchboard(
    *args: str,
    env: Mapping[str, str] | None = None,
    ready_event: str | None = "switchboard_ready",
    grace_seconds: float = 10.0,
) -> AsyncIterator[SwitchboardProcess]:
    """Run ``switchboard ARGS`` until the block exits; wait for ``ready_event`` first."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("SWITCHBOARD_LOG_FORMAT", "json")
    full_env["PYTHONUNBUFFERED"] = "1"
    argv = [sys.executable, "-m", "switchboard.cli", *args]
    async with trio.open_nursery() as nursery:
        process = await trio.lowlevel.open_process(
            argv,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        proc = SwitchboardProcess(args=list(args), process=process)
        assert process.stderr is not None
        nursery.start_soon(_pump, proc, process.stderr)
        try:
            if ready_event is not None:
                with trio.fail_after(READY_TIMEOUT_S):
                    await proc.wait_for(ready_event)
            yield proc
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                    with trio.move_on_after(grace_seconds):
                        await process.wait()
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
                proc.returncode = process.returncode
                with trio.move_on_after(2):
                    await proc.output_done.wait()
            nursery.cancel_scope.cancel()
