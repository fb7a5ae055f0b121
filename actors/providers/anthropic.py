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

Resuming a reply (``CompletionRequest.prefill``, after a failover): the text
the caller already heard goes in as a final ``assistant`` message, which
Claude continues ("prefill"); the API returns only the continuation. The API
rejects a prefill that ends in whitespace, so trailing whitespace is cut off
and the continuation's leading whitespace dropped once (the caller heard the
space already). Claude 4.6 and later models reject prefill altogether (400
"does not support assistant message prefill"), as does extended thinking;
for those (by model name, or on that 400) the reply is generated again from
the original history and the first ``len(prefill)`` characters are skipped.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import trio

from actors.providers.base import (
    Completion,
    CompletionRequest,
    ProviderError,
    Usage,
    skip_prefix,
)

FIRST_USER_NOTE = "[The call connected.]"

# A voice turn that has not started streaming within this long is better
# answered with an apology than with silence.
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_RETRIES = 2
_CLOSE_TIMEOUT_S = 2.0
_RETRIABLE_KINDS = frozenset({"overloaded_error", "rate_limit_error", "api_error"})


def _shape_content(content: Any) -> str | list[dict[str, Any]]:
    """Content without empty text (the API rejects empty text blocks)."""
    if isinstance(content, str):
        return content if content.strip() else ""
    if not isinstance(content, list):
        return ""
    return [
        dict(b)
        for b in content
        if isinstance(b, dict)
        and b.get("type") in ("text", "tool_use", "tool_result")
        and (b.get("type") != "text" or str(b.get("text", "")).strip())
    ]


def shape_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history as the Messages API should see it (see the module docstring).

    Content is a string or a list of ``text``/``tool_use``/``tool_result``
    blocks and is passed on as-is, minus empty text.
    """
    shaped: list[dict[str, Any]] = []
    for m in messages:
        if m.get("role") not in ("user", "assistant"):
            continue
        content = _shape_content(m.get("content", ""))
        if content:
            shaped.append({"role": m["role"], "content": content})
    if not shaped or shaped[0]["role"] != "user":
        shaped.insert(0, {"role": "user", "content": FIRST_USER_NOTE})
    return shaped


# Claude 4.6+ (and every later family) refuse a trailing assistant message.
_VERSIONED_MODEL = re.compile(r"claude-(?:opus|sonnet|haiku)-(\d+)(?:-(\d{1,2}))?(?:\b|-|$)")


def supports_prefill(model: str) -> bool:
    """Whether ``model`` continues a prefilled assistant turn (pre-4.6 models)."""
    match = _VERSIONED_MODEL.search(model)
    if match is None:
        return True  # unknown naming: try, and fall back on the 400
    major = int(match.group(1))
    minor = int(match.group(2)) if match.group(2) else 0
    return (major, minor) < (4, 6)


def _prefill_refused(exc: anthropic.AnthropicError) -> bool:
    return isinstance(exc, anthropic.BadRequestError) and "prefill" in str(exc).lower()


def translate_error(exc: anthropic.AnthropicError) -> ProviderError:
    """An SDK exception as a ``ProviderError`` carrying its retry policy."""
    retriable = isinstance(
        exc,
        anthropic.APIConnectionError | anthropic.RateLimitError | anthropic.InternalServerError,
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
    def __init__(self, stream: Any, *, skip: str = "", lstrip_first: bool = False) -> None:
        self._stream = stream
        self._skip = skip
        self._lstrip_first = lstrip_first
        self._stop_reason: str | None = None
        self._usage = Usage()
        self._tool_uses: list[dict[str, Any]] = []

    @property
    def tool_uses(self) -> list[dict[str, Any]]:
        return self._tool_uses

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    @property
    def usage(self) -> Usage:
        return self._usage

    async def _texts(self) -> AsyncIterator[str]:
        async for text in self._stream.text_stream:
            if text:
                yield text

    async def deltas(self) -> AsyncIterator[str]:
        texts = self._texts()
        if self._skip:
            texts = skip_prefix(texts, self._skip)
        lstrip = self._lstrip_first
        try:
            async for text in texts:
                if lstrip:
                    text = text.lstrip()
                    if not text:
                        continue
                    lstrip = False
                yield text
            final = await self._stream.get_final_message()
        except anthropic.AnthropicError as exc:
            raise translate_error(exc) from exc
        self._stop_reason = final.stop_reason
        # The SDK's stream accumulated each tool_use's input_json_delta
        # pieces into the parsed ``input`` of the final message.
        self._tool_uses = [
            {"id": block.id, "name": block.name, "input": dict(block.input or {})}
            for block in final.content
            if getattr(block, "type", None) == "tool_use"
        ]
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
        *,
        prefill: bool | None = None,
    ) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self._client = client
        # None: decide per model name (``supports_prefill``).
        self.prefill = prefill

    @property
    def client(self) -> anthropic.AsyncAnthropic:
        # Built on first use, so constructing the provider never touches the
        # network or fails for a missing key before a call needs it.
        if self._client is None:
            self._client = anthropic.AsyncAnthropic(
                timeout=DEFAULT_TIMEOUT_S, max_retries=DEFAULT_MAX_RETRIES
            )
        return self._client

    def _open(self, request: CompletionRequest, messages: list[dict[str, Any]]) -> Any:
        options: dict[str, Any] = {}
        if request.tools:
            options["tools"] = request.tools
        return self.client.messages.stream(
            model=request.model or self.model,
            max_tokens=request.max_tokens or self.max_tokens,
            system=request.system,
            messages=messages,  # type: ignore[arg-type]
            **options,
        )

    @asynccontextmanager
    async def complete(self, request: CompletionRequest) -> AsyncIterator[Completion]:
        """Open a streaming completion; the HTTP stream closes when the block exits.

        With ``request.prefill`` only the continuation is yielded (module
        docstring: by prefill, or by regenerating and skipping).
        """
        messages = shape_messages(request.messages)
        model = request.model or self.model
        prefill = request.prefill
        head = prefill.rstrip()
        use_prefill = bool(head) and (
            self.prefill if self.prefill is not None else supports_prefill(model)
        )
        skip = prefill if prefill and not use_prefill else ""
        # A prefill that ended in whitespace (cut off for the API) or that is
        # only whitespace: the caller heard that space, the model repeats it.
        lstrip_first = bool(prefill) and head != prefill and not skip
        manager = self._open(
            request,
            [*messages, {"role": "assistant", "content": head}] if use_prefill else messages,
        )
        try:
            stream = await manager.__aenter__()
        except anthropic.AnthropicError as exc:
            if not (use_prefill and _prefill_refused(exc)):
                raise translate_error(exc) from exc
            # This model cannot continue a prefilled turn: generate again.
            skip, lstrip_first = prefill, False
            manager = self._open(request, messages)
            try:
                stream = await manager.__aenter__()
            except anthropic.AnthropicError as exc2:
                raise translate_error(exc2) from exc2
        try:
            yield _AnthropicCompletion(stream, skip=skip, lstrip_first=lstrip_first)
        finally:
            # Shielded and bounded: a cancel must not leave the response
            # half-read in the SDK's connection pool.
            with trio.move_on_after(_CLOSE_TIMEOUT_S, shield=True):
                await manager.__aexit__(None, None, None)
