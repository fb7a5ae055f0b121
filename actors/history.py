"""History messages: cutting a reply down to what was heard, and shaping requests.

History holds Anthropic Messages API messages, ``{"role", "content"}`` with
``content`` a string or a list of blocks (``text``, ``tool_use``,
``tool_result``). Two rules from the API shape everything here:

- a ``tool_use`` block must be answered by the ``tool_result`` in the very next
  (user) message, so a cut never separates a pair: tool blocks are always kept;
- text blocks must not be empty, so a cut removes emptied blocks and a message
  left without content goes too.

``truncate_reply`` maps the heard prefix of a reply's spoken text (``text`` of
``llm.result``, all text streamed to the caller, in order) back onto the text
blocks of its ``messages`` in order. ``request_messages`` turns stored history
into a request: consecutive messages of one role (an unanswered prompt followed
by another, a reply followed by a re-prompt) become one message.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence

from bus.messages import ContentBlock, HistoryMessage, TextBlock

# One history message: an Anthropic Messages API message (bus.messages).
Message = HistoryMessage


def _blocks(content: str | Sequence[ContentBlock] | None) -> list[ContentBlock]:
    if isinstance(content, str):
        return [TextBlock(type="text", text=content)]
    if isinstance(content, list):
        return [copy.copy(b) for b in content]
    return []


def _content(blocks: list[ContentBlock]) -> str | list[ContentBlock]:
    # One plain text block is stored as a string: the compact, equivalent form.
    if len(blocks) == 1:
        only = blocks[0]
        if only["type"] == "text" and set(only) == {"type", "text"}:
            return str(only["text"])
    return blocks


def truncate_reply(messages: Sequence[Message], text: str, heard: str | None) -> list[Message]:
    """``messages`` of one reply cut to the caller's ``heard`` prefix of ``text``.

    ``heard`` None keeps everything (the reply was heard whole). Text blocks
    that start past the cut are removed, the one the cut falls in is shortened
    (``rstrip``-ed); ``tool_use``/``tool_result`` blocks are always kept, so
    pairs stay together; a message left empty is removed. The input is not
    modified. One plain text block comes back as a string.
    """
    limit = sys.maxsize if heard is None else len(heard)
    cursor = 0
    out: list[Message] = []
    for message in messages:
        content = message.get("content")
        kept: list[ContentBlock] = []
        for block in _blocks(content):
            if block["type"] != "text":
                kept.append(copy.deepcopy(block))
                continue
            piece = str(block.get("text", ""))
            # Find the block in the spoken text (rounds may be joined with
            # extra spaces); if it is not there, assume it follows on.
            at = text.find(piece, cursor) if piece else -1
            if at < 0:
                at = cursor
            end = at + len(piece)
            cursor = end
            if end <= limit:
                part = piece
            elif at < limit:
                part = piece[: limit - at].rstrip()
            else:
                part = ""
            if part.strip():
                cut = copy.copy(block)
                cut["text"] = part
                kept.append(cut)
        if kept:
            shortened = copy.copy(message)
            shortened["content"] = _content(kept)
            out.append(shortened)
    return out


def message_text(message: Message) -> str:
    """The text of a message's text blocks, joined."""
    return "".join(
        str(b.get("text", "")) for b in _blocks(message.get("content")) if b["type"] == "text"
    )


def request_messages(history: Sequence[Message]) -> list[Message]:
    """The history as an ``llm.request`` carries it (a copy).

    Consecutive messages of one role are merged (strings joined by a space;
    otherwise the blocks concatenated), and empty messages are dropped, so the
    provider always sees alternating roles.
    """
    out: list[Message] = []
    for message in history:
        role, content = message.get("role"), message.get("content")
        if isinstance(content, str):
            if not content.strip():
                continue
        elif not _blocks(content):
            continue
        if out and out[-1]["role"] == role:
            prev = out[-1]["content"]
            if isinstance(prev, str) and isinstance(content, str):
                out[-1]["content"] = f"{prev} {content}"
            else:
                out[-1]["content"] = _blocks(prev) + _blocks(copy.deepcopy(content))
            continue
        # A string is immutable: only block lists need copying (deepcopy of a
        # str still walks the copy machinery, on every message of every turn).
        out.append(
            {
                "role": role,
                "content": content if isinstance(content, str) else copy.deepcopy(content),
            }
        )
    return out
