"""The end of a reply: what the producer learned, and the ``llm.result`` made of it.

On a provider error the caller hears a short apology (as the rest of the
reply, ``last=true``) and the result carries the error text. On a refusal
(``ProviderRefusal``) the caller hears the configured fallback line instead,
the result's ``stop_reason`` is ``refusal`` and its ``messages`` hold only
that line: the conversation then drops the refused exchange from history. The result
carries ``messages``: the history messages the reply produced (assistant
text/``tool_use``, user ``tool_result``, ...), every ``tool_use`` followed by
its result, and the text blocks joined equal to ``text``; and a
``tool_calls`` summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.config import DEFAULT_APOLOGY_TEXT
from actors.llm.reply import ReplyMessages
from actors.providers.base import Usage as ProviderUsage
from bus.facts import wall_ms
from bus.messages import LlmResult, Timings, ToolCall, Usage

APOLOGY = DEFAULT_APOLOGY_TEXT


@dataclass(slots=True)
class Outcome:
    """What the producer learned, read by the sender once the stream ended."""

    started: float
    # Text the caller heard from an earlier delivery of this request.
    prefix: str = ""
    first_token_at: float | None = None
    # Wall-clock stamps for the turn's facts (bus.facts: one time base).
    taken_ms: float = field(default_factory=wall_ms)
    first_token_ms: float | None = None
    text: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    usage: ProviderUsage = field(default_factory=ProviderUsage)
    error: str | None = None
    reply: ReplyMessages | None = None
    # Frames tools asked to send once the reply was spoken (``end``), with
    # the tool use that asked for each.
    deferred: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)
    cancelled: str | None = None  # the reason, once cancelled
    cancelled_ms: float | None = None
    refused: bool = False  # the model refused (stop_reason "refusal")
    # When the caller's wait began (wall ms; None: not known): the prompt.
    asked_ms: float | None = None
    # A speculative reply (``llm.request`` ``held``): its tokens are held.
    held: bool = False

    def messages(self) -> ReplyMessages:
        if self.reply is None:
            self.reply = ReplyMessages(self.prefix)
        return self.reply

    def bus_usage(self) -> Usage:
        u = self.usage
        return Usage(
            u.input_tokens,
            u.output_tokens,
            u.cache_read_input_tokens,
            u.cache_creation_input_tokens,
        )


@dataclass(frozen=True, slots=True)
class Ending:
    """A finished reply: the result to write and the text of the closing entry."""

    result: LlmResult
    final: str  # the closing token entry's text (the leftover, and any apology)


def ending(
    outcome: Outcome, reply_to: int, leftover: str, now: float, *, refusal_line: str = ""
) -> Ending:
    """Close the reply's messages and build its result (``now``: the trio clock)."""
    spoken = outcome.prefix + "".join(outcome.text)
    reply = outcome.messages()
    reply.close()
    final = leftover
    if outcome.refused and refusal_line:
        # What streamed before the refusal was heard; the line follows it.
        # Only the line is kept: the refused exchange must not be sent again.
        line = f" {refusal_line}" if spoken else refusal_line
        final += line
        spoken += line
        reply.replace_with_text(refusal_line)
    elif outcome.error is not None:
        # Whatever was already said stays said; the apology completes it.
        apology = f" {APOLOGY}" if spoken else APOLOGY
        final += apology
        spoken += apology
        reply.append_text(apology)
    first_ms = (
        None
        if outcome.first_token_at is None
        else round((outcome.first_token_at - outcome.started) * 1000, 3)
    )
    result = LlmResult(
        text=spoken,
        reply_to=reply_to,
        stop_reason=outcome.stop_reason,
        usage=outcome.bus_usage(),
        timings=Timings(first_ms, round((now - outcome.started) * 1000, 3)),
        error=outcome.error,
        cancelled=outcome.cancelled is not None,
        messages=reply.compact(),
        tool_calls=tuple(
            ToolCall(o.tool_use_id, o.name, o.input, o.content, o.is_error) for o in reply.outcomes
        ),
    )
    return Ending(result, final)
