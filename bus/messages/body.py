"""Reading a bus body field by field, and the history messages bodies carry.

``Body`` gives typed reads of one body's fields and fails as
``MalformedEntry`` naming the kind and the field. History messages are
Anthropic Messages API messages; the ``TypedDict``\\ s below describe them.
Only their outer shape is checked (a role; content that is a string or a list
of objects with a string ``type``): the API accepts block types this project
does not use, and they pass through.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NotRequired, TypedDict, cast

from bus.base import MalformedEntry
from bus.envelope import Kind


class TextBlock(TypedDict):
    type: Literal["text"]
    text: str


class ToolUseBlock(TypedDict):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(TypedDict):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock]
    is_error: NotRequired[bool]


class ThinkingBlock(TypedDict):
    """Claude's thinking; sent back unchanged (``signature`` included) in a tool loop."""

    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(TypedDict):
    """Thinking the API encrypted; opaque, sent back unchanged like ``thinking``."""

    type: Literal["redacted_thinking"]
    data: str


ContentBlock = TextBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock


class HistoryMessage(TypedDict):
    """One Anthropic Messages API message: ``content`` a string or blocks."""

    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class Body:
    """Typed reads of one body's fields, failing as ``MalformedEntry``."""

    __slots__ = ("body", "kind")

    def __init__(self, kind: Kind, body: Mapping[str, Any]) -> None:
        if not isinstance(body, Mapping):
            raise MalformedEntry(f"{kind}: body is {type(body).__name__}, not an object")
        self.kind = kind
        self.body = body

    def fail(self, key: str, what: str) -> MalformedEntry:
        value = repr(self.body.get(key))[:80]
        return MalformedEntry(f"{self.kind}: {key!r} must be {what}, not {value}")

    def str_(self, key: str, default: str | None = None) -> str:
        value = self.body.get(key)
        if value is None and default is not None:
            return default
        if not isinstance(value, str):
            raise self.fail(key, "a string")
        return value

    def opt_str(self, key: str) -> str | None:
        return None if self.body.get(key) is None else self.str_(key)

    def bool_(self, key: str, default: bool | None = None) -> bool:
        value = self.body.get(key)
        if value is None and default is not None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, "a boolean")
        return value

    def int_(self, key: str, default: int | None = None) -> int:
        value = self.body.get(key)
        if value is None and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, "an integer")
        return value

    def opt_int(self, key: str) -> int | None:
        return None if self.body.get(key) is None else self.int_(key)

    def number(self, key: str, default: float | None = None) -> float:
        """A finite number; a numeric string is accepted (Twilio's older encoding)."""
        value = self.body.get(key)
        if value is None and default is not None:
            return default
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise self.fail(key, "a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, "a number")
        if not math.isfinite(value):
            raise self.fail(key, "finite")
        return float(value)

    def opt_number(self, key: str) -> float | None:
        return None if self.body.get(key) is None else self.number(key)

    def object_(self, key: str, default: Mapping[str, Any] | None = None) -> dict[str, Any]:
        value = self.body.get(key)
        if value is None and default is not None:
            return dict(default)
        if not isinstance(value, dict):
            raise self.fail(key, "an object")
        return value

    def list_(self, key: str, default: Sequence[Any] | None = None) -> list[Any]:
        value = self.body.get(key)
        if value is None and default is not None:
            return list(default)
        if not isinstance(value, list):
            raise self.fail(key, "a list")
        return value

    def str_map(self, key: str) -> dict[str, str]:
        value = self.object_(key, {})
        if not all(isinstance(v, str) for v in value.values()):
            raise self.fail(key, "an object of strings")
        return value

    def messages(self, key: str) -> list[HistoryMessage]:
        raw = self.list_(key)
        for m in raw:
            if not (isinstance(m, dict) and m.get("role") in ("user", "assistant")):
                raise self.fail(key, "a list of messages with a role")
            content = m.get("content")
            if isinstance(content, str):
                continue
            if not isinstance(content, list) or not all(
                isinstance(b, dict) and isinstance(b.get("type"), str) for b in content
            ):
                raise self.fail(key, "a list of messages with string or block content")
        return cast(list[HistoryMessage], raw)


def whole_ms(value: float) -> int | float:
    # Whole milliseconds travel as integers, as Twilio sends them.
    return int(value) if value.is_integer() else value
