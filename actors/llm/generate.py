"""Generating one reply: the completion rounds, with tools in between.

The request offers the enabled tools (``actors/tools/``). When the
provider stops with ``tool_use``, the tools run (each with its timeout, at
most once per idempotency key) and the completion continues with their
results, up to ``max_tool_rounds`` rounds; text of every round streams to
the caller. Frames a tool sends (``sendDigits``, ``language``) go to the
gateway in order with the text; ``end`` frames (``after_speech``) go after
the closing token.

A held (speculative) reply runs no tool before it is adopted: at its first
``tool_use`` it waits for ``generation.adopted`` (``control.adopt``), at most
``HELD_TOOL_WAIT_S``; not adopted by then, its tool uses are closed unrun.

A ``control.cancel`` cancels ``generation.scope``: the provider stream and any
running tool stop at once; open tool uses get the result ``"cancelled: the
caller interrupted"`` (``is_error``) and a pending ``end`` is not sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from actors.config import LLMConfig
from actors.llm.cancel import Generation
from actors.llm.result import Outcome
from actors.llm.stream import Frame, Piece, Wake
from actors.providers.base import CompletionRequest, Provider, ProviderRefusal, ToolUse
from actors.tools import ToolContext, ToolRegistry
from bus.base import Bus
from bus.envelope import Envelope
from bus.facts import wall_ms
from bus.messages.json import JsonObject

log = structlog.get_logger()

# Which turn of a call last had the filler line, kept this long.
FILLER_MEMORY_MS = 3600 * 1000
# How long a held reply's tools wait for its adoption: the final prompt
# follows the interim ones within a second or two; a cancel ends it sooner.
HELD_TOOL_WAIT_S = 30.0


@dataclass(frozen=True, slots=True)
class Engine:
    """What every generation of a worker uses: config, provider, tools, bus."""

    config: LLMConfig
    provider: Provider
    tools: ToolRegistry
    bus: Bus


class Producer:
    """Runs the rounds of one reply into ``send`` (deltas and tools' frames)."""

    def __init__(
        self,
        engine: Engine,
        env: Envelope,
        reply_to: int,
        request: CompletionRequest,
        outcome: Outcome,
        generation: Generation,
        wake: Wake,
        send: trio.MemorySendChannel[Piece],
    ) -> None:
        self.engine = engine
        self.env = env
        self.reply_to = reply_to
        self.request = request
        self.outcome = outcome
        self.generation = generation
        self.wake = wake
        self.reply = outcome.messages()
        self._current_use = ""
        self._send = send
        # Cancelled at the first token, or when the reply ends (``filler``).
        self.filler_scope = trio.CancelScope()

    async def run(self) -> None:
        """Generate, then close ``send``; an error becomes ``outcome.error``."""
        async with self._send:
            with self.generation.scope:
                try:
                    await self._rounds()
                except Exception as exc:  # trio.Cancelled is a BaseException: never caught
                    self._failed(exc)
            self._close()
        self.filler_scope.cancel()
        # ``send`` is closed (finished, failed or cancelled): the sender stops
        # its coalescing wait and sends the closing entry now. (Only an outer
        # cancel skips this, and it cancels the sender too.)
        self.wake.event.set()

    async def _rounds(self) -> None:
        for round_no in range(max(1, self.engine.config.max_tool_rounds)):
            uses = await self._stream_round(round_no)
            if not uses:
                return
            if self.outcome.held and not await self._adopted():
                return
            for use in uses:
                await self._run_tool(use)
            self.reply.end_tools()

    async def _stream_round(self, round_no: int) -> list[ToolUse]:
        """One completion; the tool uses it asks to run (none: the reply is done)."""
        request = self.request
        this = CompletionRequest(
            system=request.system,
            messages=[*request.messages, *self.reply.history()],
            model=request.model,
            max_tokens=request.max_tokens,
            prefill=request.prefill if round_no == 0 else "",
            tools=request.tools,
            first_token_deadline_s=request.first_token_deadline_s if round_no == 0 else None,
        )
        # Rounds stream back to back: keep a word break between "...now."
        # and "Done." for the voice.
        spaced = round_no == 0
        async with self.engine.provider.complete(this) as completion:
            async for delta in completion.deltas():
                if delta:
                    self._emit(delta if spaced else self._spaced(delta))
                    spaced = True
            self.outcome.stop_reason = completion.stop_reason
            self.outcome.usage.input_tokens += completion.usage.input_tokens
            self.outcome.usage.output_tokens += completion.usage.output_tokens
            self.outcome.usage.cache_read_input_tokens += completion.usage.cache_read_input_tokens
            self.outcome.usage.cache_creation_input_tokens += (
                completion.usage.cache_creation_input_tokens
            )
            uses = list(completion.tool_uses)
            # Every block of the round, thinking included (providers that
            # have them): the tool round must send them back unchanged.
            blocks = list(completion.content)
        if self.outcome.stop_reason != "tool_use" or not uses:
            self.reply.end_round(())
            return []
        self.reply.end_round(uses, blocks)
        return uses

    async def _adopted(self) -> bool:
        """Wait until this held reply is adopted; False: not in time."""
        with trio.move_on_after(HELD_TOOL_WAIT_S):
            await self.generation.adopted.wait()
            return True
        log.warning("held_reply_not_adopted", reply_to=self.reply_to, waited_s=HELD_TOOL_WAIT_S)
        return False

    async def filler(self) -> None:
        """Say the filler line when the reply's first token is late.

        After ``filler_after_s`` without a token the caller hears
        ``filler_text`` (a ``text`` frame, not part of the reply: never in
        its text or history), unless the call's previous turn had it too
        (the turn that had it is kept in the bus, so any worker knows). A
        resumed reply (the caller already heard its start) gets none.
        """
        config = self.engine.config
        if config.filler_after_s <= 0 or not config.filler_text or self.outcome.prefix:
            return
        if self.outcome.held:
            return  # nobody waits on a speculation: its filler would not be held
        with self.filler_scope:
            # Counted from when the caller finished speaking, as heard.
            asked = self.outcome.asked_ms
            waited = max(0.0, (wall_ms() - asked) / 1000) if asked else 0.0
            await trio.sleep(max(config.filler_after_s - waited, 0.0))
            bus, key, turn = self.engine.bus, config.keys.filler(self.env.call), self.env.turn
            if await bus.get(key) == str(turn - 1):
                log.info("filler_skipped", reason="previous_turn_had_it")
                return
            # The bus reply and the first token can come in one scheduler
            # pass: then this task goes on after ``_emit`` cancelled it
            # (no checkpoint since). Checked and sent with no await between,
            # so the filler is never queued behind a token of the reply.
            if self.outcome.first_token_at is not None:
                log.info("filler_skipped", reason="first_token_came")
                return
            frame = {"type": "text", "token": f"{config.filler_text} ", "last": False}
            try:
                self._send.send_nowait(Frame(frame))
            except trio.ClosedResourceError:
                return  # the reply ended meanwhile
            self.wake.event.set()
            log.info("filler_spoken", after_s=config.filler_after_s)
            await bus.set(key, str(turn), ttl_ms=FILLER_MEMORY_MS)

    def _spaced(self, delta: str) -> str:
        said = "".join(self.outcome.text[-1:])
        if said and not said[-1].isspace() and not delta[0].isspace():
            return " " + delta
        return delta

    def _emit(self, delta: str) -> None:
        outcome = self.outcome
        if outcome.first_token_at is None:
            self.filler_scope.cancel()
            outcome.first_token_at = trio.current_time()
            outcome.first_token_ms = wall_ms()
        outcome.text.append(delta)
        self.reply.add_text(delta)
        self._send.send_nowait(delta)  # unbounded: never blocks

    async def _run_tool(self, use: ToolUse) -> None:
        config = self.engine.config
        self._current_use = use.id
        ctx = ToolContext(
            call=self.env.call,
            session=self.env.session,
            turn=self.env.turn,
            reply_to=self.reply_to,
            tool_use_id=use.id,
            transfer_number=config.transfer_number,
            transfer_queue=config.transfer_queue,
            languages=config.languages,
            _sink=self._sink,
        )
        tools = self.engine.tools
        outcome = await tools.run(self.engine.bus, config.keys, ctx, use.name, dict(use.input))
        self.reply.add_outcome(outcome)

    async def _sink(self, frame: JsonObject, *, after_speech: bool) -> None:
        """Where a tool's frames go: in order with the text, or after the reply."""
        if after_speech:
            self.outcome.deferred.append((self._current_use, frame))
            return
        self._send.send_nowait(Frame(frame))  # unbounded: never blocks
        self.wake.event.set()

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, ProviderRefusal):
            # Not an error of ours: the reply ends with the fallback line.
            self.outcome.refused = True
            self.outcome.stop_reason = "refusal"
            log.warning(
                "reply_refused",
                category=exc.category,
                chars_before_refusal=sum(len(t) for t in self.outcome.text),
            )
            return
        self.outcome.error = f"{type(exc).__name__}: {exc}"
        log.error(
            "provider_failed",
            error=self.outcome.error,
            retriable=bool(getattr(exc, "retriable", False)),
            chars_before_error=sum(len(t) for t in self.outcome.text),
        )

    def _close(self) -> None:
        """Close the reply's messages: every tool use keeps its result.

        Reached on a normal end, an error and a cancel alike (the scope
        absorbs its own cancel). A cancelled reply's ``end`` is not sent (the
        caller is still talking): its tool result says so.
        """
        dropped: frozenset[str] = frozenset()
        if self.generation.reason is not None:
            dropped = frozenset(use_id for use_id, _ in self.outcome.deferred)
            self.outcome.deferred.clear()
        self.reply.close(cancelled_ids=dropped)


def deferred_frames(outcome: Outcome) -> list[Mapping[str, Any]]:
    """The frames to send after the closing token (``end`` and the like)."""
    return [frame for _, frame in outcome.deferred]
