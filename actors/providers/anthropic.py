"""Claude through the official SDK's streaming Messages API.

``AsyncAnthropic`` runs on ``httpx2``/``httpcore2``, whose network backend
detects Trio (via sniffio) and uses Trio sockets, so the SDK needs no special
transport here; ``tests/actors/test_anthropic_provider.py`` proves it against a
local fake of the API. Credentials and the endpoint come from the SDK's own
handling of ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``; this module never
reads the environment itself.

Message shaping is ``claude_messages``; SDK errors become ``ProviderError``
at this boundary, by the policy in ``claude_errors``.

Resuming a reply (``CompletionRequest.prefill``, after a failover): the text
the caller already heard goes in as a final ``assistant`` message, which
Claude continues ("prefill"); the API returns only the continuation. The API
rejects a prefill that ends in whitespace, so trailing whitespace is cut off
and the continuation's leading whitespace dropped once (the caller heard the
space already). Claude 4.6 and later models reject prefill altogether (400
"does not support assistant message prefill"), as does extended thinking;
for those (by model name, or on that 400) the reply is generated again from
the original history and the first ``len(prefill)`` characters are skipped.
Thinking models refuse prefill too, so with thinking on the same applies.

A voice budget (``first_token_deadline_s``, set by the composition root):
the SDK's own retries are off (``max_retries=0``: it honours ``retry-after``
with no ceiling, and a 429 with ``retry-after: 3`` meant seconds of dead
air). Instead one completion gets that long, from its first ``deltas()``
step, for its first text delta, retries included: a retriable error (429,
5xx, 529, ``overloaded_error`` in the stream, a dropped connection) before
any text is tried again after the server's ``retry-after`` (or 0.25 s
doubling), the wait capped by what is left of the deadline; an attempt
still waiting for its first text at the deadline is abandoned. With
``fallback_model`` set, a 429, 529 or overload switches to that model at
once for the rest of the budget. Out of time: ``FirstTokenTimeout``. A 429
marked ``enforced_spend_limit_reached`` (the monthly spend cap) is not
retried. Once text has streamed nothing is retried (the caller heard it).

Thinking (``thinking``: ``"off"``, ``"adaptive"`` or ``"budget:N"``;
``effort``: ``output_config.effort``): sent on every request when set;
``None`` leaves the model's default. Thinking arrives as ``thinking`` and
``redacted_thinking`` blocks, never as text, so it is never spoken. Every
content block of a round is kept, in order, in ``content``: a tool round
must send the assistant message back exactly, thinking blocks and their
signatures included, or the API answers 400.

Refusal: a stream that ends with ``stop_reason: "refusal"`` raises
``ProviderRefusal`` (category and explanation from ``stop_details``) once
it is over; the text streamed before it has already been yielded.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anthropic
import structlog
import trio

from actors.providers.base import (
    Completion,
    CompletionRequest,
    FirstTokenTimeout,
    ProviderRefusal,
    ToolUse,
    Usage,
    skip_prefix,
)
from actors.providers.claude_cache import cached_messages, cached_system, cached_tools
from actors.providers.claude_errors import (
    SPEND_LIMIT_CODE,
    prefill_refused,
    retry_after_s,
    translate_error,
    wants_fallback,
)
from actors.providers.claude_messages import (
    FIRST_USER_NOTE,
    block_dict,
    delimit_caller,
    shape_messages,
    shape_system,
    supports_prefill,
)
from actors.providers.options import EFFORTS, Thinking, parse_effort, parse_thinking
from bus.messages import ContentBlock
from bus.messages.json import JsonObject

__all__ = [
    "EFFORTS",
    "FIRST_USER_NOTE",
    "SPEND_LIMIT_CODE",
    "AnthropicProvider",
    "Thinking",
    "delimit_caller",
    "parse_effort",
    "parse_thinking",
    "retry_after_s",
    "shape_messages",
    "shape_system",
    "supports_prefill",
    "translate_error",
    "wants_fallback",
]

log = structlog.get_logger()


# Per attempt, for the HTTP exchange (the first-token deadline is what
# bounds a voice turn; this only stops a stalled stream mid-reply).
DEFAULT_TIMEOUT_S = 30.0
_CLOSE_TIMEOUT_S = 2.0
# How long an idle connection to the API stays in the pool. httpx's default
# is 5 s; a phone call's turns are usually further apart than that, and a
# new connection costs a TCP and a TLS handshake on the caller's wait.
DEFAULT_KEEPALIVE_S = 300.0
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


class _AnthropicCompletion:
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


def warm_http_client(keepalive_s: float) -> anthropic.DefaultAsyncHttpxClient:
    """The SDK's own HTTP client, with idle connections kept ``keepalive_s``.

    Same limits as the SDK's default otherwise. The connection to the API
    survives the gaps between a call's turns, so a turn pays no TCP and TLS
    handshake (a server that closes an idle connection first is noticed by
    the pool, which then opens a fresh one).
    """
    limits = anthropic.DEFAULT_CONNECTION_LIMITS
    return anthropic.DefaultAsyncHttpxClient(
        limits=type(limits)(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=keepalive_s,
        )
    )


async def _texts(stream: Any) -> AsyncIterator[str]:
    async for text in stream.text_stream:
        if text:
            yield text


class AnthropicProvider:
    """Streams completions from Claude.

    ``model`` and ``max_tokens`` are the defaults for requests that leave them
    unset. ``client`` lets the composition root (or a test) supply a configured
    ``AsyncAnthropic``; by default one is built with the SDK's retries off
    (this provider retries within ``first_token_deadline_s``; ``None``: no
    retries at all). ``fallback_model`` answers when ``model`` is rate
    limited or overloaded. ``thinking`` (``"off"``, ``"adaptive"``,
    ``"budget:N"``) and ``effort`` (``low`` ... ``max``) go on every request
    when set (module docstring).
    """

    def __init__(
        self,
        model: str,
        max_tokens: int,
        client: anthropic.AsyncAnthropic | None = None,
        *,
        prefill: bool | None = None,
        first_token_deadline_s: float | None = None,
        fallback_model: str | None = None,
        thinking: str | None = None,
        effort: str | None = None,
        prompt_cache: bool = True,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
    ) -> None:
        self.model = model
        self.prompt_cache = prompt_cache
        if not keepalive_s > 0:
            raise ValueError(f"keepalive_s must be > 0, not {keepalive_s}")
        self.keepalive_s = keepalive_s
        self.max_tokens = max_tokens
        self._client = client
        # None: decide per model name (``supports_prefill``).
        self.prefill = prefill
        if first_token_deadline_s is not None and not first_token_deadline_s > 0:
            raise ValueError(f"first_token_deadline_s must be > 0, not {first_token_deadline_s}")
        self.first_token_deadline_s = first_token_deadline_s
        self.fallback_model = fallback_model or None
        self.thinking = parse_thinking(thinking) if thinking is not None else None
        if self.thinking is not None and self.thinking.budget_tokens >= max_tokens > 0:
            raise ValueError(
                f"thinking budget {self.thinking.budget_tokens} must be below "
                f"max_tokens {max_tokens}"
            )
        self.effort = parse_effort(effort) if effort is not None else None

    @property
    def client(self) -> anthropic.AsyncAnthropic:
        # Built on first use, so constructing the provider never touches the
        # network or fails for a missing key before a call needs it.
        if self._client is None:
            self._client = anthropic.AsyncAnthropic(
                timeout=DEFAULT_TIMEOUT_S,
                max_retries=0,
                http_client=warm_http_client(self.keepalive_s),
            )
        return self._client

    def prefills(self, model: str) -> bool:
        """Whether a resumed reply is continued by prefill on ``model``."""
        if self.thinking is not None and self.thinking.mode != "off":
            return False  # thinking refuses a prefilled assistant turn
        return self.prefill if self.prefill is not None else supports_prefill(model)

    def open_stream(
        self, request: CompletionRequest, model: str, messages: list[JsonObject]
    ) -> Any:
        options: dict[str, Any] = {}
        shaped = shape_system(request.system)
        system: str | list[JsonObject] = shaped
        if self.prompt_cache:
            # The stable prefix marked (claude_cache): system, tools, the
            # history up to the previous turn.
            if request.tools:
                options["tools"] = cached_tools(request.tools, system=shaped)
            system = cached_system(shaped)
            messages = cached_messages(messages)
        elif request.tools:
            options["tools"] = request.tools
        if self.thinking is not None:
            options["thinking"] = self.thinking.param()
        if self.effort is not None:
            options["output_config"] = {"effort": self.effort}
        return self.client.messages.stream(
            model=model,
            max_tokens=request.max_tokens or self.max_tokens,
            system=system,  # type: ignore[arg-type]
            messages=messages,  # type: ignore[arg-type]
            **options,
        )

    @asynccontextmanager
    async def complete(self, request: CompletionRequest) -> AsyncIterator[Completion]:
        """A streaming completion; requests start in ``deltas()``, close on exit.

        With ``request.prefill`` only the continuation is yielded (module
        docstring: by prefill, or by regenerating and skipping).
        """
        completion = _AnthropicCompletion(self, request)
        try:
            yield completion
        finally:
            await completion.aclose()
