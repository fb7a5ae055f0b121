"""The history messages one reply produces, built as it streams.

Assistant text and ``tool_use`` blocks of a round form one assistant message;
the round's tool results form the user message after it. The text blocks
joined in order always equal the reply's ``text`` (what was streamed to the
caller), which is what the conversation truncates by. ``close`` leaves no
``tool_use`` without its ``tool_result`` (Claude rejects orphans).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

from actors.providers.base import ToolUse
from actors.tools import CANCELLED_RESULT, ToolOutcome
from bus.messages import ContentBlock, HistoryMessage, TextBlock, ToolResultBlock, ToolUseBlock

_THINKING = ("thinking", "redacted_thinking")


def _text(text: str) -> TextBlock:
    return {"type": "text", "text": text}


def _with_thinking(
    blocks: Sequence[Mapping[str, Any]], text: str, uses: list[ContentBlock]
) -> list[ContentBlock]:
    """The provider's blocks in their order, its thinking exact, our text and uses.

    The text the caller was sent may differ from the provider's text blocks
    (a space between rounds, a resumed prefix): when it does, it goes in
    one block where the first text block was (after any leading thinking).
    """
    provider_text = "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
    exact = provider_text == text
    out: list[ContentBlock] = []
    placed = False
    pending_uses = list(uses)
    for block in blocks:
        kind = block.get("type")
        if kind in _THINKING:
            out.append(cast(ContentBlock, dict(block)))
        elif kind == "text":
            if exact:
                if block.get("text"):
                    out.append(_text(str(block["text"])))
            elif not placed and text:
                out.append(_text(text))
            placed = True
        elif kind == "tool_use" and pending_uses:
            out.append(pending_uses.pop(0))
    if not placed and text:
        at = next((i for i, b in enumerate(out) if b["type"] not in _THINKING), len(out))
        out.insert(at, _text(text))
    return out + pending_uses


def _cancelled(use_id: str) -> ToolResultBlock:
    return {
        "type": "tool_result",
        "tool_use_id": use_id,
        "content": CANCELLED_RESULT,
        "is_error": True,
    }


class ReplyMessages:
    """The messages of one reply (see the module docstring) and its tool outcomes."""

    def __init__(self, prefix: str = "") -> None:
        self.messages: list[tuple[Literal["user", "assistant"], list[ContentBlock]]] = []
        self._round_text: list[str] = [prefix] if prefix else []
        self._pending: list[ToolUse] = []
        self._results: dict[str, ToolOutcome] = {}
        self.outcomes: list[ToolOutcome] = []

    def history(self) -> list[HistoryMessage]:
        """The messages so far, blocks as lists (what the next round sends)."""
        return [{"role": role, "content": list(blocks)} for role, blocks in self.messages]

    def add_text(self, delta: str) -> None:
        self._round_text.append(delta)

    def end_round(
        self, tool_uses: Sequence[ToolUse], blocks: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        """The round's text and tool uses become one assistant message.

        ``blocks``: the provider's content blocks of the round, in order
        (``Completion.content`` where the provider has it). Thinking and
        redacted-thinking blocks among them are kept unchanged and in place:
        the API rejects a tool round whose assistant message lost them.
        """
        content: list[ContentBlock] = []
        text = "".join(self._round_text)
        uses: list[ContentBlock] = []
        for use in tool_uses:
            block: ToolUseBlock = {
                "type": "tool_use",
                "id": use.id,
                "name": use.name,
                "input": dict(use.input),
            }
            uses.append(block)
        if any(b.get("type") in _THINKING for b in blocks):
            content = _with_thinking(blocks, text, uses)
        else:
            if text:
                content.append(_text(text))
            content.extend(uses)
        if content:
            self.messages.append(("assistant", content))
        self._round_text = []
        self._pending = list(tool_uses)
        self._results = {}

    def add_outcome(self, outcome: ToolOutcome) -> None:
        self._results[outcome.tool_use_id] = outcome
        self.outcomes.append(outcome)

    def end_tools(self, *, cancelled_ids: frozenset[str] = frozenset()) -> None:
        """The user message with a result for every pending tool use.

        A use without an outcome, or listed in ``cancelled_ids`` (its effect
        was dropped), gets the cancelled error result.
        """
        if not self._pending:
            return
        blocks: list[ContentBlock] = []
        for use in self._pending:
            done = self._results.get(use.id)
            if done is None or use.id in cancelled_ids:
                done = ToolOutcome(use.id, use.name, dict(use.input), CANCELLED_RESULT, True)
                self.outcomes = [o for o in self.outcomes if o.tool_use_id != use.id]
                self.outcomes.append(done)
            blocks.append(done.result_block())
        self.messages.append(("user", blocks))
        self._pending = []
        self._results = {}

    def close(self, *, cancelled_ids: frozenset[str] = frozenset()) -> None:
        """Flush text of an unfinished round; close open tool uses (see class doc)."""
        if self._round_text:
            self.end_round(())
        self.end_tools(cancelled_ids=cancelled_ids)
        if not cancelled_ids:
            return
        # Tools that already answered but whose effect was dropped.
        for role, blocks in self.messages:
            if role != "user":
                continue
            for i, block in enumerate(blocks):
                if block["type"] == "tool_result" and block["tool_use_id"] in cancelled_ids:
                    blocks[i] = _cancelled(block["tool_use_id"])
        self.outcomes = [
            ToolOutcome(o.tool_use_id, o.name, o.input, CANCELLED_RESULT, True)
            if o.tool_use_id in cancelled_ids
            else o
            for o in self.outcomes
        ]

    def compact(self) -> list[HistoryMessage]:
        """The messages, a lone text block stored as a plain string (same meaning).

        A reply without tools then reads exactly like the plain assistant
        message histories held before tools existed (replays compare them).
        """
        out: list[HistoryMessage] = []
        for role, blocks in self.messages:
            only = blocks[0] if len(blocks) == 1 else None
            if only is not None and only["type"] == "text":
                out.append({"role": role, "content": only["text"]})
            else:
                out.append({"role": role, "content": list(blocks)})
        return out

    def replace_with_text(self, text: str) -> None:
        """Only ``text`` as the reply (a refusal's fallback line): all else dropped."""
        self.messages = [("assistant", [_text(text)])]
        self._round_text = []
        self._pending = []
        self._results = {}
        self.outcomes = []

    def append_text(self, text: str) -> None:
        """Text said after the reply closed (the apology)."""
        if self.messages and self.messages[-1][0] == "assistant":
            self.messages[-1][1].append(_text(text))
        else:
            self.messages.append(("assistant", [_text(text)]))
