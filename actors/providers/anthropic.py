"""Claude through the official SDK's streaming Messages API.

``AsyncAnthropic`` runs on ``httpx2``/``httpcore2``, whose network backend
detects Trio (via sniffio) and uses Trio sockets, so the SDK needs no special
transport here; ``tests/actors/test_anthropic_provider.py`` proves it against a
local fake of the API. Credentials and the endpoint come from the SDK's own
handling of ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``; this module never
reads the environment itself.

Message shaping: our history starts with the welcome greeting as an
``assistant`` message. The Messages API documents alternating user/assistant
turns and older revisions required the first message to be ``user``; rather
than depend on which models and gateways accept an assistant-first list, a
history that starts with ``assistant`` gets a short bracketed user note
(``FIRST_USER_NOTE``) in front. Empty messages are dropped (the API rejects
empty text); consecutive same-role messages are left to the API, which
combines them.

SDK errors are translated at this boundary into ``ProviderError`` with
``retriable`` set for overload, rate limits, server errors and network errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import trio

from actors.providers.base import Completion, CompletionRequest, ProviderError, Usage

FIRST_USER_NOTE = "[The call connected.]"

# A voice turn that has not started streaming within this long is better
# answered with an apology than with silence.
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_RETRIES = 2
_CLOSE_TIMEOUT_S = 2.0
_RETRIABLE_KINDS = frozenset({"overloaded_error", "rate_limit_error", "api_error"})


def shape_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The history as the Messages API should see it (see the module docstring)."""
    shaped = [
        {"role": m["role"], "content": m["content"]}
        for m in messages
        if m.get("role") in ("user", "assistant") and m.get("content", "").strip()
    ]
    if not shaped or shaped[0]["role"] != "user":
        shaped.insert(0, {"role": "user", "content": FIRST_USER_NOTE})
    return shaped


def translate_error(exc: anthropic.AnthropicError) -> ProviderError:
    """An SDK exception as a ``ProviderError`` carrying its retry policy."""
    retriable = isinstance(
        exc,
        anthropic.APIConnectionError
        | anthropic.RateLimitError
        | anthropic.InternalServerError,
    )
    if isinstance(exc, anthropic.APIStatusError):
        # An error event inside a 200 stream carries its kind only in the body.
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error")
        kind = error.get("type") if isinstance(error, dict) else None
        retriable = retriable or kind in _RETRIABLE_KINDS
        message = f"anthropic {exc.status_code} {type(exc).__name__}: {exc.message}"
    else:
        message = f"anthropic {type(exc).__name__}: {exc}"
    return ProviderError(message, retriable=retriable)


class _AnthropicCompletion:
    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._stop_reason: str | None = None
        self._usage = Usage()

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    @property
    def usage(self) -> Usage:
        return self._usage

    async def deltas(self) -> AsyncIterator[str]:
        try:
            async for text in self._stream.text_stream:
                if text:
                    yield text
            final = await self._stream.get_final_message()
        except anthropic.AnthropicError as exc:
            raise translate_error(exc) from exc
        self._stop_reason = final.stop_reason
        self._usage = Usage(
            input_tokens=int(final.usage.input_tokens or 0),
            output_tokens=int(final.usage.output_tokens or 0),
        )


class AnthropicProvider:
    """Streams completions from Claude.

    ``model`` and ``max_tokens`` are the defaults for requests that leave them
    unset. ``client`` lets the composition root (or a test) supply a configured
    ``AsyncAnthropic``; by default one is built with a voice-friendly timeout.
    """

    def __init__(
        self,
        model: str,
        max_tokens: int,
        client: anthropic.AsyncAnthropic | None = None,
    ) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self._client = client

    @property
    def client(self) -> anthropic.AsyncAnthropic:
        # Built on first use, so constructing the provider never touches the
        # network or fails for a missing key before a call needs it.
        if self._client is None:
            self._client = anthropic.AsyncAnthropic(
                timeout=DEFAULT_TIMEOUT_S, max_retries=DEFAULT_MAX_RETRIES
            )
        return self._client

    @asynccontextmanager
    async def complete(self, request: CompletionRequest) -> AsyncIterator[Completion]:
        """Open a streaming completion; the HTTP stream closes when the block exits."""
        manager = self.client.messages.stream(
            model=request.model or self.model,
            max_tokens=request.max_tokens or self.max_tokens,
            system=request.system,
            messages=shape_messages(request.messages),  # type: ignore[arg-type]
        )
        try:
            stream = await manager.__aenter__()
        except anthropic.AnthropicError as exc:
            raise translate_error(exc) from exc
        try:
            yield _AnthropicCompletion(stream)
        finally:
            # Shielded and bounded: a cancel must not leave the response
            # half-read in the SDK's connection pool.
            with trio.move_on_after(_CLOSE_TIMEOUT_S, shield=True):
                await manager.__aexit__(None, None, None)
