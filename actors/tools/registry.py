"""The enabled tools, and running one tool use at most once across workers.

Side effects run at most once per tool use, across every LLM worker. The
unit is ``ToolContext.idempotency_key`` (``"{call}:{reply_to}:{tool_use_id}"``)
and one bus key, ``tool_result_key``, in the call's partition slot:

1. Claim: ``set(key, {"claimed_by": token}, ttl=timeout_s + CLAIM_MARGIN_S,
   nx=True)``. Exactly one worker wins and runs the tool.
2. Record: the winner overwrites the claim with the result
   (``{"content", "is_error", "deferred"}``, kept ``RESULT_TTL_MS``). A
   winner cancelled mid-run records ``INTERRUPTED_RESULT`` instead (the
   tool may have acted), so nobody runs it again and nobody waits for it.
3. Everyone else (a reclaim racing a slow-but-alive worker, a redelivery
   after a crash) does not run the tool: it finds the result and replays
   it, or finds a claim and waits for the result, polling with backoff
   (``CLAIM_POLL_S`` doubling to ``CLAIM_POLL_CAP_S``; the bus has no way
   to wait on a key, and such races are rare enough that a few GETs cost
   nothing). A claim whose owner died expires after its TTL; the next
   waiter's ``nx`` write then wins and that waiter runs the tool. The
   wait is bounded by twice the claim TTL (one claim seen part-way, one
   taken over by a third worker); past it the outcome is an error.

Replays send the frames a tool asked to send after the speech again
(``end`` twice is harmless: the gateway ends the call once); frames sent
at once (``sendDigits``, ``language``) are never repeated. Each outcome
is the same for every worker: the recorded one.

The guarantee has the limits of any lease: a winner stalled past its
claim's TTL (a tool ignoring its cancel, a process frozen longer than
``CLAIM_MARGIN_S``) may see another worker take over and run the tool a
second time. If the bus fails while claiming, the tool is not run (an error
outcome, so the model can say so); if it fails while recording, the tool
ran and the claim expires, after which a redelivery would run it again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping

import structlog
import trio

from actors.config import LLMConfig
from actors.tools.builtin import builtin_tools
from actors.tools.context import ToolContext, ToolError, ToolOutcome
from actors.tools.discovery import (
    entry_point_tools,
    is_reference,
    load_reference,
)
from actors.tools.tool import DEFAULT_TIMEOUT_S, Tool
from bus.base import Bus, BusError
from bus.keys import Keys, partition_of
from bus.messages.json import JsonObject

log = structlog.get_logger()


# How long a tool's recorded result outlives the call (redelivery window).
RESULT_TTL_MS = 24 * 3600 * 1000
CANCELLED_RESULT = "cancelled: the caller interrupted"
# A claim outlives its tool's timeout by this much: time to record the
# result after the run, plus scheduling and GC pauses.
CLAIM_MARGIN_S = 2.0
# How a worker that lost the claim polls for the winner's result.
CLAIM_POLL_S = 0.01
CLAIM_POLL_CAP_S = 0.25
# What a tool use cancelled while it ran records (replays see it).
INTERRUPTED_RESULT = "interrupted before it finished; it may or may not have taken effect"
# Bounds the shielded write of that record.
RECORD_ON_CANCEL_S = 1.0


def tool_result_key(keys: Keys, call: str, idempotency_key: str) -> str:
    """Where a tool use's result is recorded (in the call's partition slot)."""
    p = partition_of(call, keys.partitions)
    return f"{keys.namespace}:{{p{p}}}:tool:{idempotency_key}"


class ToolRegistry:
    """The tools enabled for the model, and how to run one use of them."""

    def __init__(self, tools: Mapping[str, Tool], enabled: Iterable[str]) -> None:
        enabled = tuple(enabled)
        unknown = [n for n in enabled if n not in tools]
        if unknown:
            raise ValueError(
                f"unknown tool(s) {', '.join(unknown)} (known: {', '.join(sorted(tools))})"
            )
        self.tools = {n: tools[n] for n in enabled}

    def __bool__(self) -> bool:
        return bool(self.tools)

    def definitions(self) -> list[JsonObject]:
        """The ``tools`` parameter for the provider (empty: no tools)."""
        return [t.definition() for t in self.tools.values()]

    async def run(
        self,
        bus: Bus,
        keys: Keys,
        ctx: ToolContext,
        name: str,
        input: JsonObject,
        *,
        ttl_ms: int = RESULT_TTL_MS,
    ) -> ToolOutcome:
        """Run one tool use, at most once per ``ctx.idempotency_key`` (module docstring).

        Returns the recorded outcome when another worker ran (or is running)
        the same tool use. Never raises for a tool's own failure (unknown
        tool, bad input, exception, timeout) or the bus's: the outcome is
        then an error result. Cancellation propagates (the caller closes the
        pair with a cancelled result).
        """
        key = tool_result_key(keys, ctx.call, ctx.idempotency_key)
        found = self.tools.get(name)
        claim_ttl_s = (found.timeout_s if found else DEFAULT_TIMEOUT_S) + CLAIM_MARGIN_S
        try:
            with trio.fail_after(2 * claim_ttl_s):
                recorded, waited = await self._claim(bus, key, name, ctx, claim_ttl_s)
        except trio.TooSlowError:
            log.warning("tool_claim_wait_timed_out", tool=name, tool_use_id=ctx.tool_use_id)
            return ToolOutcome(
                ctx.tool_use_id,
                name,
                input,
                "not run: another worker is still running this tool use",
                True,
            )
        except BusError as exc:
            log.warning("tool_claim_failed", tool=name, error=str(exc))
            return ToolOutcome(
                ctx.tool_use_id, name, input, f"not run: the bus is unavailable ({exc})", True
            )
        if recorded is not None:
            return await self._replay(ctx, name, input, recorded, waited=waited)
        if waited:
            log.info("tool_claim_taken_over", tool=name, tool_use_id=ctx.tool_use_id)
        try:
            outcome = await self._run_once(ctx, name, input)
        except trio.Cancelled:
            # The tool may have acted: record that, so no one runs it again
            # and no one waits out the claim. Shielded and bounded.
            with trio.move_on_after(RECORD_ON_CANCEL_S) as cleanup:
                cleanup.shield = True
                await self._record(bus, key, name, INTERRUPTED_RESULT, True, [], ttl_ms)
            raise
        await self._record(bus, key, name, outcome.content, outcome.is_error, ctx.deferred, ttl_ms)
        return outcome

    @staticmethod
    async def _claim(
        bus: Bus, key: str, name: str, ctx: ToolContext, claim_ttl_s: float
    ) -> tuple[JsonObject | None, bool]:
        """Claim the tool use, or find the outcome another worker recorded.

        Returns that outcome (None: the claim is ours) and whether a live
        claim was waited for. A ``BusError`` propagates; the caller bounds
        the wait.
        """
        claim = json.dumps({"claimed_by": uuid.uuid4().hex})
        poll_s = CLAIM_POLL_S
        waited = False
        while True:
            if await bus.set(key, claim, ttl_ms=round(claim_ttl_s * 1000), nx=True):
                return None, waited
            raw = await bus.get(key)
            record = None if raw is None else json.loads(raw)
            if record is not None and "content" in record:
                return record, waited
            if record is not None:
                if not waited:
                    log.info("tool_claimed_elsewhere", tool=name, tool_use_id=ctx.tool_use_id)
                waited = True
                await trio.sleep(poll_s)
                poll_s = min(poll_s * 2, CLAIM_POLL_CAP_S)
            # No record: the claim expired between SET and GET; claim again.

    async def _replay(
        self,
        ctx: ToolContext,
        name: str,
        input: JsonObject,
        record: JsonObject,
        *,
        waited: bool,
    ) -> ToolOutcome:
        """The recorded outcome; its after-speech frames go out again."""
        deferred = record.get("deferred")
        for frame in deferred if isinstance(deferred, list) else []:
            if isinstance(frame, dict):  # we record only frames; skip anything else
                await ctx.send(frame, after_speech=True)
        log.info("tool_result_replayed", tool=name, tool_use_id=ctx.tool_use_id, waited=waited)
        return ToolOutcome(
            ctx.tool_use_id, name, input, str(record["content"]), bool(record["is_error"])
        )

    @staticmethod
    async def _record(
        bus: Bus,
        key: str,
        name: str,
        content: str,
        is_error: bool,
        deferred: list[JsonObject],
        ttl_ms: int,
    ) -> None:
        """Replace the claim with the outcome (a failed write is logged: see module docstring)."""
        record = {"content": content, "is_error": is_error, "deferred": deferred}
        try:
            await bus.set(key, json.dumps(record), ttl_ms=ttl_ms)
        except BusError as exc:
            log.warning("tool_result_unrecorded", tool=name, error=str(exc))

    async def _run_once(self, ctx: ToolContext, name: str, input: JsonObject) -> ToolOutcome:
        found = self.tools.get(name)
        if found is None:
            return ToolOutcome(ctx.tool_use_id, name, input, f"unknown tool {name!r}", True)
        started = trio.current_time()
        content: str
        is_error = False
        with trio.move_on_after(found.timeout_s) as scope:
            try:
                content = str(await found.run(input, ctx))
            except ToolError as exc:
                content, is_error = str(exc), True
            except Exception as exc:  # trio.Cancelled is a BaseException: never caught
                log.exception("tool_failed", tool=name, tool_use_id=ctx.tool_use_id)
                content, is_error = f"{type(exc).__name__}: {exc}", True
        if scope.cancelled_caught:
            content, is_error = f"timed out after {found.timeout_s:g} s", True
        log.info(
            "tool_called",
            tool=name,
            tool_use_id=ctx.tool_use_id,
            is_error=is_error,
            ms=round((trio.current_time() - started) * 1000, 3),
        )
        return ToolOutcome(ctx.tool_use_id, name, input, content, is_error)


def tool_registry(config: LLMConfig) -> ToolRegistry:
    """The registry for ``config.tools``: built-ins, entry-point tools, and
    ``module:function`` references (each is enabled under its tool's name).

    Entry points are loaded only when some tool is enabled. A user tool may
    not take a built-in's name.
    """
    if not config.tools:
        return ToolRegistry({}, ())
    available = builtin_tools(config.languages)
    builtin = set(available)
    for name, found in entry_point_tools().items():
        if name in builtin:
            raise ValueError(f"user tool {name!r} takes the name of a built-in tool")
        available[name] = found
    enabled: list[str] = []
    for entry in config.tools:
        if not is_reference(entry):
            enabled.append(entry)
            continue
        loaded = load_reference(entry)
        if loaded.name in builtin:
            raise ValueError(f"user tool {entry} takes the name of a built-in tool")
        available[loaded.name] = loaded
        enabled.append(loaded.name)
    return ToolRegistry(available, enabled)
