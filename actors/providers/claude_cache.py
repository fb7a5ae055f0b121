"""Prompt-cache breakpoints: where a request marks its stable prefix.

Claude reads a prompt in the order tools, system, messages, and a
``cache_control: {"type": "ephemeral"}`` marker on a block caches the
prefix up to and including that block (5 minutes, refreshed on each hit).
A later request that starts with the same bytes reads the prefix from the
cache instead of processing it again, which cuts both the cost of those
tokens (0.1x) and the time to first token on a long prompt.

A voice call's prompt grows by one exchange per turn, and everything but
the newest caller words was sent on the turn before. So a request carries
two breakpoints (the API allows at most four):

1. the system prompt (which covers the tools before it): the same for every
   turn of every call of the agent; with no system prompt, the last tool;
2. the last block of the message before the newest ``user`` message, that
   is the history up to the previous turn. The next turn's breakpoint sits
   further on; the API looks back up to 20 blocks from a breakpoint for an
   earlier cached prefix, and a turn adds two or three.

Thinking blocks cannot carry ``cache_control`` themselves, so the marker
goes on the last other block of that message. A prefix shorter than the
model's minimum (1,024 to 4,096 tokens by model) is processed without
caching and without an error, so marking it costs nothing.

Nothing here mutates its inputs: the history is shared with the rest of
the reply (tool rounds, failover).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bus.messages.json import JsonObject, JsonValue

EPHEMERAL: Mapping[str, str] = {"type": "ephemeral"}
MAX_BREAKPOINTS = 4  # per request, by the API
_UNCACHEABLE = ("thinking", "redacted_thinking")


def cached_system(system: str) -> list[JsonObject] | str:
    """The system prompt as one text block marked for caching ('' stays '')."""
    if not system:
        return system
    return [{"type": "text", "text": system, "cache_control": _ephemeral()}]


def cached_tools(tools: Sequence[Mapping[str, JsonValue]], *, system: str) -> list[JsonObject]:
    """``tools``, the last one marked when there is no system prompt to mark."""
    out = [dict(t) for t in tools]
    if out and not system:
        out[-1]["cache_control"] = _ephemeral()
    return out


def cached_messages(messages: Sequence[Mapping[str, JsonValue]]) -> list[JsonObject]:
    """``messages`` with the history up to the previous turn marked.

    The marker goes on the message just before the newest ``user``
    message; with no such message (a first turn with nothing before it) the
    messages come back unmarked.
    """
    out = [dict(m) for m in messages]
    last_user = next((i for i in range(len(out) - 1, -1, -1) if out[i].get("role") == "user"), None)
    if last_user is None or last_user == 0:
        return out
    target = out[last_user - 1]
    content = target.get("content")
    blocks: list[JsonValue]
    if isinstance(content, str):
        if not content:
            return out
        blocks = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        blocks = list(content)
    else:
        return out
    for j in range(len(blocks) - 1, -1, -1):
        block = blocks[j]
        if isinstance(block, dict) and block.get("type") not in _UNCACHEABLE:
            blocks[j] = {**block, "cache_control": _ephemeral()}
            out[last_user - 1] = {**target, "content": blocks}
            break
    return out


def _ephemeral() -> JsonObject:
    return dict(EPHEMERAL)


def count_breakpoints(
    system: object, tools: Sequence[Mapping[str, object]], messages: Sequence[Mapping[str, object]]
) -> int:
    """How many ``cache_control`` markers a request carries (tests, assertions)."""
    n = sum(1 for t in tools if "cache_control" in t)
    if isinstance(system, list):
        n += sum(1 for b in system if isinstance(b, dict) and "cache_control" in b)
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            n += sum(1 for b in content if isinstance(b, dict) and "cache_control" in b)
    return n
