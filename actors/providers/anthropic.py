"""Claude through the official SDK's streaming Messages API.

``AsyncAnthropic`` runs on ``httpx2``/``httpcore2``, whose network backend
detects Trio (via sniffio) and uses Trio sockets, so the SDK needs no special
transport here; ``tests/actors/test_providers.py`` proves it against a
local fake of the API. Credentials and the endpoint come from the SDK's own
handling of ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``; this module never
reads the environment itself.

Message shaping is ``claude_messages``; SDK errors become ``ProviderError``
at this boundary, by the policy in ``claude_errors``; one completion's
attempts and stream are ``claude_stream``.

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

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import structlog

from actors.providers.base import (
    Completion,
    CompletionRequest,
)
from actors.providers.claude_cache import cached_messages, cached_system, cached_tools
from actors.providers.claude_errors import (
    SPEND_LIMIT_CODE,
    retry_after_s,
    translate_error,
    wants_fallback,
)
from actors.providers.claude_messages import (
    FIRST_USER_NOTE,
    delimit_caller,
    shape_messages,
    shape_system,
    supports_prefill,
)
from actors.providers.claude_stream import ClaudeCompletion
from actors.providers.options import EFFORTS, Thinking, parse_effort, parse_thinking
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
# How long an idle connection to the API stays in the pool. httpx's default
# is 5 s; a phone call's turns are usually further apart than that, and a
# new connection costs a TCP and a TLS handshake on the caller's wait.
DEFAULT_KEEPALIVE_S = 300.0


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
        completion = ClaudeCompletion(self, request)
        try:
            yield completion
        finally:
            await completion.aclose()
