"""One Claude completion: its attempts within the first-token deadline, then its stream.

The policy is described in :mod:`actors.providers.anthropic`'s docstring (the
voice budget, prefill and regeneration, refusals); this module carries it
out for one ``CompletionRequest``: ``_start`` opens attempts until the first
text, ``deltas`` streams the rest and reads the final message's blocks,
stop reason and usage.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anthropic
import structlog
import trio

from actors.providers.base import (
    CompletionRequest,
    FirstTokenTimeout,
    ProviderRefusal,
    ToolUse,
    Usage,
    skip_prefix,
)
from actors.providers.claude_errors import (
    prefill_refused,
    retry_after_s,
    translate_error,
    wants_fallback,
)
from actors.providers.claude_messages import (
    block_dict,
    shape_messages,
)
from bus.messages import ContentBlock

if TYPE_CHECKING:
    from actors.providers.anthropic import AnthropicProvider

log = structlog.get_logger()

_CLOSE_TIMEOUT_S = 2.0
# Backoff without a retry-after: 0.25 s, doubling.
_BACKOFF_FIRST_S = 0.25
# Less than this left of the deadline: not worth another request.
_MIN_ATTEMPT_S = 0.05


@dataclass(slots=True)
class _Attempt:
    """One request of a completion: the stream and how to read it."""

    manager: Any
    stream: Any
    skip: str
    lstrip_first: bool


class ClaudeCompletion:
    """One completion: the attempts (within the deadline), then the stream."""

    def __init__(self, provider: AnthropicProvider, request: CompletionRequest) -> None:
        self._provider = provider
        self._request = request
        self._attempt: _Attempt | None = None
        self._stop_reason: str | None = None
        self._usage = Usage()
        self._tool_uses: list[ToolUse] = []
        self._content: list[ContentBlock] = []
        self.model = request.model or provider.model
        self.attempts = 0

    @property
    def tool_uses(self) -> list[ToolUse]:
        return self._tool_uses

    @property
    def content(self) -> list[ContentBlock]:
        """Every content block of this round, in order (thinking included)."""
        return self._content

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    @property
    def usage(self) -> Usage:
        return self._usage

    async def aclose(self) -> None:
        attempt, self._attempt = self._attempt, None
        if attempt is None:
            return
        # Shielded and bounded: a cancel must not leave the response
        # half-read in the SDK's connection pool.
        with trio.move_on_after(_CLOSE_TIMEOUT_S, shield=True):
            await attempt.manager.__aexit__(None, None, None)

    async def _open(self, model: str) -> _Attempt:
        """Start one request; a model that refuses prefill gets the plain history."""
        provider, request = self._provider, self._request
        messages = shape_messages(request.messages)
        prefill = request.prefill
        head = prefill.rstrip()
        use_prefill = bool(head) and provider.prefills(model)
        skip = prefill if prefill and not use_prefill else ""
        # A prefill that ended in whitespace (cut off for the API) or that is
        # only whitespace: the caller heard that space, the model repeats it.
        lstrip_first = bool(prefill) and head != prefill and not skip
        manager = provider.open_stream(
            request,
            model,
            [*messages, {"role": "assistant", "content": head}] if use_prefill else messages,
        )
        try:
            stream = await manager.__aenter__()
        except anthropic.AnthropicError as exc:
            if not (use_prefill and prefill_refused(exc)):
                raise
            # This model cannot continue a prefilled turn: generate again.
            manager = provider.open_stream(request, model, messages)
            stream = await manager.__aenter__()
            skip, lstrip_first = prefill, False
        return _Attempt(manager, stream, skip, lstrip_first)

    async def _first_text(self, attempt: _Attempt) -> tuple[AsyncIterator[str], str | None]:
        """The attempt's text iterator and its first text (None: the stream ended)."""
        texts: AsyncIterator[str] = _texts(attempt.stream)
        if attempt.skip:
            texts = skip_prefix(texts, attempt.skip)
        lstrip = attempt.lstrip_first
        async for text in texts:
            if lstrip:
                text = text.lstrip()
                if not text:
                    continue
            return texts, text
        return texts, None

    async def _start(self) -> tuple[AsyncIterator[str], str | None]:
        """Attempts until the first text (or the stream's end) within the deadline."""
        provider = self._provider
        budget = provider.first_token_deadline_s
        asked = self._request.first_token_deadline_s
        if budget is not None and asked is not None:
            budget = max(min(budget, asked), _MIN_ATTEMPT_S)
        deadline = trio.current_time() + budget if budget is not None else math.inf
        backoff = _BACKOFF_FIRST_S
        last_error: str | None = None
        while True:
            self.attempts += 1
            with trio.move_on_at(deadline):
                try:
                    self._attempt = await self._open(self.model)
                    return await self._first_text(self._attempt)
                except anthropic.AnthropicError as exc:
                    await self.aclose()
                    error = translate_error(exc)
                    if budget is None or not error.retriable:
                        raise error from exc
                    last_error = str(error)
                    if wants_fallback(exc) and provider.fallback_model not in (None, self.model):
                        log.warning(
                            "provider_fallback",
                            model=self.model,
                            fallback_model=provider.fallback_model,
                            error=last_error,
                        )
                        self.model = str(provider.fallback_model)
                        continue
                    hint = retry_after_s(exc)
                    wait = hint if hint is not None else backoff
                    backoff *= 2
                    left = deadline - trio.current_time()
                    log.warning(
                        "provider_retry",
                        model=self.model,
                        error=last_error,
                        retry_after_s=hint,
                        wait_s=round(min(wait, max(left, 0.0)), 3),
                        attempt=self.attempts,
                    )
                    # Capped by what is left: past the deadline the
                    # caller is better served by the apology.
                    await trio.sleep(min(wait, max(left, 0.0)))
                    if deadline - trio.current_time() >= _MIN_ATTEMPT_S:
                        continue
            # The deadline: during an attempt, or no time left for one.
            await self.aclose()
            raise FirstTokenTimeout(
                f"no reply within {budget:g} s ({self.attempts} attempts)"
                + (f"; last error: {last_error}" if last_error else ""),
                attempts=self.attempts,
                last_error=last_error,
            )

    async def deltas(self) -> AsyncIterator[str]:
        try:
            texts, first = await self._start()
            if first is not None:
                yield first
                async for text in texts:
                    yield text
            attempt = self._attempt
            assert attempt is not None
            final = await attempt.stream.get_final_message()
        except anthropic.AnthropicError as exc:
            raise translate_error(exc) from exc
        self._stop_reason = final.stop_reason
        # The SDK's stream accumulated each tool_use's input_json_delta
        # pieces (and each thinking block's deltas and signature) into the
        # blocks of the final message.
        self._content = [b for b in map(block_dict, final.content) if b is not None]
        self._tool_uses = [
            ToolUse(id=b["id"], name=b["name"], input=b["input"])
            for b in self._content
            if b["type"] == "tool_use"
        ]
        usage = final.usage
        self._usage = Usage(
            input_tokens=int(usage.input_tokens or 0),
            output_tokens=int(usage.output_tokens or 0),
            cache_read_input_tokens=int(getattr(usage, "cache_read_input_tokens", 0) or 0),
            cache_creation_input_tokens=int(getattr(usage, "cache_creation_input_tokens", 0) or 0),
        )
        if final.stop_reason == "refusal":
            details = getattr(final, "stop_details", None)
            said = "".join(b["text"] for b in self._content if b["type"] == "text")
            log.warning(
                "provider_refusal",
                model=self.model,
                category=getattr(details, "category", None),
                chars_said=len(said),
            )
            raise ProviderRefusal(
                category=getattr(details, "category", None),
                explanation=getattr(details, "explanation", None),
                said=said,
            )


async def _texts(stream: Any) -> AsyncIterator[str]:
    async for text in stream.text_stream:
        if text:
            yield text
