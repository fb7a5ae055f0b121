"""The provider seam: one small interface in front of every LLM.

A provider turns a ``CompletionRequest`` into a ``Completion``: an async
context manager (so the HTTP stream is always closed, even on cancel) whose
``deltas()`` yields the reply text as it is produced; ``stop_reason`` and
``usage`` are filled in once ``deltas()`` is exhausted.

Errors: a provider raises ``ProviderError`` (translated at the boundary from
the SDK's own exceptions) when the model cannot answer; ``retriable`` says
whether trying again later may help (overload, rate limit, network).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from bus.messages import ContentBlock, HistoryMessage
from bus.messages.json import JsonObject


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """What to complete: the conversation so far and the limits.

    ``messages`` are Anthropic Messages API messages in order: ``{"role":
    "user" | "assistant", "content": str | list[block]}`` with ``text``,
    ``tool_use`` and ``tool_result`` blocks. ``model`` empty and
    ``max_tokens`` 0 mean "the provider's default". ``tools`` are tool
    definitions (``{"name", "description", "input_schema"}``) the model may
    call; empty: none.

    ``prefill`` is the start of this very reply that the caller already heard
    (a request resumed by another worker after its first worker died). The
    provider then yields only what comes *after* it, so nothing is said
    twice: by continuing from it where the model can (Claude's prefilled
    assistant turn), else by generating again and skipping that many
    characters (``skip_prefix``).

    ``first_token_deadline_s``: see the field.
    """

    system: str
    messages: Sequence[HistoryMessage]
    model: str = ""
    max_tokens: int = 0
    prefill: str = ""
    tools: list[JsonObject] = field(default_factory=list)
    # What is left of the turn's first-token budget when the request is
    # made (the prompt waited on the bus first); it can only shorten the
    # provider's own deadline. None: the provider's.
    first_token_deadline_s: float | None = None


@dataclass(frozen=True, slots=True)
class ToolUse:
    """A tool the model asked for: ``name`` with ``input``, answered by ``id``."""

    id: str
    name: str
    input: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(slots=True)
class Usage:
    """Tokens billed for one completion (prompt-cache reads and writes apart)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


class ProviderError(Exception):
    """The model could not answer; ``retriable`` when a later try may work."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


class FirstTokenTimeout(ProviderError):
    """No reply text within the turn's first-token deadline (retries included).

    ``attempts`` requests were made; ``last_error`` is the error that kept
    the last of them from answering (None when the deadline cut an attempt
    that was still waiting). Retriable: the next turn may well work.
    """

    def __init__(self, message: str, *, attempts: int, last_error: str | None) -> None:
        super().__init__(message, retriable=True)
        self.attempts = attempts
        self.last_error = last_error


class ProviderRefusal(ProviderError):
    """The model's safety classifiers stopped the reply (``stop_reason: refusal``).

    Raised once the stream has ended, after any text streamed before the
    refusal (which the caller may have heard). Anthropic says the refused
    exchange must not be sent again, or refusals continue. ``category`` and
    ``explanation`` come from the API's ``stop_details`` when it gave them.
    """

    def __init__(self, *, category: str | None, explanation: str | None, said: str) -> None:
        super().__init__(f"refusal ({category or 'uncategorised'})", retriable=False)
        self.category = category
        self.explanation = explanation
        self.said = said


async def skip_prefix(deltas: AsyncIterator[str], prefix: str) -> AsyncIterator[str]:
    """``deltas`` without their first ``len(prefix)`` characters.

    For a reply generated again after a failover: the caller already heard
    ``prefix``. A deterministic provider regenerates exactly it; a sampling
    model may not, and then dropping the same *amount* of text is the best
    cut available without a way to make the model continue.
    """
    remaining = len(prefix)
    async for delta in deltas:
        if remaining >= len(delta):
            remaining -= len(delta)
            continue
        yield delta[remaining:]
        remaining = 0


class Completion(Protocol):
    """One streaming completion in progress."""

    def deltas(self) -> AsyncIterator[str]:
        """The reply text in pieces, in order (spaces kept). Iterate once."""
        ...

    @property
    def stop_reason(self) -> str | None:
        """Why the model stopped (e.g. ``"end_turn"``); None until the end."""
        ...

    @property
    def usage(self) -> Usage:
        """Token usage; complete once ``deltas()`` is exhausted."""
        ...

    @property
    def content(self) -> Sequence[ContentBlock]:
        """Every content block of the round, in order, thinking included.

        Complete once ``deltas()`` is exhausted. A provider without thinking
        may leave it empty; a tool round sends its thinking back unchanged.
        """
        ...

    @property
    def tool_uses(self) -> Sequence[ToolUse]:
        """The tools the model asked for, in order.

        Complete once ``deltas()`` is exhausted; then ``stop_reason`` is
        ``"tool_use"`` when the model waits for their results.
        """
        ...


def message_text(message: HistoryMessage) -> str:
    """The plain text of a history message (its text blocks joined)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(b["text"] for b in content if b["type"] == "text")


class Provider(Protocol):
    """An LLM behind the one interface the LLM actor uses."""

    def complete(self, request: CompletionRequest) -> AbstractAsyncContextManager[Completion]:
        """Start a streaming completion: ``async with provider.complete(r) as c``."""
        ...
